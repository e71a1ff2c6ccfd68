// Tasks get a family (search, compute, tool_use, instruction); tasks written before are search tasks.
MATCH (t:Task) WHERE t.family IS NULL SET t.family = 'search';
CREATE INDEX task_family IF NOT EXISTS FOR (n:Task) ON (n.family);

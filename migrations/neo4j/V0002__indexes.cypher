// Lookup indexes for the reads the store serves: entity search, provenance queries, step order.
CREATE INDEX entity_name IF NOT EXISTS FOR (n:Entity) ON (n.name);
CREATE INDEX entity_type IF NOT EXISTS FOR (n:Entity) ON (n.type);
CREATE INDEX entity_domain IF NOT EXISTS FOR (n:Entity) ON (n.domain);
CREATE INDEX task_walk_signature IF NOT EXISTS FOR (n:Task) ON (n.walk_signature);
CREATE INDEX task_domain IF NOT EXISTS FOR (n:Task) ON (n.domain);
CREATE INDEX trajectory_task IF NOT EXISTS FOR (n:Trajectory) ON (n.task_id);
CREATE INDEX trajectory_run IF NOT EXISTS FOR (n:Trajectory) ON (n.run_id);
CREATE INDEX trajectory_verdict IF NOT EXISTS FOR (n:Trajectory) ON (n.verdict);
CREATE INDEX step_trajectory IF NOT EXISTS FOR (n:Step) ON (n.trajectory_id, n.idx);
CREATE INDEX verification_subject IF NOT EXISTS FOR (n:Verification) ON (n.subject_id);

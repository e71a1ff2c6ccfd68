// Knowledge relations get a namespace of their own: every relation's relationship type becomes
// `rel_` + its former token, so that a relation named CONTAINS, HAS_STEP or SOLVES no longer shares
// a type with the lineage edges (MATCH ()-[:CONTAINS]->() then finds datasets' trajectories only).
// Relations are recognised by their ends (Entity -> Entity, which no edge kind joins) and their
// `type` property; they are moved in batches, so a graph of any size migrates in bounded memory,
// and a rerun after an interruption moves only what is left.
MATCH (k:RelationType)
MATCH (a:Entity)-[r:$(k.token)]->(b:Entity) WHERE r.type = k.name
CALL (k, a, r, b) {
  CREATE (a)-[n:$('rel_' + k.token)]->(b)
  SET n = properties(r)
  DELETE r
} IN TRANSACTIONS OF 10000 ROWS;
MATCH (k:RelationType) SET k.token = 'rel_' + k.token;

// Models (checkpoints) join the graph for lineage (DESIGN section 3): unique ids, lookup by weights.
CREATE CONSTRAINT model_id IF NOT EXISTS FOR (n:Model) REQUIRE n.id IS UNIQUE;
CREATE INDEX model_weights_sha256 IF NOT EXISTS FOR (n:Model) ON (n.weights_sha256);

// Uniqueness constraints on every node kind's id, in place before any MERGE (DESIGN section 3).
// Each statement runs on its own; `IF NOT EXISTS` keeps a rerun harmless.
CREATE CONSTRAINT entity_id IF NOT EXISTS FOR (n:Entity) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT tool_id IF NOT EXISTS FOR (n:Tool) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT verifier_id IF NOT EXISTS FOR (n:Verifier) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT task_id IF NOT EXISTS FOR (n:Task) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT trajectory_id IF NOT EXISTS FOR (n:Trajectory) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT step_id IF NOT EXISTS FOR (n:Step) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT verification_id IF NOT EXISTS FOR (n:Verification) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT run_id IF NOT EXISTS FOR (n:Run) REQUIRE n.id IS UNIQUE;
CREATE CONSTRAINT dataset_id IF NOT EXISTS FOR (n:Dataset) REQUIRE n.id IS UNIQUE;
// Relation types: one node per user name, holding its relationship-type token and phrase.
CREATE CONSTRAINT relation_type_token IF NOT EXISTS FOR (n:RelationType) REQUIRE n.token IS UNIQUE;
CREATE CONSTRAINT relation_type_name IF NOT EXISTS FOR (n:RelationType) REQUIRE n.name IS UNIQUE;

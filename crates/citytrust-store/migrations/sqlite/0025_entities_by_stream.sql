-- A stream's entities in id order, a page at a time (issue 26): compaction
-- and periodic notifications walk a stream of 100,000 entities without
-- holding them all. The index on the stream alone is covered by this one.
DROP INDEX ngsi_entities_stream;
CREATE INDEX ngsi_entities_stream ON ngsi_entities (dataset_id, entity_id);

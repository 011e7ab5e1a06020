-- Temporal aggregates in SQL (issue 26): each reading keeps, beside its
-- instance, its value when that is a finite number (`num`) and whether it
-- is a deletion (`deleted`), so counts, sums and extremes per period are
-- computed by the database without decoding an instance. Readings kept
-- before this are filled in from their instances.
ALTER TABLE ngsi_history ADD COLUMN num DOUBLE PRECISION;
ALTER TABLE ngsi_history ADD COLUMN deleted BIGINT NOT NULL DEFAULT 0;
UPDATE ngsi_history SET
    deleted = CASE WHEN jsonb_exists(instance::jsonb, 'deletedAt') THEN 1 ELSE 0 END,
    num = CASE WHEN NOT jsonb_exists(instance::jsonb, 'deletedAt')
                AND jsonb_typeof(instance::jsonb -> 'value') = 'number'
               THEN (instance::jsonb ->> 'value')::double precision END;
-- The entity's readings by attribute and time carry both, so a period's
-- sums are read from the index alone.
DROP INDEX ngsi_history_entity;
CREATE INDEX ngsi_history_entity ON ngsi_history (entity_id, attribute, observed_at) INCLUDE (deleted, num);

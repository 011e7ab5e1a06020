-- A notification pass claims the outbox rows it commits to (issue 26): the
-- claim's token in `lease`, and `next_attempt_at` moved past the time its
-- sending can take. Another pass — on this node or another one over the
-- same database — neither claims a leased row nor a newer row of the same
-- subscription while one is leased, so a notification is sent once and a
-- subscription's are sent in order. A node that stops with rows leased
-- leaves them due again when the lease runs out (at least once).
ALTER TABLE ngsi_notifications ADD COLUMN lease TEXT;
CREATE INDEX ngsi_notifications_leased ON ngsi_notifications (subscription_id) WHERE lease IS NOT NULL;

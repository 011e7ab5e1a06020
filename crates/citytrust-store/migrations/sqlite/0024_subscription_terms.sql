-- A subscription's terms have a revision of their own (issue 26): every
-- change to the row moves `revision` (writers check it), but a delivery
-- that only brings its counters up to date (timesSent, lastNotification,
-- lastSuccess, lastFailure) leaves `terms_revision` as it was, so the
-- matching kept per node (SubscriptionCache) is not rebuilt at every
-- notification.
ALTER TABLE ngsi_subscriptions ADD COLUMN terms_revision BIGINT NOT NULL DEFAULT 0;
UPDATE ngsi_subscriptions SET terms_revision = revision;
-- And the set as a whole: moved by every subscription made, deleted, or
-- with its terms or status changed.
INSERT INTO counters (name, value) VALUES ('subscriptions_revision', 0);

-- Contract, 4/4, one short transaction: the enum column takes the text column's name and
-- indexes, and the trigger goes. The SET NOT NULL needs no scan: the validated CHECK proves it.
ALTER TABLE verification_events ALTER COLUMN status_kind SET NOT NULL;
ALTER TABLE verification_events DROP CONSTRAINT status_kind_not_null;
DROP TRIGGER verification_events_sync_status ON verification_events;
DROP FUNCTION verification_events_sync_status();
ALTER TABLE verification_events DROP COLUMN status;
ALTER TABLE verification_events RENAME COLUMN status_kind TO status;
ALTER INDEX idx_verification_events_status_kind RENAME TO idx_verification_events_status;
ALTER INDEX idx_verification_events_user_server_status_kind RENAME TO idx_verification_events_user_server_status;

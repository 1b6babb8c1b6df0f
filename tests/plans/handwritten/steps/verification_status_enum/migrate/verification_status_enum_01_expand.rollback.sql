DROP TRIGGER verification_events_sync_status ON verification_events;
DROP FUNCTION verification_events_sync_status();
ALTER TABLE verification_events DROP COLUMN status_kind;
DROP TABLE remediation_verification_statuses;
DROP FUNCTION verification_status_of(text);
DROP TYPE verification_status;

ALTER TABLE verification_events DROP CONSTRAINT IF EXISTS status_kind_not_null;

-- Back to the text column with every original value: the enum's label, or the original kept
-- in remediation_verification_statuses. A full-table UPDATE: the emergency path, not the rollout.
ALTER INDEX idx_verification_events_user_server_status RENAME TO idx_verification_events_user_server_status_kind;
ALTER INDEX idx_verification_events_status RENAME TO idx_verification_events_status_kind;
ALTER TABLE verification_events RENAME COLUMN status TO status_kind;
ALTER TABLE verification_events ADD COLUMN status text;
UPDATE verification_events SET status = status_kind::text;
UPDATE verification_events AS t SET status = r.original FROM remediation_verification_statuses AS r WHERE t.id = r.id;
ALTER TABLE verification_events ALTER COLUMN status SET NOT NULL;
CREATE INDEX idx_verification_events_status ON verification_events (status);
CREATE INDEX idx_verification_events_user_server_status ON verification_events (user_id, server_id, status);
CREATE FUNCTION verification_events_sync_status() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.status_kind := verification_status_of(NEW.status);
    IF NEW.status IS DISTINCT FROM NEW.status_kind::text THEN
        INSERT INTO remediation_verification_statuses (id, original) VALUES (NEW.id, NEW.status)
        ON CONFLICT (id) DO UPDATE SET original = EXCLUDED.original;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER verification_events_sync_status
    BEFORE INSERT OR UPDATE OF status ON verification_events
    FOR EACH ROW EXECUTE FUNCTION verification_events_sync_status();
ALTER TABLE verification_events ALTER COLUMN status_kind DROP NOT NULL;
ALTER TABLE verification_events ADD CONSTRAINT status_kind_not_null CHECK (status_kind IS NOT NULL) NOT VALID;

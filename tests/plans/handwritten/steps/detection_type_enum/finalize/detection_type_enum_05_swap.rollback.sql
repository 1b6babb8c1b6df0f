-- Back to the text column with every original value: the enum's label, or the original kept
-- in remediation_detection_types. A full-table UPDATE: the emergency path, not the rollout.
ALTER INDEX idx_detection_events_detection_type RENAME TO idx_detection_events_detection_kind;
ALTER INDEX idx_detection_events_user_server_type RENAME TO idx_detection_events_user_server_kind;
ALTER TABLE detection_events RENAME COLUMN detection_type TO detection_kind;
ALTER TABLE detection_events ADD COLUMN detection_type text;
UPDATE detection_events SET detection_type = detection_kind::text;
UPDATE detection_events AS d SET detection_type = r.original
FROM remediation_detection_types AS r WHERE d.id = r.id;
ALTER TABLE detection_events ALTER COLUMN detection_type SET NOT NULL;
CREATE INDEX idx_detection_events_detection_type ON detection_events (detection_type);
CREATE INDEX idx_detection_events_user_server_type ON detection_events (user_id, server_id, detection_type);
CREATE OR REPLACE FUNCTION get_recent_message_count(p_user_id text, p_server_id text, p_timeframe_seconds integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    message_count integer;
BEGIN
    SELECT count(*) INTO message_count
    FROM detection_events
    WHERE user_id = p_user_id
      AND server_id = p_server_id
      AND detection_type = 'message'
      AND detected_at > now() - make_interval(secs => p_timeframe_seconds);
    RETURN message_count;
END;
$$;
CREATE FUNCTION detection_events_sync_kind() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.detection_kind := detection_type_of(NEW.detection_type);
    IF NEW.detection_type IS DISTINCT FROM NEW.detection_kind::text THEN
        INSERT INTO remediation_detection_types (id, original) VALUES (NEW.id, NEW.detection_type)
        ON CONFLICT (id) DO UPDATE SET original = EXCLUDED.original;
    END IF;
    RETURN NEW;
END $$;
CREATE TRIGGER detection_events_sync_kind
    BEFORE INSERT OR UPDATE OF detection_type ON detection_events
    FOR EACH ROW EXECUTE FUNCTION detection_events_sync_kind();
ALTER TABLE detection_events ALTER COLUMN detection_kind DROP NOT NULL;
ALTER TABLE detection_events ADD CONSTRAINT detection_kind_not_null CHECK (detection_kind IS NOT NULL) NOT VALID;

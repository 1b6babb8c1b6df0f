-- Expand: the enum, the reviewed mapping from what the bot wrote, and a new column kept in
-- step with the text column by a trigger while the old bot still writes text.
CREATE TYPE detection_type AS ENUM (
    'message_frequency', 'suspicious_content', 'gpt_analysis', 'new_account', 'pattern_match'
);

-- The reviewed mapping (see the step's description). Case and surrounding spaces are folded;
-- 'message' (what get_recent_message_count counts) is the frequency detection; '' was written
-- by a bug for analysed messages. Any other value fails the cast: the backfill stops on that
-- row and names it, rather than guessing.
CREATE FUNCTION detection_type_of(value text) RETURNS detection_type
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (CASE lower(btrim(value))
                WHEN 'message' THEN 'message_frequency'
                WHEN '' THEN 'suspicious_content'
                ELSE lower(btrim(value))
            END)::detection_type
$$;

-- Rows whose text is not already a canonical label keep it here, so that the contract's
-- drop of the text column can be rolled back without losing a value.
CREATE TABLE remediation_detection_types (
    id uuid PRIMARY KEY,
    original text NOT NULL
);

ALTER TABLE detection_events ADD COLUMN detection_kind detection_type;

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

-- Expand: the enum, the reviewed mapping, and a new column kept in step with the text column
-- by a trigger while the old bot still writes text.
CREATE TYPE verification_status AS ENUM ('pending', 'verified', 'rejected', 'reopened');

-- The reviewed mapping: case and spaces are folded ('PENDING' is 'pending'); 'approved' was the
-- old name of 'verified'; 'closed' cases were closed by an admin without action, which
-- left the user in: 'verified'. Any other value fails the cast: the backfill stops
-- on that row and names it, rather than guessing.
CREATE FUNCTION verification_status_of(value text) RETURNS verification_status
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (CASE lower(btrim(value))
                WHEN 'approved' THEN 'verified'
                WHEN 'closed' THEN 'verified'
                ELSE lower(btrim(value))
            END)::verification_status
$$;

-- Rows whose text is not already a canonical label keep it here: the contract's drop of the
-- text column can then be rolled back without losing a value.
CREATE TABLE remediation_verification_statuses (
    id uuid PRIMARY KEY,
    original text NOT NULL
);

ALTER TABLE verification_events ADD COLUMN status_kind verification_status;

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

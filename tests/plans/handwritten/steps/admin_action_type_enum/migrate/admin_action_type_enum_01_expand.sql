-- Expand: the enum, the reviewed mapping, and a new column kept in step with the text column
-- by a trigger while the old bot still writes text.
CREATE TYPE admin_action_type AS ENUM ('verify', 'reject', 'ban', 'reopen', 'create_thread');

-- The reviewed mapping: case and spaces are folded ('Ban' is 'ban'); 'kick' is what the old
-- code logged for a rejection, which removes the user from the server: 'reject'. Any other value fails the cast: the backfill stops
-- on that row and names it, rather than guessing.
CREATE FUNCTION admin_action_type_of(value text) RETURNS admin_action_type
LANGUAGE sql IMMUTABLE STRICT AS $$
    SELECT (CASE lower(btrim(value))
                WHEN 'kick' THEN 'reject'
                ELSE lower(btrim(value))
            END)::admin_action_type
$$;

-- Rows whose text is not already a canonical label keep it here: the contract's drop of the
-- text column can then be rolled back without losing a value.
CREATE TABLE remediation_admin_action_types (
    id uuid PRIMARY KEY,
    original text NOT NULL
);

ALTER TABLE admin_actions ADD COLUMN action_kind admin_action_type;

CREATE FUNCTION admin_actions_sync_action() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.action_kind := admin_action_type_of(NEW.action_type);
    IF NEW.action_type IS DISTINCT FROM NEW.action_kind::text THEN
        INSERT INTO remediation_admin_action_types (id, original) VALUES (NEW.id, NEW.action_type)
        ON CONFLICT (id) DO UPDATE SET original = EXCLUDED.original;
    END IF;
    RETURN NEW;
END $$;

CREATE TRIGGER admin_actions_sync_action
    BEFORE INSERT OR UPDATE OF action_type ON admin_actions
    FOR EACH ROW EXECUTE FUNCTION admin_actions_sync_action();

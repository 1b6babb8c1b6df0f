-- Back to the text column with every original value: the enum's label, or the original kept
-- in remediation_admin_action_types. A full-table UPDATE: the emergency path, not the rollout.
ALTER TABLE admin_actions RENAME COLUMN action_type TO action_kind;
ALTER TABLE admin_actions ADD COLUMN action_type text;
UPDATE admin_actions SET action_type = action_kind::text;
UPDATE admin_actions AS t SET action_type = r.original FROM remediation_admin_action_types AS r WHERE t.id = r.id;
ALTER TABLE admin_actions ALTER COLUMN action_type SET NOT NULL;
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
ALTER TABLE admin_actions ALTER COLUMN action_kind DROP NOT NULL;
ALTER TABLE admin_actions ADD CONSTRAINT action_kind_not_null CHECK (action_kind IS NOT NULL) NOT VALID;

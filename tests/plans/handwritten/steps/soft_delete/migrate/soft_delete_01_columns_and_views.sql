-- Soft delete where the seed implies it: deleted_at / deleted_by on the tables admins
-- change (messages has them from its creation). Nullable, no default: no rewrite, a brief
-- lock each. Reads must skip soft-deleted rows: the active_* views do it, and they run with
-- the caller's rights (security_invoker), so row-level security still applies.
ALTER TABLE servers ADD COLUMN deleted_at timestamptz, ADD COLUMN deleted_by text;
ALTER TABLE server_members ADD COLUMN deleted_at timestamptz, ADD COLUMN deleted_by text;
ALTER TABLE verification_events ADD COLUMN deleted_at timestamptz, ADD COLUMN deleted_by text;
ALTER TABLE admin_actions ADD COLUMN deleted_at timestamptz, ADD COLUMN deleted_by text;

CREATE VIEW active_servers WITH (security_invoker = true) AS
    SELECT * FROM servers WHERE deleted_at IS NULL;
CREATE VIEW active_server_members WITH (security_invoker = true) AS
    SELECT * FROM server_members WHERE deleted_at IS NULL;
CREATE VIEW active_verification_events WITH (security_invoker = true) AS
    SELECT * FROM verification_events WHERE deleted_at IS NULL;
CREATE VIEW active_admin_actions WITH (security_invoker = true) AS
    SELECT * FROM admin_actions WHERE deleted_at IS NULL;

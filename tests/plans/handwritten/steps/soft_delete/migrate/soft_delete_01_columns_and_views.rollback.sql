DROP VIEW active_admin_actions;
DROP VIEW active_verification_events;
DROP VIEW active_server_members;
DROP VIEW active_servers;
ALTER TABLE admin_actions DROP COLUMN deleted_by, DROP COLUMN deleted_at;
ALTER TABLE verification_events DROP COLUMN deleted_by, DROP COLUMN deleted_at;
ALTER TABLE server_members DROP COLUMN deleted_by, DROP COLUMN deleted_at;
ALTER TABLE servers DROP COLUMN deleted_by, DROP COLUMN deleted_at;

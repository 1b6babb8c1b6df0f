DROP TRIGGER admin_actions_set_updated_by ON admin_actions;
DROP TRIGGER verification_events_set_updated_by ON verification_events;
DROP TRIGGER server_members_set_updated_by ON server_members;
DROP TRIGGER servers_set_updated_by ON servers;
DROP FUNCTION set_updated_by();
ALTER TABLE admin_actions DROP COLUMN updated_by, DROP COLUMN created_by;
ALTER TABLE verification_events DROP COLUMN updated_by, DROP COLUMN created_by;
ALTER TABLE server_members DROP COLUMN updated_by, DROP COLUMN created_by;
ALTER TABLE servers DROP COLUMN updated_by, DROP COLUMN created_by;

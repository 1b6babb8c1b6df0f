DROP TRIGGER admin_actions_sync_action ON admin_actions;
DROP FUNCTION admin_actions_sync_action();
ALTER TABLE admin_actions DROP COLUMN action_kind;
DROP TABLE remediation_admin_action_types;
DROP FUNCTION admin_action_type_of(text);
DROP TYPE admin_action_type;

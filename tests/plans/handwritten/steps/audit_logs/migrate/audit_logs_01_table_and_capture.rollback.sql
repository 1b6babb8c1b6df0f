DROP TRIGGER admin_actions_audit ON admin_actions;
DROP TRIGGER verification_events_audit ON verification_events;
DROP TRIGGER server_members_audit ON server_members;
DROP TRIGGER servers_audit ON servers;
DROP FUNCTION audit_log_capture();
DROP TABLE audit_logs;

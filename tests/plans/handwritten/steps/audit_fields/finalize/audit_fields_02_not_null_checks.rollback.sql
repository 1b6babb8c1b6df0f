ALTER TABLE admin_actions DROP CONSTRAINT IF EXISTS admin_actions_created_by_not_null;
ALTER TABLE verification_events DROP CONSTRAINT IF EXISTS verification_events_created_by_not_null;
ALTER TABLE server_members DROP CONSTRAINT IF EXISTS server_members_created_by_not_null;
ALTER TABLE servers DROP CONSTRAINT IF EXISTS servers_created_by_not_null;

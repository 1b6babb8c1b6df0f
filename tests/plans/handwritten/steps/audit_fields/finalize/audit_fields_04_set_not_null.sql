-- Contract, 3/3: SET NOT NULL finds the validated CHECK and skips the scan; the CHECK goes.
ALTER TABLE servers ALTER COLUMN created_by SET NOT NULL;
ALTER TABLE servers DROP CONSTRAINT servers_created_by_not_null;
ALTER TABLE server_members ALTER COLUMN created_by SET NOT NULL;
ALTER TABLE server_members DROP CONSTRAINT server_members_created_by_not_null;
ALTER TABLE verification_events ALTER COLUMN created_by SET NOT NULL;
ALTER TABLE verification_events DROP CONSTRAINT verification_events_created_by_not_null;
ALTER TABLE admin_actions ALTER COLUMN created_by SET NOT NULL;
ALTER TABLE admin_actions DROP CONSTRAINT admin_actions_created_by_not_null;

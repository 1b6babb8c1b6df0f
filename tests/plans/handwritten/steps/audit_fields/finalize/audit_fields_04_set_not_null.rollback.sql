ALTER TABLE admin_actions ALTER COLUMN created_by DROP NOT NULL;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_created_by_not_null CHECK (created_by IS NOT NULL) NOT VALID;
ALTER TABLE verification_events ALTER COLUMN created_by DROP NOT NULL;
ALTER TABLE verification_events ADD CONSTRAINT verification_events_created_by_not_null CHECK (created_by IS NOT NULL) NOT VALID;
ALTER TABLE server_members ALTER COLUMN created_by DROP NOT NULL;
ALTER TABLE server_members ADD CONSTRAINT server_members_created_by_not_null CHECK (created_by IS NOT NULL) NOT VALID;
ALTER TABLE servers ALTER COLUMN created_by DROP NOT NULL;
ALTER TABLE servers ADD CONSTRAINT servers_created_by_not_null CHECK (created_by IS NOT NULL) NOT VALID;

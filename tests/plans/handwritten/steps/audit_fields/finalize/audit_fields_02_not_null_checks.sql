-- Contract, 1/3: created_by NOT NULL without a scan under ACCESS EXCLUSIVE: CHECKs added NOT VALID...
ALTER TABLE servers ADD CONSTRAINT servers_created_by_not_null CHECK (created_by IS NOT NULL) NOT VALID;
ALTER TABLE server_members ADD CONSTRAINT server_members_created_by_not_null CHECK (created_by IS NOT NULL) NOT VALID;
ALTER TABLE verification_events ADD CONSTRAINT verification_events_created_by_not_null CHECK (created_by IS NOT NULL) NOT VALID;
ALTER TABLE admin_actions ADD CONSTRAINT admin_actions_created_by_not_null CHECK (created_by IS NOT NULL) NOT VALID;

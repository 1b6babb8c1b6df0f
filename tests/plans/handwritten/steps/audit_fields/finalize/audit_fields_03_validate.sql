-- Contract, 2/3: ...validated while reads and writes go on (SHARE UPDATE EXCLUSIVE)...
ALTER TABLE servers VALIDATE CONSTRAINT servers_created_by_not_null;
ALTER TABLE server_members VALIDATE CONSTRAINT server_members_created_by_not_null;
ALTER TABLE verification_events VALIDATE CONSTRAINT verification_events_created_by_not_null;
ALTER TABLE admin_actions VALIDATE CONSTRAINT admin_actions_created_by_not_null;

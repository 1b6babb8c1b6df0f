ALTER TABLE server_members VALIDATE CONSTRAINT chk_reputation_range;

ALTER TABLE users VALIDATE CONSTRAINT chk_global_reputation_range;

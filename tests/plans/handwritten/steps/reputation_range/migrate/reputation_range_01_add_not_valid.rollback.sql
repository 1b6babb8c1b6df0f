ALTER TABLE users DROP CONSTRAINT IF EXISTS chk_global_reputation_range;

ALTER TABLE server_members DROP CONSTRAINT IF EXISTS chk_reputation_range;

-- The seed names server_members and users; users keeps its score in global_reputation_score.
ALTER TABLE server_members
    ADD CONSTRAINT chk_reputation_range CHECK (reputation_score >= -1.0 AND reputation_score <= 1.0) NOT VALID;

ALTER TABLE users
    ADD CONSTRAINT chk_global_reputation_range
    CHECK (global_reputation_score >= -1.0 AND global_reputation_score <= 1.0) NOT VALID;

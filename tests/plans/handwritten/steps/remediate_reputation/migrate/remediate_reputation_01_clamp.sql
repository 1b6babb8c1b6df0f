-- Reviewed remediation for reputation scores, which belong in [-1, 1]. Values outside are
-- kept with their original in remediation_reputation (the rollback restores from it), then
-- clamped into [-1, 1]; NaN becomes 0 (neutral). NULL stays NULL (no score yet).
CREATE TABLE remediation_reputation (
    table_name text NOT NULL,
    key text NOT NULL,
    original real NOT NULL,
    PRIMARY KEY (table_name, key)
);

INSERT INTO remediation_reputation (table_name, key, original)
SELECT 'server_members', server_id || '/' || user_id, reputation_score
FROM server_members
WHERE NOT (reputation_score >= -1 AND reputation_score <= 1);

INSERT INTO remediation_reputation (table_name, key, original)
SELECT 'users', discord_id, global_reputation_score
FROM users
WHERE NOT (global_reputation_score >= -1 AND global_reputation_score <= 1);

UPDATE server_members AS m
SET reputation_score = CASE WHEN r.original = 'NaN' THEN 0 ELSE least(greatest(r.original, -1), 1) END
FROM remediation_reputation AS r
WHERE r.table_name = 'server_members' AND r.key = m.server_id || '/' || m.user_id;

UPDATE users AS u
SET global_reputation_score = CASE WHEN r.original = 'NaN' THEN 0 ELSE least(greatest(r.original, -1), 1) END
FROM remediation_reputation AS r
WHERE r.table_name = 'users' AND r.key = u.discord_id;

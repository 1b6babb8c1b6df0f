UPDATE server_members AS m
SET reputation_score = r.original
FROM remediation_reputation AS r
WHERE r.table_name = 'server_members' AND r.key = m.server_id || '/' || m.user_id;

UPDATE users AS u
SET global_reputation_score = r.original
FROM remediation_reputation AS r
WHERE r.table_name = 'users' AND r.key = u.discord_id;

DROP TABLE remediation_reputation;

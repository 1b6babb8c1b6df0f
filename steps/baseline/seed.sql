-- Realistic sample data for the bot database, run by `rollout db seed --rows N`.
-- N = current_setting('rollout.seed_rows'): the number of detection events. Around them:
-- servers, users, memberships, verification cases and admin actions, shaped as the bot
-- writes them (baseline.md), plus the mess a database without constraints collects:
-- ~1% of rows hold values the planned enums and CHECK constraints reject.
-- Deterministic (setseed) and additive: running it again adds more rows. `rollout db seed`
-- checks foreign keys once the rows are in (orchestrator/bulk_load.py), so a detection names
-- its verification case before the case is written.

SELECT setseed(0.42);

CREATE TEMP TABLE seed_size ON COMMIT DROP AS
SELECT n AS events,
       greatest(3, n / 5000) AS servers,
       greatest(20, n / 25) AS users,
       greatest(1, n / 10) AS cases,
       coalesce((SELECT count(*) FROM servers), 0) AS server_base,
       coalesce((SELECT count(*) FROM users), 0) AS user_base,
       coalesce((SELECT count(*) FROM detection_events), 0) AS event_base
FROM (SELECT current_setting('rollout.seed_rows')::int AS n) AS s;

INSERT INTO servers (guild_id, admin_channel_id, verification_channel_id, settings)
SELECT (900000000000000000 + server_base + g)::text,
       (910000000000000000 + server_base + g)::text,
       (920000000000000000 + server_base + g)::text,
       jsonb_build_object(
           'message_threshold', 5, 'message_timeframe', 10,
           'suspicious_keywords', jsonb_build_array('free nitro', 'airdrop'),
           'message_retention_days', 7, 'detection_retention_days', 30,
           'min_confidence_threshold', 0.7)
FROM seed_size, generate_series(1, servers) AS g
ON CONFLICT DO NOTHING;

INSERT INTO users (discord_id, username, account_created_at, global_reputation_score)
SELECT (100000000000000000 + user_base + g)::text,
       'user_' || (user_base + g),
       now() - make_interval(days => (random() * 2000)::int),
       CASE WHEN random() < 0.01 THEN (ARRAY[-3.5, 1.7, 42])[1 + (random() * 2)::int]
            WHEN random() < 0.3 THEN NULL
            ELSE round((random() * 2 - 1)::numeric, 3)::real END
FROM seed_size, generate_series(1, users) AS g
ON CONFLICT DO NOTHING;

-- Each new user joins one or two of the new servers.
INSERT INTO server_members (server_id, user_id, join_date, reputation_score, message_count)
SELECT (900000000000000000 + server_base + 1 + (u + k * 7) % servers)::text,
       (100000000000000000 + user_base + u)::text,
       now() - make_interval(days => (random() * 400)::int),
       CASE WHEN random() < 0.01 THEN (ARRAY[-2, 1.5, 87])[1 + (random() * 2)::int]
            ELSE round((random() * 2 - 1)::numeric, 3)::real END,
       (random() * 500)::int
FROM seed_size, generate_series(1, users) AS u, generate_series(0, 1) AS k
WHERE k = 0 OR u % 3 = 0
ON CONFLICT DO NOTHING;

-- Each event's user, and a server that user is a member of (its first membership above). Ids
-- come from the event's number (md5 as a uuid), so a case finds its detection, and a detection
-- its case, without a lookup table: the foreign keys are checked once the rows are in.
INSERT INTO detection_events (id, server_id, user_id, detection_type, confidence, detected_at,
                              message_id, channel_id, reasons, metadata, admin_action,
                              latest_verification_event_id)
SELECT md5('detection ' || (event_base + g))::uuid,
       CASE WHEN e.r_null < 0.002 THEN NULL ELSE e.server_id END,
       CASE WHEN e.r_null BETWEEN 0.002 AND 0.004 THEN NULL ELSE e.user_id END,
       CASE WHEN e.r_type < 0.005 THEN 'message'
            WHEN e.r_type < 0.008 THEN 'Suspicious_Content'
            WHEN e.r_type < 0.010 THEN ''
            WHEN e.r_type < 0.72 THEN 'suspicious_content'
            ELSE 'new_account' END,
       CASE WHEN e.r_conf < 0.004 THEN 1.2
            WHEN e.r_conf < 0.006 THEN -0.05
            WHEN e.r_conf < 0.010 THEN round((abs(e.score - 0.5) * 200)::numeric, 1)::real
            ELSE round((abs(e.score - 0.5) * 2)::numeric, 4)::real END,
       now() - make_interval(secs => (random() * 90 * 86400)::int),
       CASE WHEN e.r_type < 0.72 THEN (300000000000000000 + event_base + g)::text END,
       CASE WHEN e.r_type < 0.72 THEN (310000000000000000 + g % 50)::text END,
       ARRAY['score ' || round(e.score::numeric, 2)],
       CASE WHEN e.r_type < 0.72
            THEN jsonb_build_object('content', 'sample message ' || (event_base + g))
            ELSE jsonb_build_object('account_age_days', (e.score * 30)::int) END,
       CASE WHEN g % 40 = 0 THEN (ARRAY['Verified', 'Banned', 'Ignored'])[1 + g % 3] END,
       CASE WHEN g % 10 = 0 THEN md5('case ' || (event_base + g))::uuid END
FROM seed_size, generate_series(1, events) AS g,
     LATERAL (SELECT (100000000000000000 + user_base + u)::text AS user_id,
                     (900000000000000000 + server_base + 1 + u % servers)::text AS server_id,
                     random() AS r_type, random() AS r_conf, random() AS r_null, random() AS score
              FROM (SELECT 1 + (g::bigint * 7919) % users AS u) AS pick) AS e;

-- One verification case for every tenth detection; ~1% with statuses outside the enum.
INSERT INTO verification_events (id, server_id, user_id, detection_event_id, thread_id, message_id,
                                 status, created_at, resolved_at)
SELECT md5('case ' || c.n)::uuid, d.server_id, d.user_id, d.id, (400000000000000000 + c.n)::text,
       (410000000000000000 + c.n)::text, c.status, d.detected_at,
       CASE WHEN c.status IN ('verified', 'rejected') THEN d.detected_at + interval '1 hour' END
FROM (SELECT event_base + g AS n,
             CASE WHEN random() < 0.01 THEN (ARRAY['approved', 'PENDING', 'closed'])[1 + (random() * 2)::int]
                  ELSE (ARRAY['pending', 'verified', 'rejected', 'reopened'])[1 + (random() * 3)::int] END AS status
      FROM seed_size, generate_series(10, events, 10) AS g) AS c
JOIN detection_events AS d ON d.id = md5('detection ' || c.n)::uuid;

-- Zero to two admin actions per case; ~1% with action types outside the enum.
INSERT INTO admin_actions (server_id, user_id, admin_id, verification_event_id, detection_event_id,
                           action_type, action_at, previous_status, new_status)
SELECT v.server_id, v.user_id, (500000000000000000 + (random() * 20)::int)::text, v.id, v.detection_event_id,
       CASE WHEN random() < 0.01 THEN (ARRAY['Ban', 'kick'])[1 + (random())::int]
            ELSE (ARRAY['verify', 'reject', 'ban', 'reopen', 'create_thread'])[1 + (random() * 4)::int] END,
       v.created_at + make_interval(mins => k * 30), 'pending', v.status
FROM seed_size CROSS JOIN generate_series(10, events, 10) AS g
JOIN verification_events AS v ON v.id = md5('case ' || (event_base + g))::uuid
CROSS JOIN generate_series(1, 2) AS k
WHERE k <= (abs(hashtext(v.id::text)) % 3);

ANALYZE servers, users, server_members, detection_events, verification_events, admin_actions;

-- Serves "a user's cases in a server by status" (pending-case lookups).
-- CONCURRENTLY cannot run inside a transaction; IF NOT EXISTS makes a re-run safe, and the
-- runner drops an INVALID leftover of a killed build before retrying.
-- transactional: false
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_verification_events_user_server_status
    ON verification_events (user_id, server_id, status);

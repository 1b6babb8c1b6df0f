-- The bot's pending-case read path, on live rows only: a partial index stays small as rows
-- are soft-deleted, and the planner uses it for queries that say deleted_at IS NULL (the
-- active_verification_events view does).
-- transactional: false
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_verification_events_live_user_server_status
    ON verification_events (user_id, server_id, status) WHERE deleted_at IS NULL;

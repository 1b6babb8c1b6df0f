-- Contract, 3/4: the text column's indexes, built on the enum column without blocking
-- writes; the swap gives them the old names.
-- transactional: false
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_verification_events_status_kind
    ON verification_events (status_kind);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_verification_events_user_server_status_kind
    ON verification_events (user_id, server_id, status_kind);

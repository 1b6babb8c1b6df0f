-- Contract, 3/4: the indexes the text column had, built on the enum column without blocking
-- writes; the swap gives them the old names.
-- transactional: false
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_detection_events_user_server_kind
    ON detection_events (user_id, server_id, detection_kind);
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_detection_events_detection_kind
    ON detection_events (detection_kind);

-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_detection_events_detection_kind;
DROP INDEX CONCURRENTLY IF EXISTS idx_detection_events_user_server_kind;

-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_verification_events_user_server_status_kind;
DROP INDEX CONCURRENTLY IF EXISTS idx_verification_events_status_kind;

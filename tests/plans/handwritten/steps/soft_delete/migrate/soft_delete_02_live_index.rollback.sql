-- transactional: false
DROP INDEX CONCURRENTLY IF EXISTS idx_verification_events_live_user_server_status;

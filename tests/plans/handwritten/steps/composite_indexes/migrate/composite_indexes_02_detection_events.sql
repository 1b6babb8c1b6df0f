-- Serves "a user's detections in a server by type" (the bot's recent-activity reads).
-- transactional: false
CREATE INDEX CONCURRENTLY IF NOT EXISTS idx_detection_events_user_server_type
    ON detection_events (user_id, server_id, detection_type);

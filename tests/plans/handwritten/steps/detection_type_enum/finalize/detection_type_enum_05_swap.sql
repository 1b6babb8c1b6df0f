-- Contract, 4/4, one short transaction: the enum column takes the text column's name and
-- indexes, the trigger goes, and get_recent_message_count counts the canonical label. The
-- SET NOT NULL needs no scan: the validated CHECK proves it.
ALTER TABLE detection_events ALTER COLUMN detection_kind SET NOT NULL;
ALTER TABLE detection_events DROP CONSTRAINT detection_kind_not_null;
DROP TRIGGER detection_events_sync_kind ON detection_events;
DROP FUNCTION detection_events_sync_kind();
CREATE OR REPLACE FUNCTION get_recent_message_count(p_user_id text, p_server_id text, p_timeframe_seconds integer)
RETURNS integer
LANGUAGE plpgsql
AS $$
DECLARE
    message_count integer;
BEGIN
    SELECT count(*) INTO message_count
    FROM detection_events
    WHERE user_id = p_user_id
      AND server_id = p_server_id
      AND detection_type = 'message_frequency'
      AND detected_at > now() - make_interval(secs => p_timeframe_seconds);
    RETURN message_count;
END;
$$;
ALTER TABLE detection_events DROP COLUMN detection_type;
ALTER TABLE detection_events RENAME COLUMN detection_kind TO detection_type;
ALTER INDEX idx_detection_events_user_server_kind RENAME TO idx_detection_events_user_server_type;
ALTER INDEX idx_detection_events_detection_kind RENAME TO idx_detection_events_detection_type;

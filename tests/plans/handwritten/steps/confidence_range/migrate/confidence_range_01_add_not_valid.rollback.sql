ALTER TABLE detection_events DROP CONSTRAINT IF EXISTS chk_confidence_range;

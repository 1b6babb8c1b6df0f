ALTER TABLE detection_events DROP CONSTRAINT IF EXISTS detection_kind_not_null;

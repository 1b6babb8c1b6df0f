-- VALIDATE scans existing rows under SHARE UPDATE EXCLUSIVE: reads and writes go on.
ALTER TABLE detection_events VALIDATE CONSTRAINT chk_confidence_range;

-- Contract, 2/4: ...validated while reads and writes go on (SHARE UPDATE EXCLUSIVE).
ALTER TABLE detection_events VALIDATE CONSTRAINT detection_kind_not_null;

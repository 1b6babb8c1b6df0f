-- Contract, 2/4: ...validated while reads and writes go on (SHARE UPDATE EXCLUSIVE).
ALTER TABLE verification_events VALIDATE CONSTRAINT status_kind_not_null;

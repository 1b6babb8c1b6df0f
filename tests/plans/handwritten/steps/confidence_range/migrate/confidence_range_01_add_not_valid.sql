-- NOT VALID: a brief ACCESS EXCLUSIVE lock, no scan; new and updated rows are checked at once.
ALTER TABLE detection_events
    ADD CONSTRAINT chk_confidence_range CHECK (confidence >= 0.0 AND confidence <= 1.0) NOT VALID;

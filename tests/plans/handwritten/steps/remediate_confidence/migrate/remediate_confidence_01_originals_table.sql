-- Where the backfill keeps each original value before it changes it: the rollback restores
-- them from here exactly.
CREATE TABLE remediation_detection_events_confidence (
    id uuid PRIMARY KEY,
    original real NOT NULL
);

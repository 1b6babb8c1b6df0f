DROP TRIGGER detection_events_sync_kind ON detection_events;
DROP FUNCTION detection_events_sync_kind();
ALTER TABLE detection_events DROP COLUMN detection_kind;
DROP TABLE remediation_detection_types;
DROP FUNCTION detection_type_of(text);
DROP TYPE detection_type;

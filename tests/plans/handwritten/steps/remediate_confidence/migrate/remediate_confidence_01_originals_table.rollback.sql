UPDATE detection_events AS d
SET confidence = r.original
FROM remediation_detection_events_confidence AS r
WHERE d.id = r.id;

DROP TABLE remediation_detection_events_confidence;

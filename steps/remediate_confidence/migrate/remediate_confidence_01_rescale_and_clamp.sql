-- Reviewed remediation for detection_events.confidence, which the bot computes as
-- |score - 0.5| * 2 and so belongs in [0, 1]. Rows outside it are kept, with their original
-- value, in remediation_detection_events_confidence (the rollback restores from it), then:
--   NaN                     -> 0     (no confidence at all)
--   greater than 2, to 100  -> / 100 (stored as a percentage by an old code path)
--   anything else outside   -> clamped into [0, 1] (rounding overflow such as 1.2 or -0.05)
CREATE TABLE remediation_detection_events_confidence AS
SELECT id, confidence AS original
FROM detection_events
WHERE NOT (confidence >= 0 AND confidence <= 1);

ALTER TABLE remediation_detection_events_confidence ADD PRIMARY KEY (id);

UPDATE detection_events AS d
SET confidence = CASE
        WHEN r.original = 'NaN' THEN 0
        WHEN r.original > 2 AND r.original <= 100 THEN r.original / 100
        ELSE least(greatest(r.original, 0), 1)
    END
FROM remediation_detection_events_confidence AS r
WHERE d.id = r.id;

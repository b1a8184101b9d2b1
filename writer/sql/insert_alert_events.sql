-- Lines $2 of alerts' timelines: one per alert in $1, with its detail $3 and its
-- locations $4 (JSON arrays).
INSERT INTO alert_events (alert_id, event, detail, locations)
SELECT k.alert_id, $2, k.detail, ARRAY(SELECT jsonb_array_elements_text(k.locations))
FROM unnest($1::int8[], $3::text[], $4::jsonb[]) AS k(alert_id, detail, locations)

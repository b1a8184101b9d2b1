-- Maintenance windows of whole published checks ($1): one-off ones not yet over and
-- weekly ones, with whether each is active now.
SELECT w.window_id,
       w.check_id,
       w.reason,
       w.starts_at,
       w.ends_at,
       w.weekdays,
       to_char(w.start_time, 'HH24:MI') AS start_hhmm,
       (extract(epoch FROM w.duration) / 60)::bigint AS duration_minutes,
       w.time_zone,
       maintenance_active(w, now()) AS active
FROM maintenance_windows w
WHERE w.removed_at IS NULL AND w.agent_id = '' AND w.labels = '{}'::jsonb
  AND w.check_id = ANY ($1::text[])
  AND (w.weekdays IS NOT NULL OR w.ends_at > now())
ORDER BY w.starts_at NULLS FIRST, w.window_id

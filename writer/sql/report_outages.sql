-- The check_down outages of the checks $3 overlapping [$1, $2), per check earliest
-- first: their sample times, what of each counts as down in the period (with data,
-- outside maintenance: check_spans), every location that called the check DOWN during
-- it (the alert's and its timeline's), and when the writer decided them.
SELECT a.subject AS check_id, a.alert_id, a.began_at, a.ended_at, a.opened_at, a.resolved_at,
       extract(epoch FROM coalesce(a.ended_at, greatest(clock_timestamp(), a.began_at)) - a.began_at)::double precision
           AS duration_seconds,
       multirange_seconds(tstzmultirange(tstzrange(a.began_at, coalesce(a.ended_at, 'infinity')))
                          * s.covered - s.maintenance) AS counted_seconds,
       ARRAY(SELECT DISTINCT l
             FROM (SELECT unnest(a.locations)
                   UNION SELECT unnest(e.locations) FROM alert_events e WHERE e.alert_id = a.alert_id) x(l)
             ORDER BY l) AS locations
FROM alerts a
CROSS JOIN LATERAL check_spans(a.subject, $1, $2) s
WHERE a.kind = 'check_down'
  AND a.subject = ANY($3)
  AND a.began_at < $2
  AND coalesce(a.ended_at, 'infinity') > $1
ORDER BY a.subject, a.began_at, a.alert_id

-- Per agent of $1: the central checks it reports recently (newest run within three
-- intervals, at least 10 s), the DOWN ones, how many of those another location
-- recently sees UP, and their ids. An agent's own sites (keys with a space,
-- fleetmon::samples::local_site_of) are its alone: they say nothing of its reach.
SELECT s.agent_id,
       count(*) AS checks,
       count(*) FILTER (WHERE s.down) AS down,
       count(*) FILTER (WHERE s.down AND EXISTS (
           SELECT 1 FROM check_state o
           WHERE o.check_id = s.check_id AND o.agent_id <> s.agent_id AND NOT o.down
             AND o.last_ts > now() - make_interval(secs => greatest(3 * coalesce(c.interval_seconds, nullif(o.interval_seconds, 0), 60)::bigint, 10))
       )) AS down_but_up_elsewhere,
       coalesce(array_agg(s.check_id ORDER BY s.check_id) FILTER (WHERE s.down), '{}') AS down_checks
FROM check_state s
LEFT JOIN checks c USING (check_id)
WHERE s.agent_id = ANY($1)
  AND strpos(s.check_id, ' ') = 0
  AND s.last_ts > now() - make_interval(secs => greatest(3 * coalesce(c.interval_seconds, nullif(s.interval_seconds, 0), 60)::bigint, 10))
GROUP BY s.agent_id

-- An availability report's figures per check of $3 (every central check not deleted
-- before the period when null) over [$1, $2): the period split into maintenance, no
-- data, down and up (check_spans; each second counted once, in that order), the first
-- 200 spans of maintenance and of no data, and the results of the UTC days the period
-- touches with their response-time buckets.
SELECT c.check_id, c.target,
       c.deleted_at IS NOT NULL AND c.deleted_at <= $2 AS deleted,
       multirange_seconds(s.maintenance) AS maintenance_seconds,
       multirange_seconds(parts.no_data) AS no_data_seconds,
       multirange_seconds(parts.down) AS down_seconds,
       multirange_seconds(parts.up) AS up_seconds,
       ARRAY(SELECT lower(r) FROM unnest(s.maintenance) r LIMIT 200) AS maintenance_starts,
       ARRAY(SELECT upper(r) FROM unnest(s.maintenance) r LIMIT 200) AS maintenance_ends,
       ARRAY(SELECT lower(r) FROM unnest(parts.no_data) r LIMIT 200) AS no_data_starts,
       ARRAY(SELECT upper(r) FROM unnest(parts.no_data) r LIMIT 200) AS no_data_ends,
       coalesce(days.results, 0) AS results,
       coalesce(days.ok_results, 0) AS ok_results,
       days.buckets
FROM checks c
CROSS JOIN LATERAL check_spans(c.check_id, $1, $2) s
CROSS JOIN LATERAL (
    SELECT tstzmultirange(tstzrange($1, $2)) - s.maintenance - s.covered AS no_data,
           s.down * s.covered - s.maintenance AS down,
           s.covered - s.maintenance - s.down AS up
) parts
LEFT JOIN LATERAL (
    SELECT sum(d.results)::bigint AS results, sum(d.ok_results)::bigint AS ok_results,
           (SELECT jsonb_object_agg(key, total)
            FROM (SELECT kv.key, sum(kv.value::bigint) AS total
                  FROM check_days d2, jsonb_each_text(d2.response_time_buckets) kv
                  WHERE d2.check_id = c.check_id
                    AND d2.day BETWEEN ($1 AT TIME ZONE 'UTC')::date
                                   AND (($2 - interval '1 microsecond') AT TIME ZONE 'UTC')::date
                  GROUP BY kv.key) t) AS buckets
    FROM check_days d
    WHERE d.check_id = c.check_id
      AND d.day BETWEEN ($1 AT TIME ZONE 'UTC')::date
                    AND (($2 - interval '1 microsecond') AT TIME ZONE 'UTC')::date
) days ON true
WHERE ($3::text[] IS NULL OR c.check_id = ANY($3))
  AND (c.deleted_at IS NULL OR c.deleted_at > $1)
ORDER BY c.check_id

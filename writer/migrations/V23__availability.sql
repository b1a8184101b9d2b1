-- What availability reports are computed from (docs/REPORTS.md), kept as long as the
-- alerts and check_days: never raw rows.

-- A check_down alert's outage in sample time: from the run that made the quorum of
-- locations DOWN to the run that ended it (writer/src/alerts/store.rs). opened_at and
-- resolved_at stay when the writer decided, which is later, and later still for results
-- that arrive late. Alerts from before this have the times they were decided.
ALTER TABLE alerts
    ADD COLUMN began_at timestamptz,
    ADD COLUMN ended_at timestamptz;
UPDATE alerts SET began_at = opened_at, ended_at = resolved_at WHERE kind = 'check_down';

-- Per check and day: the time its results cover (a result at t covers t to t plus its
-- reporting window, three intervals and at least 10 s: the window in which the quorum
-- counts a location as reporting), and its response times as the rollups' histogram
-- (writer/src/store/latency.rs). A union and sums: a redelivered row changes nothing.
ALTER TABLE check_days
    ADD COLUMN covered tstzmultirange NOT NULL DEFAULT '{}',
    ADD COLUMN response_time_buckets jsonb NOT NULL DEFAULT '{}';

-- Days whose raw rows are still kept get both from them; older days have neither.
UPDATE check_days d
SET covered = r.covered, response_time_buckets = r.buckets
FROM (
    SELECT check_id, day, range_agg(coverage) AS covered,
           jsonb_object_agg(bucket, n) AS buckets
    FROM (
        SELECT s.check_id, (s.ts AT TIME ZONE 'UTC')::date AS day,
               tstzrange(s.ts, s.ts + make_interval(
                   secs => greatest(3 * coalesce(c.interval_seconds, 60), 10))) AS coverage,
               CASE WHEN s.response_time_ms <= 1 OR s.response_time_ms = 'NaN' THEN 0
                    ELSE least(floor(log(2.0, s.response_time_ms::numeric) * 8), 400)::int
               END AS bucket,
               count(*) OVER (PARTITION BY s.check_id, (s.ts AT TIME ZONE 'UTC')::date,
                   CASE WHEN s.response_time_ms <= 1 OR s.response_time_ms = 'NaN' THEN 0
                        ELSE least(floor(log(2.0, s.response_time_ms::numeric) * 8), 400)::int
                   END) AS n
        FROM site_checks s
        LEFT JOIN checks c USING (check_id)
        WHERE s.check_id <> ''
    ) rows
    GROUP BY check_id, day
) r
WHERE d.check_id = r.check_id AND d.day = r.day;

-- How long a multirange lasts, in seconds.
CREATE FUNCTION multirange_seconds(m tstzmultirange) RETURNS double precision
LANGUAGE sql IMMUTABLE AS $$
    SELECT coalesce(sum(extract(epoch FROM upper(r) - lower(r))), 0)::double precision
    FROM unnest(m) r
    WHERE NOT isempty(r) AND upper(r) <> 'infinity' AND lower(r) <> '-infinity'
$$;

-- The time window w was in effect within [from_ts, to_ts): its one-off span, or each
-- weekly occurrence in its time zone, and only while it existed (from when it was made
-- to when it was removed), so a window made after the fact excuses nothing.
CREATE FUNCTION maintenance_ranges(w maintenance_windows, from_ts timestamptz, to_ts timestamptz)
RETURNS tstzmultirange LANGUAGE sql STABLE AS $$
    SELECT coalesce(range_agg(r), '{}') * tstzmultirange(tstzrange(from_ts, to_ts))
           * tstzmultirange(tstzrange(w.created_at, coalesce(w.removed_at, 'infinity')))
    FROM (
        SELECT tstzrange(w.starts_at, w.ends_at) AS r
        WHERE w.weekdays IS NULL
        UNION ALL
        SELECT tstzrange((g.t::date + w.start_time) AT TIME ZONE w.time_zone,
                         (g.t::date + w.start_time + w.duration) AT TIME ZONE w.time_zone)
        FROM generate_series((from_ts AT TIME ZONE w.time_zone)::date - 7,
                             (to_ts AT TIME ZONE w.time_zone)::date, interval '1 day') AS g(t)
        WHERE w.weekdays IS NOT NULL
          AND extract(dow FROM g.t)::smallint = ANY (w.weekdays)
    ) spans
$$;

-- What an availability report splits check $1's period [from_ts, to_ts) by: the time
-- in maintenance windows covering it, the time its results cover, and the time its
-- check_down outages lasted (an open one to the end of time), each within the period.
-- Every figure of a report (docs/REPORTS.md) is made of these three.
CREATE FUNCTION check_spans(
    check_id text, from_ts timestamptz, to_ts timestamptz,
    OUT maintenance tstzmultirange, OUT covered tstzmultirange, OUT down tstzmultirange
) LANGUAGE sql STABLE AS $$
    SELECT
        coalesce((SELECT range_agg(m)
                  FROM maintenance_windows w, unnest(maintenance_ranges(w, from_ts, to_ts)) m
                  WHERE window_matches(w, check_spans.check_id, '')), '{}'),
        coalesce((SELECT range_agg(d.covered)
                  FROM check_days d
                  WHERE d.check_id = check_spans.check_id
                    AND d.day BETWEEN (from_ts AT TIME ZONE 'UTC')::date - 1
                                  AND (to_ts AT TIME ZONE 'UTC')::date), '{}')
            * tstzmultirange(tstzrange(from_ts, to_ts)),
        coalesce((SELECT range_agg(tstzrange(a.began_at, coalesce(a.ended_at, 'infinity')))
                  FROM alerts a
                  WHERE a.kind = 'check_down' AND a.subject = check_spans.check_id
                    AND a.began_at < to_ts AND coalesce(a.ended_at, 'infinity') > from_ts), '{}')
            * tstzmultirange(tstzrange(from_ts, to_ts))
$$;

-- Site rollups are now kept per tier (postgres.rollup_retention_days: minute buckets
-- 90 days, hour buckets two years by default): found by age for the daily expiry.
CREATE INDEX site_check_rollups_age ON site_check_rollups (resolution, bucket_start);

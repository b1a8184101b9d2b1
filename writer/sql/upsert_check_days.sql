-- Adds a batch's results per central check and UTC day (store/rollups.rs, in key
-- order) to check_days.
INSERT INTO check_days AS d (check_id, day, results, ok_results)
SELECT * FROM unnest($1::text[], $2::date[], $3::int8[], $4::int8[])
ON CONFLICT (check_id, day) DO UPDATE SET
    results    = d.results + EXCLUDED.results,
    ok_results = d.ok_results + EXCLUDED.ok_results

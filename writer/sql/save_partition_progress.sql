-- How far this writer has stored each partition it holds (consume/progress.rs); a
-- time earlier than the one saved changes nothing.
INSERT INTO partition_progress AS p (topic, partition, stored_up_to)
SELECT * FROM unnest($1::text[], $2::int4[], $3::timestamptz[])
ON CONFLICT (topic, partition) DO UPDATE SET
    stored_up_to = GREATEST(p.stored_up_to, EXCLUDED.stored_up_to),
    saved_at     = now()

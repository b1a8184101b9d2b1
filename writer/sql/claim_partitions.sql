-- Records writer $3 as the last to move the check states of partitions $1, $2 (topic,
-- partition), which the batch holds (lock_partitions.sql). Returns those another
-- writer, or none, held last: what this writer keeps in memory of them may be stale
-- (alerts/state_cache.rs). A partition it held last is locked, not written.
INSERT INTO partition_holders AS h (topic, partition, holder)
SELECT p.topic, p.partition, $3::text
FROM unnest($1::text[], $2::int4[]) AS p(topic, partition)
ON CONFLICT (topic, partition) DO UPDATE SET holder = EXCLUDED.holder
WHERE h.holder <> EXCLUDED.holder
RETURNING h.topic, h.partition

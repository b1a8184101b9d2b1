-- Holds the Kafka partitions $1, $2 (topic, partition; given in order, taken in that
-- order) for this transaction. A writer that takes a partition over waits here until
-- the batch of the writer it took it from has committed, so the state of a check at a
-- location is moved by one batch at a time (alerts/store.rs).
SELECT pg_advisory_xact_lock(hashtext(current_schema() || ' ' || p.topic), p.partition)
FROM unnest($1::text[], $2::int4[]) AS p(topic, partition)

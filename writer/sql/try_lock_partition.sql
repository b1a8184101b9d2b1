-- The lock of Kafka partition ($1 topic, $2 partition) for this transaction if no
-- batch holds it (the key lock_partitions.sql takes): true when taken.
SELECT pg_try_advisory_xact_lock(hashtext(current_schema() || ' ' || $1::text), $2::int4)

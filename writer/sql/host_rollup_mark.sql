-- Marks minutes a batch stored host rows in ($1 topics, $2 partitions the rows came
-- through, $3 agents, $4 minutes), due within $5 seconds (store/host_rollups.rs): at
-- a random point of the second half, or, when it comes within them, once the minute
-- is over and its last samples have had 5 s to arrive (so a minute is mostly folded
-- once); at once when $5 is 0. A mark already there keeps its due time. Returns the
-- marks inserted, each with the seconds until it falls due.
INSERT INTO host_rollup_pending (topic, partition, agent_id, minute, due)
SELECT m.topic, m.partition, m.agent_id, m.minute,
       greatest(now() + make_interval(secs => $5::float8 * (0.5 + random() / 2)),
                least(m.minute + interval '65 seconds', now() + make_interval(secs => $5::float8)))
FROM unnest($1::text[], $2::int4[], $3::text[], $4::timestamptz[]) AS m(topic, partition, agent_id, minute)
ON CONFLICT DO NOTHING
RETURNING topic, partition, agent_id, minute, extract(epoch FROM due - now())::float8

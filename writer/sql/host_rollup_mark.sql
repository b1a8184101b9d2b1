-- Marks minutes a batch stored host rows in ($1 topics, $2 partitions the rows came
-- through, $3 agents, $4 minutes), due after $5 seconds at a random point of their
-- second half (store/host_rollups.rs; at once when $5 is 0), and, with a delay of a
-- minute or more, not before the minute is over, its last samples have had 5 s to
-- arrive and a random part of half the delay has passed: so a minute is mostly
-- folded once, and the marks of a fleet whose minutes end together spread out. A
-- shorter delay waits for that share of the minute. A mark already there keeps its
-- due time. Returns the marks inserted, each with the seconds until it falls due.
INSERT INTO host_rollup_pending (topic, partition, agent_id, minute, due)
SELECT m.topic, m.partition, m.agent_id, m.minute,
       greatest(now() + make_interval(secs => $5::float8 * (0.5 + random() / 2)),
                m.minute + make_interval(secs => 65 * least(1, $5::float8 / 60) + $5::float8 * random() / 2))
FROM unnest($1::text[], $2::int4[], $3::text[], $4::timestamptz[]) AS m(topic, partition, agent_id, minute)
ON CONFLICT DO NOTHING
RETURNING topic, partition, agent_id, minute, extract(epoch FROM due - now())::float8

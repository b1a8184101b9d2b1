-- One row per agent in the batch: its earliest and latest row time (host samples and
-- site checks), and, when the batch holds host samples of it, what the latest one
-- said and when it was taken (host_seen; NULL otherwise). The descriptive columns
-- follow the latest host sample only: an older one (a late redelivery) and a batch of
-- checks alone leave them as they are.
INSERT INTO agents AS a (
    agent_id, hostname, os_name, os_version, agent_version, first_seen, last_seen,
    host_seen, interval_seconds, cpu_percent, memory_percent, disk_percent, clock_offset_ms
)
SELECT * FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::timestamptz[],
    $7::timestamptz[], $8::timestamptz[], $9::integer[], $10::float8[], $11::float8[],
    $12::float8[], $13::bigint[]
)
ON CONFLICT (agent_id) DO UPDATE SET
    hostname         = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.hostname ELSE a.hostname END,
    os_name          = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.os_name ELSE a.os_name END,
    os_version       = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.os_version ELSE a.os_version END,
    agent_version    = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.agent_version ELSE a.agent_version END,
    interval_seconds = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.interval_seconds ELSE a.interval_seconds END,
    cpu_percent      = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.cpu_percent ELSE a.cpu_percent END,
    memory_percent   = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.memory_percent ELSE a.memory_percent END,
    disk_percent     = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.disk_percent ELSE a.disk_percent END,
    clock_offset_ms  = CASE WHEN EXCLUDED.host_seen >= coalesce(a.host_seen, '-infinity') THEN EXCLUDED.clock_offset_ms ELSE a.clock_offset_ms END,
    host_seen        = GREATEST(a.host_seen, EXCLUDED.host_seen),
    first_seen       = LEAST(a.first_seen, EXCLUDED.first_seen),
    last_seen        = GREATEST(a.last_seen, EXCLUDED.last_seen)

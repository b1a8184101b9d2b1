-- How far an agent's clock was ahead of its collector's (negative: behind), in
-- milliseconds, as its latest host sample's batch showed; NULL when it did not say.
ALTER TABLE agents ADD COLUMN clock_offset_ms bigint;

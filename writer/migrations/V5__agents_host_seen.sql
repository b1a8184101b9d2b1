-- The time of an agent's latest host sample, apart from last_seen (which site checks
-- move too): a host sample updates the descriptive columns only when it is the
-- latest host sample, however recent the agent's checks are.
ALTER TABLE agents ADD COLUMN host_seen timestamptz;
UPDATE agents SET host_seen = last_seen WHERE hostname <> '';

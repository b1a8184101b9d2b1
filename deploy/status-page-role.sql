-- The status page's PostgreSQL role: it may read only what the page shows (checks,
-- their locations' states and days, outages, incidents, maintenance windows and the
-- agent labels windows select by) and nothing else; the page refuses to start as a role that can
-- write. Run as a superuser after the writer created the schema:
--   psql "$URL" -v role=fleetmon_status -v schema=fleetmon -v password="$PASSWORD" \
--        -f deploy/status-page-role.sql
SELECT format('CREATE ROLE %I LOGIN', :'role')
WHERE NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = :'role') \gexec
SELECT format('ALTER ROLE %I LOGIN PASSWORD %L NOSUPERUSER NOCREATEROLE NOCREATEDB', :'role', :'password') \gexec
SELECT format('GRANT USAGE ON SCHEMA %I TO %I', :'schema', :'role') \gexec
SELECT format('GRANT SELECT ON %1$I.checks, %1$I.check_state, %1$I.check_days, %1$I.alerts, '
              '%1$I.incidents_shown, %1$I.maintenance_windows, %1$I.agent_labels TO %2$I',
              :'schema', :'role') \gexec

-- One incident ($1) as shown.
SELECT * FROM incidents_shown WHERE incident_id = $1

-- GetAlert: one alert by id ($1).
SELECT * FROM alert_summaries WHERE alert_id = $1

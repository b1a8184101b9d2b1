-- ListSilences: the silences still in force, oldest first.
SELECT * FROM silences WHERE ends_at > clock_timestamp() ORDER BY silence_id

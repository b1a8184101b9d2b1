-- Each central check's results per UTC day, every location together: what status pages'
-- day bars and availability reports count as "monitored" (a day without a row is a
-- day without data, never a day up). Added from the rows a batch inserts, in its
-- transaction (writer/src/store/rollups.rs), so a redelivered row adds nothing; kept
-- for good like the check rollups and the alerts, so they never need raw rows.
CREATE TABLE check_days (
    check_id   text   NOT NULL,
    day        date   NOT NULL,
    results    bigint NOT NULL,
    ok_results bigint NOT NULL,
    PRIMARY KEY (check_id, day)
);

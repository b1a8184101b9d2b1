//! One reading of the database for every page: the published checks' states, their
//! days, outages and maintenance. Taken every `refresh_seconds` by one task; requests
//! are answered from the latest one and never query anything.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use time::{Date, OffsetDateTime};

/// Days shown per check (the bars).
pub(crate) const DAYS: usize = 90;

const CHECKS: &str = include_str!("sql/checks.sql");
const DAYS_SQL: &str = include_str!("sql/days.sql");
const OUTAGES: &str = include_str!("sql/outages.sql");
const MAINTENANCE: &str = include_str!("sql/maintenance.sql");
const INCIDENTS: &str = include_str!("sql/incidents.sql");

/// A check's state as the public sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum State {
    /// Every location passes.
    Operational,
    /// No result lately (or the check is paused or not defined).
    NoData,
    /// A maintenance window for the whole check is active.
    Maintenance,
    /// Some locations fail, not a quorum.
    Degraded,
    /// A quorum of locations agrees it is down (a `check_down` alert is open).
    Outage,
}

impl State {
    /// As the JSON and the badges say it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            State::Operational => "operational",
            State::NoData => "no_data",
            State::Maintenance => "maintenance",
            State::Degraded => "degraded",
            State::Outage => "outage",
        }
    }

    /// As the page says it.
    pub(crate) fn label(self) -> &'static str {
        match self {
            State::Operational => "Operational",
            State::NoData => "No data",
            State::Maintenance => "Maintenance",
            State::Degraded => "Degraded",
            State::Outage => "Outage",
        }
    }
}

/// One UTC day of a check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Day {
    /// The day.
    pub(crate) date: Date,
    /// Share of the day's monitored time without a quorum outage (0 to 1); `None`
    /// without any result that day.
    pub(crate) availability: Option<f64>,
    /// Seconds of quorum outage that day.
    pub(crate) outage_seconds: u64,
    /// Outages that began that day.
    pub(crate) incidents: u32,
    /// Its length: a whole day, or today so far.
    pub(crate) seconds: u64,
}

/// A published check as it stands.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct CheckStatus {
    /// Its state now.
    pub(crate) state: State,
    /// Its target (shown only where the config says so).
    pub(crate) target: String,
    /// Locations that reported lately.
    pub(crate) locations: i64,
    /// Those failing.
    pub(crate) failing: i64,
    /// Since when the outage has lasted.
    pub(crate) outage_since: Option<SystemTime>,
    /// The last [`DAYS`] days, oldest first.
    pub(crate) days: Vec<Day>,
}

impl CheckStatus {
    /// Availability over the last `days` days that had results; `None` without any.
    pub(crate) fn uptime(&self, days: usize) -> Option<f64> {
        let (mut monitored, mut down) = (0, 0);
        for day in self.days.iter().rev().take(days) {
            if day.availability.is_some() {
                monitored += day.seconds;
                down += day.outage_seconds;
            }
        }
        (monitored > 0).then(|| 1.0 - down as f64 / monitored as f64)
    }
}

/// A quorum outage of a published check.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outage {
    /// Its alert's id.
    pub(crate) id: i64,
    /// The check.
    pub(crate) check_id: String,
    /// When the quorum agreed it was down.
    pub(crate) started: SystemTime,
    /// When it recovered, if it has.
    pub(crate) resolved: Option<SystemTime>,
}

/// An incident about published checks, with its updates (oldest first).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Incident {
    /// Its id.
    pub(crate) id: i64,
    /// Its title; empty for one a quorum outage opened.
    pub(crate) title: String,
    /// The checks it is about.
    pub(crate) check_ids: Vec<String>,
    /// investigating, identified, monitoring or resolved.
    pub(crate) status: String,
    /// When it was opened.
    pub(crate) opened: SystemTime,
    /// When it was resolved, if it was.
    pub(crate) resolved: Option<SystemTime>,
    /// Opened by an outage and not updated by anyone since.
    pub(crate) automatic: bool,
    /// Its updates: when, the status then and the message.
    pub(crate) updates: Vec<(SystemTime, String, String)>,
}

/// A maintenance window of whole published checks.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Maintenance {
    /// Its id.
    pub(crate) id: i64,
    /// The check.
    pub(crate) check_id: String,
    /// Why, as the operator wrote it.
    pub(crate) reason: String,
    /// When it runs.
    pub(crate) when: Schedule,
    /// Whether it runs now.
    pub(crate) active: bool,
}

/// When a maintenance window runs.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Schedule {
    /// Once, from one time to another.
    Once {
        /// Its start.
        starts: SystemTime,
        /// Its end.
        ends: SystemTime,
    },
    /// Every week on some days, at a local time for some minutes.
    Weekly {
        /// Days of the week, 0 = Sunday.
        days: Vec<i16>,
        /// Local start, `HH:MM`.
        start: String,
        /// Its length.
        minutes: i64,
        /// The time zone of `start`.
        time_zone: String,
    },
}

/// Everything the pages show, as of `taken`.
#[derive(Debug, Clone)]
pub(crate) struct Snapshot {
    /// When it was read.
    pub(crate) taken: SystemTime,
    /// Each published check that exists.
    pub(crate) checks: HashMap<String, CheckStatus>,
    /// Outages that lasted into the last [`DAYS`] days, oldest first.
    pub(crate) outages: Vec<Outage>,
    /// Maintenance windows not yet over.
    pub(crate) maintenance: Vec<Maintenance>,
    /// Incidents open or resolved within the last [`DAYS`] days, newest first.
    pub(crate) incidents: Vec<Incident>,
}

/// Reads the snapshot of `ids` over `client` (its `search_path` the writer's schema).
pub(crate) async fn read(
    client: &tokio_postgres::Client,
    ids: &[String],
) -> Result<Snapshot, tokio_postgres::Error> {
    let taken = SystemTime::now();
    let today = OffsetDateTime::from(taken).date();
    let first_day = today - time::Duration::days(DAYS as i64 - 1);
    let since = first_day.midnight().assume_utc();
    let rows = client.query(CHECKS, &[&ids]).await?;
    let day_rows = client.query(DAYS_SQL, &[&ids, &first_day]).await?;
    let outage_rows = client
        .query(OUTAGES, &[&ids, &SystemTime::from(since)])
        .await?;
    let window_rows = client.query(MAINTENANCE, &[&ids]).await?;
    let incident_rows = client
        .query(INCIDENTS, &[&ids, &SystemTime::from(since)])
        .await?;

    let outages: Vec<Outage> = outage_rows
        .iter()
        .map(|row| Outage {
            id: row.get("alert_id"),
            check_id: row.get("subject"),
            started: row.get("opened_at"),
            resolved: row.get("resolved_at"),
        })
        .collect();
    let mut results: HashMap<(String, Date), i64> = HashMap::new();
    for row in &day_rows {
        results.insert((row.get("check_id"), row.get("day")), row.get("results"));
    }
    let mut checks = HashMap::new();
    for row in &rows {
        let id: String = row.get("check_id");
        let paused: bool = row.get("paused");
        let deleted: bool = row.get("deleted");
        let locations: i64 = row.get("locations");
        let failing: i64 = row.get("failing");
        let outage_since: Option<SystemTime> = row.get("outage_since");
        let state = if row.get::<_, bool>("in_maintenance") {
            State::Maintenance
        } else if outage_since.is_some() {
            State::Outage
        } else if paused || deleted || locations == 0 {
            State::NoData
        } else if failing > 0 {
            State::Degraded
        } else {
            State::Operational
        };
        let mine: Vec<&Outage> = outages.iter().filter(|o| o.check_id == id).collect();
        let days = (0..DAYS as i64)
            .map(|back| {
                let date = today - time::Duration::days(DAYS as i64 - 1 - back);
                day(
                    date,
                    &mine,
                    results.contains_key(&(id.clone(), date)),
                    taken,
                )
            })
            .collect();
        checks.insert(
            id,
            CheckStatus {
                state,
                target: row.get("target"),
                locations,
                failing,
                outage_since,
                days,
            },
        );
    }
    let maintenance = window_rows
        .iter()
        .map(|row| {
            let when = match row.get::<_, Option<Vec<i16>>>("weekdays") {
                Some(days) => Schedule::Weekly {
                    days,
                    start: row.get("start_hhmm"),
                    minutes: row.get("duration_minutes"),
                    time_zone: row.get("time_zone"),
                },
                None => Schedule::Once {
                    starts: row.get("starts_at"),
                    ends: row.get("ends_at"),
                },
            };
            Maintenance {
                id: row.get("window_id"),
                check_id: row.get("check_id"),
                reason: row.get("reason"),
                when,
                active: row.get("active"),
            }
        })
        .collect();
    let incidents = incident_rows.iter().map(incident).collect();
    Ok(Snapshot {
        taken,
        checks,
        outages,
        maintenance,
        incidents,
    })
}

/// An incident from a row of `incidents_shown`.
fn incident(row: &tokio_postgres::Row) -> Incident {
    let updates: Vec<serde_json::Value> =
        serde_json::from_value(row.get("updates")).unwrap_or_default();
    let opened_by: String = row.get("opened_by");
    let automatic = opened_by == "fleetmon" && updates.iter().all(|u| u["author"] == "fleetmon");
    Incident {
        id: row.get("incident_id"),
        title: row.get("title"),
        check_ids: row.get("check_ids"),
        status: row.get("status"),
        opened: row.get("opened_at"),
        resolved: row.get("resolved_at"),
        automatic,
        updates: updates
            .iter()
            .map(|u| {
                let at = u["at"].as_f64().unwrap_or_default().max(0.0);
                (
                    SystemTime::UNIX_EPOCH + Duration::from_secs_f64(at),
                    u["status"].as_str().unwrap_or_default().to_owned(),
                    u["message"].as_str().unwrap_or_default().to_owned(),
                )
            })
            .collect(),
    }
}

/// The day `date` of a check with `outages`: the outage time within it (up to `now`),
/// and its availability when it had results.
fn day(date: Date, outages: &[&Outage], had_results: bool, now: SystemTime) -> Day {
    let start = SystemTime::from(date.midnight().assume_utc());
    let end = (start + Duration::from_secs(86_400)).min(now);
    let mut outage_seconds = 0;
    let mut incidents = 0;
    for outage in outages {
        let (from, to) = (
            outage.started.max(start),
            outage.resolved.unwrap_or(now).min(end),
        );
        if let Ok(overlap) = to.duration_since(from) {
            outage_seconds += overlap.as_secs();
        }
        if outage.started >= start && outage.started < end {
            incidents += 1;
        }
    }
    let length = end
        .duration_since(start)
        .unwrap_or_default()
        .as_secs()
        .max(1);
    let outage_seconds = outage_seconds.min(length);
    Day {
        date,
        availability: had_results.then(|| 1.0 - outage_seconds as f64 / length as f64),
        outage_seconds,
        incidents,
        seconds: length,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(date: Date, hour: u8, minute: u8) -> SystemTime {
        SystemTime::from(date.with_hms(hour, minute, 0).unwrap().assume_utc())
    }

    #[test]
    fn a_day_counts_the_outage_time_within_it_and_the_outages_that_began_in_it() {
        let day1 = time::macros::date!(2026 - 11 - 02);
        let day2 = time::macros::date!(2026 - 11 - 03);
        // From 23:00 on day 1 to 01:30 on day 2, and 10:00 to 10:15 on day 2.
        let outages = [
            Outage {
                id: 1,
                check_id: "shop".into(),
                started: at(day1, 23, 0),
                resolved: Some(at(day2, 1, 30)),
            },
            Outage {
                id: 2,
                check_id: "shop".into(),
                started: at(day2, 10, 0),
                resolved: Some(at(day2, 10, 15)),
            },
        ];
        let outages: Vec<&Outage> = outages.iter().collect();
        let now = at(day2 + time::Duration::days(5), 0, 0);
        let first = day(day1, &outages, true, now);
        assert_eq!((first.outage_seconds, first.incidents), (3600, 1));
        assert_eq!(first.availability, Some(1.0 - 3600.0 / 86_400.0));
        let second = day(day2, &outages, true, now);
        assert_eq!((second.outage_seconds, second.incidents), (5400 + 900, 1));
        // A day without results is no data, whatever the outages.
        assert_eq!(day(day2, &outages, false, now).availability, None);
    }

    #[test]
    fn an_open_outage_runs_until_now_and_today_is_as_long_as_it_has_been() {
        let today = time::macros::date!(2026 - 11 - 02);
        let outages = [Outage {
            id: 1,
            check_id: "shop".into(),
            started: at(today, 6, 0),
            resolved: None,
        }];
        let outages: Vec<&Outage> = outages.iter().collect();
        let today = day(today, &outages, true, at(today, 12, 0));
        assert_eq!(today.outage_seconds, 6 * 3600);
        assert_eq!(today.availability, Some(0.5));
    }
}

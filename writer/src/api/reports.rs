//! Availability reports (History's `GetAvailabilityReport`): per central check over a
//! period, its seconds split into maintenance, no data, down and up, its outages, MTTR
//! and MTBF and its response-time percentiles — from the outages' sample times
//! (`alerts.began_at`/`ended_at`), the day rollups (`check_days`: time covered,
//! results, latency buckets) and the maintenance windows, never from raw rows. Every
//! figure is defined in docs/REPORTS.md; the split itself is `check_spans` (V23).

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use fleetmon::pb::{
    AvailabilityReport, AvailabilityReportRequest, CheckAvailabilityReport, CheckDefinition,
    ReportSpan, ReportedOutage,
};

use prost::Message as _;

use crate::api::error::ServiceError;

const REPORT_CHECKS: &str = include_str!("../../sql/report_checks.sql");
const REPORT_OUTAGES: &str = include_str!("../../sql/report_outages.sql");
const REPORT_CANDIDATES: &str = include_str!("../../sql/report_candidates.sql");

/// The longest period a report covers.
pub const MAX_PERIOD: Duration = Duration::from_secs(400 * 86_400);
/// The most checks one request may name.
pub const MAX_CHECK_IDS: usize = 1000;
/// The most label pairs one request may give.
pub const MAX_LABELS: usize = 16;

/// The validated period `[start, end)` of a request: History's range, with its end
/// required and at most [`MAX_PERIOD`] long.
fn period(request: &AvailabilityReportRequest) -> Result<(SystemTime, SystemTime), ServiceError> {
    match &request.range {
        None => {
            return Err(ServiceError::invalid(
                "range is required (range.start and range.end)",
            ));
        }
        Some(range) if range.start.is_some() && range.end.is_none() => {
            return Err(ServiceError::invalid("range.end is required"));
        }
        Some(_) => {}
    }
    let (start, end) = crate::api::range(request.range)?;
    let span = end.duration_since(start).unwrap_or_default();
    if span > MAX_PERIOD {
        return Err(ServiceError::invalid(format!(
            "range is {} days long: a report covers at most {} days; ask for several",
            span.as_secs() / 86_400,
            MAX_PERIOD.as_secs() / 86_400
        )));
    }
    Ok((start, end))
}

/// The report over `client`'s database.
pub async fn availability_report(
    client: &deadpool_postgres::Object,
    request: AvailabilityReportRequest,
) -> Result<AvailabilityReport, ServiceError> {
    let (start, end) = period(&request)?;
    if request.check_ids.len() > MAX_CHECK_IDS {
        return Err(ServiceError::invalid(format!(
            "check_ids names {} checks: at most {MAX_CHECK_IDS}; leave it empty for all",
            request.check_ids.len()
        )));
    }
    if request.labels.len() > MAX_LABELS {
        return Err(ServiceError::invalid(format!(
            "labels has {} pairs: at most {MAX_LABELS}",
            request.labels.len()
        )));
    }
    let as_of = SystemTime::now();
    // None: every check of the period.
    let mut chosen: Option<Vec<String>> =
        (!request.check_ids.is_empty()).then(|| request.check_ids.clone());
    // With labels: every check of the period, to tell a check chosen out by its labels
    // from one that did not exist.
    let mut existing: Vec<String> = Vec::new();
    if !request.labels.is_empty() {
        let mut by_labels = Vec::new();
        for row in client.query(REPORT_CANDIDATES, &[&start]).await? {
            existing.push(row.get("check_id"));
            let definition = CheckDefinition::decode(row.get::<_, &[u8]>("definition")).ok();
            let assigned = definition
                .and_then(|d| d.assignment)
                .map(|a| a.labels)
                .unwrap_or_default();
            if request
                .labels
                .iter()
                .all(|(key, value)| assigned.get(key) == Some(value))
            {
                by_labels.push(row.get::<_, String>("check_id"));
            }
        }
        chosen = Some(match chosen {
            Some(ids) => ids
                .into_iter()
                .filter(|id| by_labels.contains(id))
                .collect(),
            None => by_labels,
        });
    }
    let rows = client
        .query(REPORT_CHECKS, &[&start, &end, &chosen])
        .await?;
    let found: Vec<String> = rows.iter().map(|row| row.get("check_id")).collect();
    // A check named by id must have existed (whether or not its labels chose it).
    let existed = |id: &String| found.contains(id) || existing.contains(id);
    if let Some(missing) = request.check_ids.iter().find(|id| !existed(id)) {
        return Err(ServiceError::not_found(format!(
            "check_ids: no check `{missing}` existed in the period (see `fleetmon checks list`)"
        )));
    }
    let mut outages: HashMap<String, Vec<ReportedOutage>> = HashMap::new();
    for row in client
        .query(REPORT_OUTAGES, &[&start, &end, &found])
        .await?
    {
        outages
            .entry(row.get("check_id"))
            .or_default()
            .push(ReportedOutage {
                alert_id: row.get::<_, i64>("alert_id") as u64,
                started_at: Some(row.get::<_, SystemTime>("began_at").into()),
                ended_at: row.get::<_, Option<SystemTime>>("ended_at").map(Into::into),
                duration_seconds: row.get("duration_seconds"),
                counted_seconds: row.get("counted_seconds"),
                locations: row.get("locations"),
                recorded_at: Some(row.get::<_, SystemTime>("opened_at").into()),
                resolved_recorded_at: row
                    .get::<_, Option<SystemTime>>("resolved_at")
                    .map(Into::into),
            });
    }
    let checks = rows
        .iter()
        .map(|row| {
            let check_id: String = row.get("check_id");
            let outages = outages.remove(&check_id).unwrap_or_default();
            check_report(row, check_id, outages, period_seconds(start, end))
        })
        .collect();
    Ok(AvailabilityReport {
        start: Some(start.into()),
        end: Some(end.into()),
        as_of: Some(as_of.into()),
        checks,
    })
}

fn period_seconds(start: SystemTime, end: SystemTime) -> f64 {
    end.duration_since(start).unwrap_or_default().as_secs_f64()
}

/// One check's report from its row of `report_checks.sql` and its outages.
fn check_report(
    row: &tokio_postgres::Row,
    check_id: String,
    outages: Vec<ReportedOutage>,
    period_seconds: f64,
) -> CheckAvailabilityReport {
    let up: f64 = row.get("up_seconds");
    let down: f64 = row.get("down_seconds");
    let counted = outages.iter().filter(|o| o.counted_seconds > 0.0).count() as u32;
    let per_outage = |seconds: f64| (counted > 0).then(|| seconds / f64::from(counted));
    let buckets = crate::store::latency::from_json(row.get("buckets"));
    let quantile = |q| crate::store::latency::quantile(&buckets, q);
    CheckAvailabilityReport {
        check_id,
        target: row.get("target"),
        period_seconds,
        maintenance_seconds: row.get("maintenance_seconds"),
        no_data_seconds: row.get("no_data_seconds"),
        down_seconds: down,
        up_seconds: up,
        availability_percent: (up + down > 0.0).then(|| 100.0 * up / (up + down)),
        outage_count: counted,
        mttr_seconds: per_outage(down),
        mtbf_seconds: per_outage(up),
        response_time_p50_ms: quantile(0.5),
        response_time_p95_ms: quantile(0.95),
        response_time_p99_ms: quantile(0.99),
        results: row.get::<_, i64>("results").max(0) as u64,
        ok_results: row.get::<_, i64>("ok_results").max(0) as u64,
        outages,
        maintenance: spans(row, "maintenance"),
        no_data: spans(row, "no_data"),
        deleted: row.get("deleted"),
    }
}

/// The spans a row lists as `{name}_starts` and `{name}_ends`.
fn spans(row: &tokio_postgres::Row, name: &str) -> Vec<ReportSpan> {
    let starts: Vec<SystemTime> = row.get(format!("{name}_starts").as_str());
    let ends: Vec<SystemTime> = row.get(format!("{name}_ends").as_str());
    starts
        .into_iter()
        .zip(ends)
        .map(|(start, end)| ReportSpan {
            start: Some(start.into()),
            end: Some(end.into()),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmon::pb::TimeRange;

    fn request(start: Option<i64>, end: Option<i64>) -> AvailabilityReportRequest {
        let at = |s: i64| prost_types::Timestamp {
            seconds: s,
            nanos: 0,
        };
        AvailabilityReportRequest {
            range: Some(TimeRange {
                start: start.map(at),
                end: end.map(at),
            }),
            ..Default::default()
        }
    }

    #[test]
    fn a_period_needs_both_ends_in_order_and_at_most_400_days() {
        let message = |r: AvailabilityReportRequest| match period(&r) {
            Err(ServiceError::InvalidArgument(m)) => m,
            other => panic!("{other:?}"),
        };
        assert_eq!(
            message(AvailabilityReportRequest::default()),
            "range is required (range.start and range.end)"
        );
        assert_eq!(message(request(Some(0), None)), "range.end is required");
        assert_eq!(
            message(request(Some(10), Some(10))),
            "range.end must be after range.start"
        );
        assert_eq!(
            message(request(Some(0), Some(401 * 86_400))),
            "range is 401 days long: a report covers at most 400 days; ask for several"
        );
        assert!(period(&request(Some(0), Some(400 * 86_400))).is_ok());
    }
}

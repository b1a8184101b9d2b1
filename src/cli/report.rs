//! `fleetmon report availability`: the writer's availability report (History's
//! `GetAvailabilityReport`, defined in docs/REPORTS.md) as a table, CSV, JSON or a
//! self-contained HTML document to publish or sign.

use clap::{Subcommand, ValueEnum};
use fleetmon::pb::history_client::HistoryClient;
use fleetmon::pb::{
    AvailabilityReport, AvailabilityReportRequest, CheckAvailabilityReport, TimeRange,
};
use serde_json::{Value, json};

use super::table::{escape, parse_time, render, rfc3339};
use super::{Connection, call_error};

/// `fleetmon report …`.
#[derive(Debug, Subcommand)]
pub(crate) enum ReportCommand {
    /// Availability of central checks over a period as the quorum of locations decided
    /// it: down time, outages, maintenance and time without data, MTTR and MTBF,
    /// response-time percentiles (docs/REPORTS.md).
    Availability(AvailabilityArgs),
}

/// What `fleetmon report availability` asks.
#[derive(Debug, clap::Args)]
pub(crate) struct AvailabilityArgs {
    /// Start of the period: a UTC date (its midnight) or an RFC 3339 time.
    #[arg(long, value_parser = |s: &str| parse_time(s, true))]
    from: prost_types::Timestamp,
    /// End of the period, not included: a UTC date (its midnight) or an RFC 3339 time.
    #[arg(long, value_parser = |s: &str| parse_time(s, true))]
    to: prost_types::Timestamp,
    /// A check to report (repeatable); without it, every check of the period.
    #[arg(long = "check")]
    checks: Vec<String>,
    /// Only checks assigned to agents by these labels (`checks add --labels`), e.g.
    /// region=eu,tier=1.
    #[arg(long, value_delimiter = ',', value_parser = super::checks::parse_label)]
    labels: Vec<(String, String)>,
    /// How to print it (`--json` is `--format json`).
    #[arg(long, value_enum, default_value_t = Format::Table)]
    format: Format,
    #[command(flatten)]
    connection: Connection,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
    Html,
}

/// Runs one `fleetmon report` command.
pub(crate) async fn run(command: ReportCommand) -> anyhow::Result<()> {
    let ReportCommand::Availability(args) = command;
    let connection = &args.connection;
    let mut history =
        HistoryClient::new(fleetmon::tls::connect(&connection.writer, &connection.tls()).await?);
    let report = history
        .get_availability_report(AvailabilityReportRequest {
            labels: args.labels.iter().cloned().collect(),
            ..request(args.from, args.to, args.checks.clone())
        })
        .await
        .map_err(|status| call_error("History/GetAvailabilityReport", &connection.writer, status))?
        .into_inner();
    let format = if connection.json {
        Format::Json
    } else {
        args.format
    };
    let text = match format {
        Format::Table => table(&report),
        Format::Csv => csv(&report),
        Format::Json => serde_json::to_string_pretty(&report_json(&report))? + "\n",
        Format::Html => html(&report),
    };
    print!("{text}");
    Ok(())
}

/// The report of `checks` (all when empty) over `[from, to)`.
pub(crate) fn request(
    from: prost_types::Timestamp,
    to: prost_types::Timestamp,
    checks: Vec<String>,
) -> AvailabilityReportRequest {
    AvailabilityReportRequest {
        range: Some(TimeRange {
            start: Some(from),
            end: Some(to),
        }),
        check_ids: checks,
        labels: Default::default(),
    }
}

/// Seconds as people read a duration, to the second: `1 h 02 min 05 s`.
fn duration(seconds: f64) -> String {
    let total = seconds.round().max(0.0) as u64;
    let (h, m, s) = (total / 3600, total % 3600 / 60, total % 60);
    match (h, m) {
        (0, 0) => format!("{s} s"),
        (0, _) => format!("{m} min {s:02} s"),
        _ => format!("{h} h {m:02} min {s:02} s"),
    }
}

/// A share in percent to four decimals, never rounded up to 100.
fn percent(value: Option<f64>) -> String {
    value.map_or_else(
        || "no data".to_owned(),
        |p| format!("{:.4} %", (p * 10_000.0).floor() / 10_000.0),
    )
}

fn milliseconds(value: Option<f64>) -> String {
    value.map_or_else(|| "-".to_owned(), |ms| format!("{ms:.0}"))
}

fn percentiles(check: &CheckAvailabilityReport) -> String {
    format!(
        "{} / {} / {}",
        milliseconds(check.response_time_p50_ms),
        milliseconds(check.response_time_p95_ms),
        milliseconds(check.response_time_p99_ms)
    )
}

fn optional_duration(seconds: Option<f64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), duration)
}

fn heading(report: &AvailabilityReport) -> String {
    format!(
        "Availability from {} to {} (computed {})",
        rfc3339(report.start),
        rfc3339(report.end),
        rfc3339(report.as_of)
    )
}

fn table(report: &AvailabilityReport) -> String {
    let mut out = heading(report) + "\n\n";
    if report.checks.is_empty() {
        out.push_str("no checks existed in the period\n");
        return out;
    }
    let rows: Vec<Vec<String>> = report
        .checks
        .iter()
        .map(|c| {
            vec![
                c.check_id.clone(),
                percent(c.availability_percent),
                duration(c.down_seconds),
                c.outage_count.to_string(),
                optional_duration(c.mttr_seconds),
                optional_duration(c.mtbf_seconds),
                duration(c.maintenance_seconds),
                duration(c.no_data_seconds),
                percentiles(c),
                c.results.to_string(),
            ]
        })
        .collect();
    out.push_str(&render(
        &[
            "CHECK",
            "AVAILABILITY",
            "DOWN",
            "OUTAGES",
            "MTTR",
            "MTBF",
            "MAINTENANCE",
            "NO DATA",
            "P50/P95/P99 MS",
            "RESULTS",
        ],
        &rows,
    ));
    for check in &report.checks {
        if check.outages.is_empty() && check.maintenance.is_empty() && check.no_data.is_empty() {
            continue;
        }
        out.push_str(&format!("\n{} ({})\n", check.check_id, check.target));
        for outage in &check.outages {
            out.push_str(&format!(
                "  outage   {} to {}  {} (counted {})  at {}\n",
                rfc3339(outage.started_at),
                outage
                    .ended_at
                    .map_or_else(|| "now".to_owned(), |t| rfc3339(Some(t))),
                duration(outage.duration_seconds),
                duration(outage.counted_seconds),
                outage.locations.join(", ")
            ));
        }
        for (what, spans) in [
            ("maintenance", &check.maintenance),
            ("no data", &check.no_data),
        ] {
            for span in spans {
                out.push_str(&format!(
                    "  {what:<11} {} to {}\n",
                    rfc3339(span.start),
                    rfc3339(span.end)
                ));
            }
        }
    }
    out
}

/// A CSV field, quoted when it must be (RFC 4180).
fn csv_field(text: &str) -> String {
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

/// The report as CSV: one line per check under a header line.
pub(crate) fn csv(report: &AvailabilityReport) -> String {
    let optional = |v: Option<f64>| v.map(|v| v.to_string()).unwrap_or_default();
    let mut out = String::from(
        "check_id,target,from,to,period_seconds,availability_percent,up_seconds,down_seconds,maintenance_seconds,no_data_seconds,outages,mttr_seconds,mtbf_seconds,p50_ms,p95_ms,p99_ms,results,ok_results\n",
    );
    for c in &report.checks {
        let fields = [
            csv_field(&c.check_id),
            csv_field(&c.target),
            rfc3339(report.start),
            rfc3339(report.end),
            c.period_seconds.to_string(),
            optional(c.availability_percent),
            c.up_seconds.to_string(),
            c.down_seconds.to_string(),
            c.maintenance_seconds.to_string(),
            c.no_data_seconds.to_string(),
            c.outage_count.to_string(),
            optional(c.mttr_seconds),
            optional(c.mtbf_seconds),
            optional(c.response_time_p50_ms),
            optional(c.response_time_p95_ms),
            optional(c.response_time_p99_ms),
            c.results.to_string(),
            c.ok_results.to_string(),
        ];
        out.push_str(&fields.join(","));
        out.push('\n');
    }
    out
}

fn spans_json(spans: &[fleetmon::pb::ReportSpan]) -> Value {
    spans
        .iter()
        .map(|s| json!({"start": rfc3339(s.start), "end": rfc3339(s.end)}))
        .collect()
}

/// The report as JSON, as the CLI prints it and the dashboard serves it.
pub(crate) fn report_json(report: &AvailabilityReport) -> Value {
    let checks: Vec<Value> = report
        .checks
        .iter()
        .map(|c| {
            json!({
                "check_id": c.check_id,
                "target": c.target,
                "deleted": c.deleted,
                "period_seconds": c.period_seconds,
                "availability_percent": c.availability_percent,
                "up_seconds": c.up_seconds,
                "down_seconds": c.down_seconds,
                "maintenance_seconds": c.maintenance_seconds,
                "no_data_seconds": c.no_data_seconds,
                "outage_count": c.outage_count,
                "mttr_seconds": c.mttr_seconds,
                "mtbf_seconds": c.mtbf_seconds,
                "response_time_p50_ms": c.response_time_p50_ms,
                "response_time_p95_ms": c.response_time_p95_ms,
                "response_time_p99_ms": c.response_time_p99_ms,
                "results": c.results,
                "ok_results": c.ok_results,
                "outages": c.outages.iter().map(|o| json!({
                    "alert_id": o.alert_id,
                    "started_at": rfc3339(o.started_at),
                    "ended_at": o.ended_at.map(|t| rfc3339(Some(t))),
                    "duration_seconds": o.duration_seconds,
                    "counted_seconds": o.counted_seconds,
                    "locations": o.locations,
                    "recorded_at": rfc3339(o.recorded_at),
                    "resolved_recorded_at": o.resolved_recorded_at.map(|t| rfc3339(Some(t))),
                })).collect::<Vec<_>>(),
                "maintenance": spans_json(&c.maintenance),
                "no_data": spans_json(&c.no_data),
            })
        })
        .collect();
    json!({
        "from": rfc3339(report.start),
        "to": rfc3339(report.end),
        "as_of": rfc3339(report.as_of),
        "checks": checks,
    })
}

/// A document that stands alone (no script, no outside resource), to publish or sign.
fn html(report: &AvailabilityReport) -> String {
    let title = escape(&heading(report));
    let mut body = String::new();
    body.push_str(
        "<table><thead><tr><th>Check</th><th>Availability</th><th>Down</th><th>Outages</th>\
         <th>MTTR</th><th>MTBF</th><th>Maintenance</th><th>No data</th>\
         <th>p50 / p95 / p99 ms</th><th>Results</th></tr></thead><tbody>",
    );
    for c in &report.checks {
        body.push_str(&format!(
            "<tr><th scope=\"row\">{}<br><small>{}</small></th><td>{}</td><td>{}</td><td>{}</td>\
             <td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            escape(&c.check_id),
            escape(&c.target),
            percent(c.availability_percent),
            duration(c.down_seconds),
            c.outage_count,
            optional_duration(c.mttr_seconds),
            optional_duration(c.mtbf_seconds),
            duration(c.maintenance_seconds),
            duration(c.no_data_seconds),
            percentiles(c),
            c.results
        ));
    }
    body.push_str("</tbody></table>");
    for c in report.checks.iter().filter(|c| !c.outages.is_empty()) {
        body.push_str(&format!(
            "<h2>Outages of {}</h2><table><thead><tr><th>Started</th><th>Ended</th>\
             <th>Lasted</th><th>Counted</th><th>Locations</th></tr></thead><tbody>",
            escape(&c.check_id)
        ));
        for o in &c.outages {
            body.push_str(&format!(
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                rfc3339(o.started_at),
                o.ended_at
                    .map_or_else(|| "ongoing".to_owned(), |t| rfc3339(Some(t))),
                duration(o.duration_seconds),
                duration(o.counted_seconds),
                escape(&o.locations.join(", "))
            ));
        }
        body.push_str("</tbody></table>");
    }
    format!(
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>body{{font-family:system-ui,sans-serif;margin:2rem;color:#1d2430}}\
         table{{border-collapse:collapse;margin:1rem 0}}th,td{{border:1px solid #ccd;padding:.3rem .6rem;text-align:left}}\
         small{{color:#556}}</style></head><body><h1>{title}</h1>{body}\
         <p><small>Availability is up / (up + down): time in maintenance and time without data \
         are counted apart, never as up. Definitions: docs/REPORTS.md.</small></p></body></html>\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_to_the_second_and_percentages_never_round_up() {
        assert_eq!(duration(0.0), "0 s");
        assert_eq!(duration(90.0), "1 min 30 s");
        assert_eq!(duration(3725.4), "1 h 02 min 05 s");
        assert_eq!(percent(Some(99.99999)), "99.9999 %");
        assert_eq!(percent(None), "no data");
        assert_eq!(csv_field("a,\"b\""), "\"a,\"\"b\"\"\"");
        assert_eq!(csv_field("plain"), "plain");
    }
}

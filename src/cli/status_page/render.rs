//! A page of a snapshot as HTML (no script needed), JSON, an Atom feed of its outages
//! and SVG badges. Only the checks the page lists appear, by their public names; every
//! text is escaped.
//!
//! Pages are written into a `String` with `write!`, which cannot fail there: the
//! `let _ = write!(…)` below drop a `fmt::Result` that is always `Ok`.

use std::fmt::Write as _;
use std::time::SystemTime;

use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::cli::table::escape;

use super::config::{PageConfig, PublishedCheck};
use super::snapshot::{CheckStatus, Day, Incident, Maintenance, Schedule, Snapshot, State};

/// Incidents and outages listed as recent: those resolved within this many days.
const RECENT_DAYS: u64 = 14;

/// The page's state as its banner says it: the worst of its checks'.
pub(crate) fn overall(page: &PageConfig, snapshot: &Snapshot) -> (State, &'static str) {
    let worst = published(page)
        .filter_map(|check| snapshot.checks.get(&check.id))
        .map(|status| status.state)
        .filter(|state| *state != State::NoData)
        .max()
        .unwrap_or(State::NoData);
    let text = match worst {
        State::Operational => "All systems operational",
        State::NoData => "No data yet",
        State::Maintenance => "Maintenance in progress",
        State::Degraded => "Some locations report problems",
        State::Outage => "Outage",
    };
    (worst, text)
}

/// Every check the page lists, in order.
fn published(page: &PageConfig) -> impl Iterator<Item = &PublishedCheck> {
    page.groups.iter().flat_map(|group| &group.checks)
}

/// The public name of `check_id` on `page`, if the page lists it.
fn name_on<'a>(page: &'a PageConfig, check_id: &str) -> Option<&'a str> {
    published(page)
        .find(|check| check.id == check_id)
        .map(|check| check.name.as_str())
}

/// The page's incidents: about a check it publishes (and, unless the page says
/// otherwise, also those an outage opened by itself), open or resolved within `days`,
/// newest first.
fn incidents<'a>(page: &PageConfig, snapshot: &'a Snapshot, days: u64) -> Vec<&'a Incident> {
    let recent = snapshot.taken - std::time::Duration::from_secs(days * 86_400);
    snapshot
        .incidents
        .iter()
        .filter(|i| i.check_ids.iter().any(|id| name_on(page, id).is_some()))
        .filter(|i| page.automatic_incidents || !i.automatic)
        .filter(|i| i.resolved.is_none_or(|resolved| resolved > recent))
        .collect()
}

/// The public names of an incident's checks on `page`.
fn affected<'a>(page: &'a PageConfig, incident: &Incident) -> Vec<&'a str> {
    incident
        .check_ids
        .iter()
        .filter_map(|id| name_on(page, id))
        .collect()
}

/// An incident's title on `page`: its own, or for one an outage opened, "NAME is down".
fn incident_title(page: &PageConfig, incident: &Incident) -> String {
    if incident.title.is_empty() {
        format!("{} is down", affected(page, incident).join(", "))
    } else {
        incident.title.clone()
    }
}

/// A status as the page says it: `Investigating`.
fn status_label(status: &str) -> String {
    let mut chars = status.chars();
    chars
        .next()
        .map(|first| first.to_uppercase().chain(chars).collect())
        .unwrap_or_default()
}

/// The page's maintenance windows.
fn windows<'a>(page: &PageConfig, snapshot: &'a Snapshot) -> Vec<&'a Maintenance> {
    snapshot
        .maintenance
        .iter()
        .filter(|w| name_on(page, &w.check_id).is_some())
        .collect()
}

/// `t` as RFC 3339 in UTC, to the second.
pub(crate) fn rfc3339(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t)
        .replace_nanosecond(0)
        .unwrap_or(OffsetDateTime::UNIX_EPOCH);
    t.format(&Rfc3339).unwrap_or_default()
}

/// `t` as people read it: `2026-12-01 14:05 UTC`.
fn shown(t: SystemTime) -> String {
    let t = OffsetDateTime::from(t);
    format!("{} {:02}:{:02} UTC", t.date(), t.hour(), t.minute())
}

/// A length of time as people read it: `1 h 05 min`, `3 min`, `45 s`.
fn duration(seconds: u64) -> String {
    match seconds {
        0..60 => format!("{seconds} s"),
        60..3600 => format!("{} min", seconds / 60),
        _ => format!("{} h {:02} min", seconds / 3600, seconds % 3600 / 60),
    }
}

/// A share as a percentage with two decimals, never rounded up to 100.
fn percent(share: f64) -> String {
    let hundredths = (share * 10_000.0).floor() / 100.0;
    format!("{hundredths:.2} %")
}

fn weekday(day: i16) -> &'static str {
    ["Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"]
        .get(usize::try_from(day).unwrap_or(7))
        .copied()
        .unwrap_or("?")
}

fn schedule_text(when: &Schedule) -> String {
    match when {
        Schedule::Once { starts, ends } => format!("{} to {}", shown(*starts), shown(*ends)),
        Schedule::Weekly {
            days,
            start,
            minutes,
            time_zone,
        } => {
            let days: Vec<&str> = days.iter().map(|d| weekday(*d)).collect();
            format!(
                "every {} at {start} ({time_zone}) for {}",
                days.join(", "),
                duration(u64::try_from(*minutes).unwrap_or(0) * 60)
            )
        }
    }
}

/// The bar class and tooltip of a day.
fn day_bar(day: &Day) -> (&'static str, String) {
    let incidents = match day.incidents {
        0 => String::new(),
        1 => ", 1 outage".to_owned(),
        n => format!(", {n} outages"),
    };
    match day.availability {
        None => ("n", format!("{}: no data", day.date)),
        Some(share) => {
            let class = if day.outage_seconds == 0 {
                "u"
            } else if share >= 0.99 {
                "p"
            } else {
                "d"
            };
            let down = if day.outage_seconds > 0 {
                format!(", down {}", duration(day.outage_seconds))
            } else {
                String::new()
            };
            (
                class,
                format!(
                    "{}: {} available{down}{incidents}",
                    day.date,
                    percent(share)
                ),
            )
        }
    }
}

/// The page as HTML: complete without JavaScript; `refresh_seconds` tells the small
/// script how often to fetch it again.
pub(crate) fn html(page: &PageConfig, snapshot: &Snapshot, refresh_seconds: u64) -> String {
    let (state, banner) = overall(page, snapshot);
    let mut out = String::with_capacity(16 * 1024);
    let base = page.path.trim_end_matches('/');
    let _ = write!(
        out,
        "<!doctype html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><link rel=\"stylesheet\" href=\"/static/status.css\">\
         <link rel=\"alternate\" type=\"application/atom+xml\" title=\"Outages\" href=\"{base}/feed.atom\">\
         <script src=\"/static/status.js\" defer></script></head>\
         <body data-refresh=\"{refresh_seconds}\"><main>\
         <header><h1>{title}</h1>",
        title = escape(&page.title),
    );
    if !page.description.is_empty() {
        let _ = write!(
            out,
            "<p class=\"description\">{}</p>",
            escape(&page.description)
        );
    }
    let _ = write!(
        out,
        "</header><p class=\"banner {}\" id=\"banner\">{banner}</p>",
        state.as_str()
    );
    let windows = windows(page, snapshot);
    if !windows.is_empty() {
        out.push_str("<section id=\"maintenance\"><h2>Maintenance</h2><ul>");
        for window in &windows {
            let name = name_on(page, &window.check_id).unwrap_or_default();
            let _ = write!(
                out,
                "<li class=\"{}\"><strong>{}</strong> {}: {} <span class=\"when\">{}</span></li>",
                if window.active { "active" } else { "scheduled" },
                if window.active {
                    "In progress"
                } else {
                    "Scheduled"
                },
                escape(name),
                escape(&window.reason),
                escape(&schedule_text(&window.when)),
            );
        }
        out.push_str("</ul></section>");
    }
    let incidents = incidents(page, snapshot, RECENT_DAYS);
    for group in &page.groups {
        let _ = write!(
            out,
            "<section class=\"group\"><h2>{}</h2>",
            escape(&group.name)
        );
        for check in &group.checks {
            check_html(&mut out, check, snapshot.checks.get(&check.id));
        }
        out.push_str("</section>");
    }
    out.push_str("<section id=\"incidents\"><h2>Incidents</h2>");
    if incidents.is_empty() {
        let _ = write!(out, "<p>No incident in the last {RECENT_DAYS} days.</p>");
    }
    for incident in &incidents {
        let _ = write!(
            out,
            "<article class=\"incident {}\" id=\"incident-{}\"><h3>{}</h3> \
             <span class=\"status\">{}</span><p class=\"affects\">Affects {}</p><ol class=\"timeline\">",
            if incident.resolved.is_some() {
                "resolved"
            } else {
                "open"
            },
            incident.id,
            escape(&incident_title(page, incident)),
            status_label(&incident.status),
            escape(&affected(page, incident).join(", ")),
        );
        for (at, status, message) in incident.updates.iter().rev() {
            let _ = write!(
                out,
                "<li><strong>{}</strong> {} <span class=\"when\">{}</span></li>",
                status_label(status),
                escape(message),
                shown(*at)
            );
        }
        out.push_str("</ol></article>");
    }
    let _ = write!(
        out,
        "</section><footer><p>Updated {} · <a href=\"{base}/api/v1/status.json\">JSON</a> · \
         <a href=\"{base}/feed.atom\">Incident feed</a></p>\
         <p class=\"legend\"><i class=\"u\"></i> no outage <i class=\"p\"></i> under 1 % down \
         <i class=\"d\"></i> 1 % or more down <i class=\"n\"></i> no data · a day is a UTC day; \
         down means a quorum of locations agreed</p></footer></main></body></html>",
        shown(snapshot.taken)
    );
    out
}

/// One check's row: its name, state, 90 bars and uptime.
fn check_html(out: &mut String, check: &PublishedCheck, status: Option<&CheckStatus>) {
    let state = status.map_or(State::NoData, |s| s.state);
    let _ = write!(
        out,
        "<article class=\"check\" id=\"check-{id}\" data-state=\"{state}\"><h3>{name}</h3>\
         <span class=\"state {state}\">{label}</span>",
        id = escape(&check.id),
        name = escape(&check.name),
        state = state.as_str(),
        label = state_detail(state, status),
    );
    if let Some(status) = status.filter(|_| check.show_target) {
        let _ = write!(out, "<p class=\"target\">{}</p>", escape(&status.target));
    }
    out.push_str("<ol class=\"days\">");
    if let Some(status) = status {
        for day in &status.days {
            let (class, text) = day_bar(day);
            let _ = write!(out, "<li class=\"{class}\" title=\"{text}\"></li>");
        }
    }
    out.push_str("</ol>");
    let days = super::snapshot::DAYS;
    let with_data = status.map_or(0, |s| {
        s.days.iter().filter(|d| d.availability.is_some()).count()
    });
    let _ = match status.and_then(|s| s.uptime(days)) {
        None => write!(
            out,
            "<p class=\"uptime\">No data in the last {days} days</p>"
        ),
        Some(share) if with_data == days => write!(
            out,
            "<p class=\"uptime\">{} available over the last {days} days</p>",
            percent(share)
        ),
        Some(share) => write!(
            out,
            "<p class=\"uptime\">{} available over the {with_data} days with data of the last {days}</p>",
            percent(share)
        ),
    };
    out.push_str("</article>");
}

/// A state as a check's row says it, with how many locations where that matters.
fn state_detail(state: State, status: Option<&CheckStatus>) -> String {
    match (state, status) {
        (State::Degraded, Some(s)) => format!(
            "Degraded ({} of {} locations failing)",
            s.failing, s.locations
        ),
        (State::Outage, Some(s)) => match s.outage_since {
            Some(since) => format!("Outage since {}", shown(since)),
            None => "Outage".to_owned(),
        },
        (state, _) => state.label().to_owned(),
    }
}

/// The page as JSON (`/api/v1/status.json`).
pub(crate) fn json(page: &PageConfig, snapshot: &Snapshot) -> Value {
    let (state, banner) = overall(page, snapshot);
    let groups: Vec<Value> = page
        .groups
        .iter()
        .map(|group| {
            let checks: Vec<Value> = group
                .checks
                .iter()
                .map(|check| {
                    let status = snapshot.checks.get(&check.id);
                    let days: Vec<Value> = status
                        .map(|s| {
                            s.days
                                .iter()
                                .map(|d| {
                                    json!({
                                        "date": d.date.to_string(),
                                        "availability_percent": d.availability.map(|a| a * 100.0),
                                        "outage_seconds": d.outage_seconds,
                                        "outages": d.incidents,
                                    })
                                })
                                .collect()
                        })
                        .unwrap_or_default();
                    let mut value = json!({
                        "id": check.id,
                        "name": check.name,
                        "state": status.map_or(State::NoData, |s| s.state).as_str(),
                        "locations": status.map_or(0, |s| s.locations),
                        "locations_failing": status.map_or(0, |s| s.failing),
                        "outage_since": status.and_then(|s| s.outage_since).map(rfc3339),
                        "uptime_30d_percent": status.and_then(|s| s.uptime(30)).map(|a| a * 100.0),
                        "uptime_90d_percent": status.and_then(|s| s.uptime(90)).map(|a| a * 100.0),
                        "days": days,
                    });
                    if check.show_target
                        && let Some(status) = status
                    {
                        value["target"] = json!(status.target);
                    }
                    value
                })
                .collect();
            json!({"name": group.name, "checks": checks})
        })
        .collect();
    let recent = snapshot.taken - std::time::Duration::from_secs(RECENT_DAYS * 86_400);
    let outages: Vec<Value> = snapshot
        .outages
        .iter()
        .rev()
        .filter(|o| o.resolved.is_none_or(|resolved| resolved > recent))
        .filter_map(|o| {
            let name = name_on(page, &o.check_id)?;
            let end = o.resolved.unwrap_or(snapshot.taken);
            Some(json!({
                "check": o.check_id,
                "name": name,
                "started_at": rfc3339(o.started),
                "resolved_at": o.resolved.map(rfc3339),
                "duration_seconds": end.duration_since(o.started).unwrap_or_default().as_secs(),
            }))
        })
        .collect();
    let incidents: Vec<Value> = incidents(page, snapshot, RECENT_DAYS)
        .into_iter()
        .map(|i| {
            json!({
                "id": i.id,
                "title": incident_title(page, i),
                "status": i.status,
                "affects": affected(page, i),
                "opened_at": rfc3339(i.opened),
                "resolved_at": i.resolved.map(rfc3339),
                "updates": i.updates.iter().map(|(at, status, message)| json!({
                    "at": rfc3339(*at),
                    "status": status,
                    "message": message,
                })).collect::<Vec<_>>(),
            })
        })
        .collect();
    let maintenance: Vec<Value> = windows(page, snapshot)
        .into_iter()
        .map(|w| {
            let mut value = json!({
                "id": w.id,
                "check": w.check_id,
                "name": name_on(page, &w.check_id),
                "reason": w.reason,
                "active": w.active,
            });
            match &w.when {
                Schedule::Once { starts, ends } => {
                    value["starts_at"] = json!(rfc3339(*starts));
                    value["ends_at"] = json!(rfc3339(*ends));
                }
                Schedule::Weekly {
                    days,
                    start,
                    minutes,
                    time_zone,
                } => {
                    value["weekly"] = json!({
                        "days": days.iter().map(|d| weekday(*d)).collect::<Vec<_>>(),
                        "start": start,
                        "minutes": minutes,
                        "time_zone": time_zone,
                    });
                }
            }
            value
        })
        .collect();
    json!({
        "page": {"title": page.title, "path": page.path},
        "updated_at": rfc3339(snapshot.taken),
        "status": {"state": state.as_str(), "description": banner},
        "groups": groups,
        "incidents": incidents,
        "outages": outages,
        "maintenance": maintenance,
    })
}

/// The page's incidents of the last 90 days as an Atom feed, newest first: an entry
/// per incident, updated with each of its updates.
pub(crate) fn atom(page: &PageConfig, snapshot: &Snapshot, public_url: &str) -> String {
    let base = format!("{}{}", public_url, page.path.trim_end_matches('/'));
    let incidents = incidents(page, snapshot, super::snapshot::DAYS as u64);
    let last_update = |i: &Incident| i.updates.last().map_or(i.opened, |(at, ..)| *at);
    let updated = incidents
        .iter()
        .map(|i| last_update(i))
        .max()
        .unwrap_or(SystemTime::UNIX_EPOCH);
    let mut out = String::new();
    let _ = write!(
        out,
        "<?xml version=\"1.0\" encoding=\"utf-8\"?>\n<feed xmlns=\"http://www.w3.org/2005/Atom\">\
         <title>{} — incidents</title><id>urn:fleetmon:status:{}</id><updated>{}</updated>\
         <link rel=\"alternate\" href=\"{}/\"/><link rel=\"self\" href=\"{}/feed.atom\"/>",
        escape(&page.title),
        escape(&page.path),
        rfc3339(updated),
        escape(&base),
        escape(&base),
    );
    for incident in incidents {
        let timeline: Vec<String> = incident
            .updates
            .iter()
            .rev()
            .map(|(at, status, message)| {
                format!("{}: {} — {}", shown(*at), status_label(status), message)
            })
            .collect();
        let _ = write!(
            out,
            "<entry><id>urn:fleetmon:incident:{}</id><title>[{}] {}</title><updated>{}</updated>\
             <published>{}</published><link rel=\"alternate\" href=\"{}/#incident-{}\"/>\
             <author><name>{}</name></author><summary>{}</summary></entry>",
            incident.id,
            status_label(&incident.status),
            escape(&incident_title(page, incident)),
            rfc3339(last_update(incident)),
            rfc3339(incident.opened),
            escape(&base),
            incident.id,
            escape(&page.title),
            escape(&timeline.join("\n")),
        );
    }
    out.push_str("</feed>\n");
    out
}

/// A flat two-part badge, `label | value`, in `colour`.
fn badge(label: &str, value: &str, colour: &str) -> String {
    // Verdana 11px averages about 7 px a character.
    let width = |text: &str| 10 + 7 * text.chars().count();
    let (left, right) = (width(label), width(value));
    let total = left + right;
    format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{total}\" height=\"20\" role=\"img\" \
         aria-label=\"{label}: {value}\"><title>{label}: {value}</title>\
         <rect width=\"{left}\" height=\"20\" fill=\"#555\"/>\
         <rect x=\"{left}\" width=\"{right}\" height=\"20\" fill=\"{colour}\"/>\
         <g fill=\"#fff\" font-family=\"Verdana,DejaVu Sans,sans-serif\" font-size=\"11\" \
         text-anchor=\"middle\"><text x=\"{lx}\" y=\"14\">{label}</text>\
         <text x=\"{vx}\" y=\"14\">{value}</text></g></svg>\n",
        label = escape(label),
        value = escape(value),
        lx = left / 2,
        vx = left + right / 2,
    )
}

const GREEN: &str = "#2e9e5b";
const AMBER: &str = "#d99a00";
const RED: &str = "#d0342c";
const BLUE: &str = "#3a72c4";
const GREY: &str = "#8a8a8a";

/// `/badge/CHECK/status.svg`.
pub(crate) fn status_badge(status: Option<&CheckStatus>) -> String {
    let state = status.map_or(State::NoData, |s| s.state);
    let colour = match state {
        State::Operational => GREEN,
        State::Degraded => AMBER,
        State::Outage => RED,
        State::Maintenance => BLUE,
        State::NoData => GREY,
    };
    badge("status", &state.label().to_ascii_lowercase(), colour)
}

/// `/badge/CHECK/uptime-30d.svg`.
pub(crate) fn uptime_badge(status: Option<&CheckStatus>) -> String {
    match status.and_then(|s| s.uptime(30)) {
        None => badge("uptime 30d", "no data", GREY),
        Some(share) => {
            let colour = if share >= 0.999 {
                GREEN
            } else if share >= 0.99 {
                AMBER
            } else {
                RED
            };
            badge("uptime 30d", &percent(share).replace(' ', ""), colour)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentages_are_never_rounded_up_to_a_hundred() {
        assert_eq!(percent(0.999_99), "99.99 %");
        assert_eq!(percent(1.0), "100.00 %");
        assert_eq!(percent(0.5), "50.00 %");
    }

    #[test]
    fn durations_read_as_people_say_them() {
        assert_eq!(duration(45), "45 s");
        assert_eq!(duration(180), "3 min");
        assert_eq!(duration(3900), "1 h 05 min");
    }

    #[test]
    fn text_is_escaped() {
        assert_eq!(
            escape("<script>\"x\" & 'y'</script>"),
            "&lt;script&gt;&quot;x&quot; &amp; &#39;y&#39;&lt;/script&gt;"
        );
    }
}

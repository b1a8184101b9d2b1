//! A check's result (`SiteCheck`) for a site: the skeleton a probe fills in, a failed
//! one, and settling it as passed or failed. Shared by the HTTP prober and the TCP
//! and DNS probers.

use std::time::{Duration, SystemTime};

use fleetmon::checks::Site;
use fleetmon::pb::{CheckFailure, SiteCheck};

/// Marks `check` passed, or failed with the kind and message of `failure`.
pub(crate) fn settle(check: &mut SiteCheck, failure: Option<(CheckFailure, String)>) {
    match failure {
        Some((kind, message)) => {
            check.ok = false;
            check.failure = kind as i32;
            check.error_message = message;
        }
        None => check.ok = true,
    }
}

/// The skeleton of a result of `site` started now, to be filled in and settled.
pub(crate) fn skeleton(site: &Site) -> SiteCheck {
    failed(
        site,
        SystemTime::now(),
        Duration::ZERO,
        CheckFailure::Unspecified,
        String::new(),
    )
}

pub(crate) fn millis(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// A check with no response (or, with `Unspecified`, the skeleton of one).
pub(crate) fn failed(
    site: &Site,
    checked_at: SystemTime,
    elapsed: Duration,
    kind: CheckFailure,
    message: String,
) -> SiteCheck {
    SiteCheck {
        checked_at: Some(prost_types::Timestamp::from(checked_at)),
        url: site.url.to_string(),
        method: site.method.to_string(),
        ok: false,
        failure: kind as i32,
        error_message: message,
        response_time_ms: millis(elapsed),
        regex: site
            .regex
            .as_ref()
            .map(|r| r.as_str().to_owned())
            .unwrap_or_default(),
        check_id: site
            .check
            .as_ref()
            .map(|c| c.id.clone())
            .unwrap_or_default(),
        check_version: site.check.as_ref().map_or(0, |c| c.version),
        interval_seconds: u32::try_from(site.interval.as_secs()).unwrap_or(u32::MAX),
        ..Default::default()
    }
}

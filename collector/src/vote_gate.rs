//! Whose results count: a site check naming a central check (`check_id`) is a vote in
//! that check's quorum, so it is published only when it comes from an agent the check
//! is assigned to. The certificate proves who sent a result; this proves the sender
//! had been asked. Sites from an agent's own file carry no `check_id` and vote nowhere.
//!
//! Assigned means: the check exists, is active and selects the agent by name or by the
//! labels that count for it (`assignment.trust_agent_labels`), or the check was in the
//! last set sent to the agent or left it less than a few of its intervals ago (a result
//! of a change in flight). A version newer than the catalog's was never sent.

use std::time::{Duration, Instant};

use fleetmon::pb::{CheckDefinition, SiteCheck};
use fleetmon::samples::{Reason, Violation};

use crate::assignment::selects;
use crate::check_catalog::CatalogView;
use crate::fleet_state::FleetState;

/// The shortest time results of a check dropped from an agent's set still count.
pub const MIN_RESULT_GRACE: Duration = Duration::from_secs(30);

/// The longest such time (and how long a dropped check is remembered).
pub const MAX_RESULT_GRACE: Duration = Duration::from_secs(86_400);

/// How long after a check left an agent's set its results still count: three of its
/// intervals, at least [`MIN_RESULT_GRACE`].
fn grace(check: Option<&CheckDefinition>) -> Duration {
    let interval = check.map_or(0, |c| u64::from(c.interval_seconds));
    Duration::from_secs(3 * interval).clamp(MIN_RESULT_GRACE, MAX_RESULT_GRACE)
}

/// Admits `site` from `agent_id` when it names no central check or one assigned to
/// the agent; otherwise the violation names the check and why its result counts
/// nowhere.
pub fn admit(
    view: &CatalogView,
    fleet: &FleetState,
    agent_id: &str,
    site: &SiteCheck,
    now: Instant,
) -> Result<(), Violation> {
    let id = site.check_id.as_str();
    if id.is_empty() {
        return Ok(());
    }
    let check = view.records.get(id).map(|c| &**c);
    let sent = fleet.assigned_within(agent_id, id, grace(check), now) == Some(true);
    let Some(check) = check else {
        return if sent {
            Ok(())
        } else {
            Err(Violation::new(
                Reason::UnknownCheck,
                format!(
                    "check_id `{id}` names no check: a result counts only for a check assigned to its agent"
                ),
            ))
        };
    };
    if site.check_version > check.version {
        return Err(Violation::new(
            Reason::UnknownCheckVersion,
            format!(
                "check_version {} of check `{id}` was never sent: its current version is {}",
                site.check_version, check.version
            ),
        ));
    }
    // A heartbeat's signals come from its listener and from Control/Ping only.
    if fleetmon::checks::heartbeat::of(check).is_some() {
        return Err(Violation::new(
            Reason::UnassignedCheck,
            format!(
                "check `{id}` is a heartbeat: no agent runs it (signal it with fleetmon-agent ping)"
            ),
        ));
    }
    // The set last sent answers most results; the agent's labels are copied only
    // when it does not.
    let selected = sent
        || (!check.paused
            && check
                .assignment
                .as_ref()
                .is_some_and(|a| selects(a, agent_id, &fleet.labels(agent_id))));
    if selected {
        return Ok(());
    }
    Err(Violation::new(
        Reason::UnassignedCheck,
        format!("check `{id}` is not assigned to agent `{agent_id}`: its result counts nowhere"),
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use fleetmon::pb::{AgentReport, Assignment};

    use super::*;

    fn view(checks: &[CheckDefinition]) -> CatalogView {
        let mut view = CatalogView::default();
        for check in checks {
            view.records
                .insert(check.id.clone(), Arc::new(check.clone()));
        }
        view
    }

    fn check(id: &str, version: u64, agents: &[&str]) -> CheckDefinition {
        CheckDefinition {
            id: id.into(),
            version,
            interval_seconds: 60,
            assignment: Some(Assignment {
                agents: agents.iter().map(|a| (*a).to_owned()).collect(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn result(check_id: &str, version: u64) -> SiteCheck {
        SiteCheck {
            check_id: check_id.into(),
            check_version: version,
            ..Default::default()
        }
    }

    fn refusal(r: Result<(), Violation>) -> (&'static str, String) {
        let v = r.unwrap_err();
        (v.reason.as_str(), v.message)
    }

    #[test]
    fn only_assigned_agents_vote_and_a_dropped_check_counts_for_a_grace_time() {
        let fleet = FleetState::new();
        let view = view(&[check("shop", 3, &["eu-1"])]);
        let now = Instant::now();
        admit(&view, &fleet, "eu-1", &result("shop", 3), now).unwrap();
        admit(&view, &fleet, "eu-1", &result("shop", 2), now).unwrap();
        admit(&view, &fleet, "eu-1", &result("", 0), now).unwrap();
        assert_eq!(
            refusal(admit(&view, &fleet, "intruder", &result("shop", 3), now)),
            (
                "unassigned_check",
                "check `shop` is not assigned to agent `intruder`: its result counts nowhere"
                    .to_owned()
            )
        );
        assert_eq!(
            refusal(admit(&view, &fleet, "eu-1", &result("ghost", 1), now)),
            (
                "unknown_check",
                "check_id `ghost` names no check: a result counts only for a check assigned to its agent".to_owned()
            )
        );
        assert_eq!(
            refusal(admit(&view, &fleet, "eu-1", &result("shop", 4), now)),
            (
                "unknown_check_version",
                "check_version 4 of check `shop` was never sent: its current version is 3"
                    .to_owned()
            )
        );
        // `us-1` was sent `shop` (say, by labels since changed), then a set without it:
        // three intervals (180 s) later its results no longer count.
        fleet.reported("us-1", &AgentReport::default(), BTreeMap::new());
        fleet.sent_set("us-1", ["shop"].into_iter(), now, MAX_RESULT_GRACE);
        admit(&view, &fleet, "us-1", &result("shop", 3), now).unwrap();
        fleet.sent_set("us-1", std::iter::empty(), now, MAX_RESULT_GRACE);
        admit(
            &view,
            &fleet,
            "us-1",
            &result("shop", 3),
            now + Duration::from_secs(179),
        )
        .unwrap();
        assert_eq!(
            refusal(admit(
                &view,
                &fleet,
                "us-1",
                &result("shop", 3),
                now + Duration::from_secs(180)
            ))
            .0,
            "unassigned_check"
        );
    }
}

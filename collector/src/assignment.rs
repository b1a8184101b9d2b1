//! Which agents run which central checks: an assignment selects agents by name, by
//! labels (every pair must match) or all of them, and each agent's effective set is
//! the active checks that select it, named by a hash of their ids and versions.
//!
//! An index per catalog view (built once, on first use) finds an agent's candidates
//! from its name and labels, so a change costs each connected agent the checks that
//! could be its own rather than a scan of the whole catalog.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::SystemTime;

use fleetmon::pb::{Assignment, CheckDefinition, CheckSet};
use sha2::{Digest, Sha256};

use crate::compacted_log::LogView;

/// The checks as the catalog holds them (`check_catalog::CatalogView`).
type CatalogView = LogView<CheckDefinition>;

/// Whether `assignment` selects the agent `agent_id` with `labels`.
pub fn selects(assignment: &Assignment, agent_id: &str, labels: &BTreeMap<String, String>) -> bool {
    assignment.all
        || assignment.agents.iter().any(|a| a == agent_id)
        || (!assignment.labels.is_empty()
            && fleetmon::labels::includes(&assignment.labels, |key| labels.get(key)))
}

/// The active (not paused) checks of a view, by what could select an agent.
#[derive(Debug, Default)]
pub struct AssignmentIndex {
    all: Vec<Arc<CheckDefinition>>,
    by_agent: HashMap<String, Vec<Arc<CheckDefinition>>>,
    /// Under one of the assignment's label pairs (any: candidates are checked in full).
    by_label: HashMap<(String, String), Vec<Arc<CheckDefinition>>>,
    /// Heartbeat checks (paused too) by the SHA-256 of their ping token.
    heartbeats: HashMap<String, Arc<CheckDefinition>>,
}

impl AssignmentIndex {
    /// Indexes every active check of `checks`.
    pub fn new(checks: &BTreeMap<String, Arc<CheckDefinition>>) -> Self {
        let mut index = AssignmentIndex::default();
        for check in checks.values() {
            // A heartbeat (paused too) is found by its token; its assignment names who
            // may ping it: no agent runs it.
            if let Some(beat) = fleetmon::checks::heartbeat::of(check) {
                index
                    .heartbeats
                    .insert(beat.token_sha256.clone(), check.clone());
                continue;
            }
            if check.paused {
                continue;
            }
            let Some(assignment) = &check.assignment else {
                continue;
            };
            if assignment.all {
                index.all.push(check.clone());
                continue;
            }
            for agent in &assignment.agents {
                index
                    .by_agent
                    .entry(agent.clone())
                    .or_default()
                    .push(check.clone());
            }
            if let Some((key, value)) = assignment.labels.iter().min() {
                index
                    .by_label
                    .entry((key.clone(), value.clone()))
                    .or_default()
                    .push(check.clone());
            }
        }
        index
    }

    /// The heartbeat check whose ping token has this SHA-256 (hex).
    pub fn heartbeat(&self, token_sha256: &str) -> Option<&Arc<CheckDefinition>> {
        self.heartbeats.get(token_sha256)
    }

    /// The checks that select `agent_id` with `labels`, by id.
    fn matching(
        &self,
        agent_id: &str,
        labels: &BTreeMap<String, String>,
    ) -> BTreeMap<String, Arc<CheckDefinition>> {
        let by_labels = labels
            .iter()
            .filter_map(|(k, v)| self.by_label.get(&(k.clone(), v.clone())))
            .flatten();
        self.all
            .iter()
            .chain(self.by_agent.get(agent_id).into_iter().flatten())
            .chain(by_labels)
            .filter(|c| {
                c.assignment
                    .as_ref()
                    .is_some_and(|a| selects(a, agent_id, labels))
            })
            .map(|c| (c.id.clone(), c.clone()))
            .collect()
    }
}

/// The hash naming a set: hex SHA-256 over its ids and versions, in id order.
fn hash<'a>(checks: impl Iterator<Item = &'a CheckDefinition>) -> String {
    let mut hasher = Sha256::new();
    for check in checks {
        hasher.update(check.id.as_bytes());
        hasher.update([0]);
        hasher.update(check.version.to_be_bytes());
    }
    hasher
        .finalize()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The checks `agent_id` should run now, unless their hash is `unchanged_from` (then
/// `None`, and nothing is copied).
pub fn effective_set(
    view: &CatalogView,
    agent_id: &str,
    labels: &BTreeMap<String, String>,
    unchanged_from: &str,
) -> Option<CheckSet> {
    let matching = view.index().matching(agent_id, labels);
    let hash = hash(matching.values().map(|c| &**c));
    if hash == unchanged_from {
        return None;
    }
    Some(CheckSet {
        checks: matching.values().map(|c| (**c).clone()).collect(),
        hash,
        sent_at: Some(SystemTime::now().into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    #[test]
    fn an_assignment_selects_by_name_label_or_all() {
        let by_label = Assignment {
            labels: [("location".to_owned(), "eu-west".to_owned())].into(),
            ..Default::default()
        };
        assert!(selects(
            &by_label,
            "a",
            &labels(&[("location", "eu-west"), ("role", "edge")])
        ));
        assert!(!selects(
            &by_label,
            "a",
            &labels(&[("location", "us-east")])
        ));
        let by_name = Assignment {
            agents: vec!["web-1".into()],
            ..Default::default()
        };
        assert!(selects(&by_name, "web-1", &labels(&[])));
        assert!(!selects(&by_name, "web-2", &labels(&[])));
        assert!(!selects(&Assignment::default(), "web-1", &labels(&[])));
        let all = Assignment {
            all: true,
            ..Default::default()
        };
        assert!(selects(&all, "anyone", &labels(&[])));
    }

    fn check(id: &str, version: u64, paused: bool, assignment: Assignment) -> Arc<CheckDefinition> {
        Arc::new(CheckDefinition {
            id: id.into(),
            version,
            paused,
            assignment: Some(assignment),
            ..Default::default()
        })
    }

    #[test]
    fn the_set_holds_active_selected_checks_and_its_hash_follows_versions() {
        let all = Assignment {
            all: true,
            ..Default::default()
        };
        let two_labels = Assignment {
            labels: [
                ("location".to_owned(), "eu-west".to_owned()),
                ("role".to_owned(), "edge".to_owned()),
            ]
            .into(),
            agents: vec!["named".into()],
            ..Default::default()
        };
        let mut view = CatalogView::default();
        view.records
            .insert("a".into(), check("a", 1, false, all.clone()));
        view.records
            .insert("b".into(), check("b", 1, true, all.clone()));
        view.records
            .insert("c".into(), check("c", 1, false, two_labels));
        let ids = |set: &CheckSet| set.checks.iter().map(|c| c.id.clone()).collect::<Vec<_>>();
        let edge = labels(&[("location", "eu-west"), ("role", "edge")]);
        let first = effective_set(&view, "x", &edge, "").unwrap();
        assert_eq!(ids(&first), ["a", "c"]);
        let half = effective_set(&view, "x", &labels(&[("location", "eu-west")]), "").unwrap();
        assert_eq!(ids(&half), ["a"], "every label pair must match");
        let named = effective_set(&view, "named", &labels(&[]), "").unwrap();
        assert_eq!(ids(&named), ["a", "c"]);
        assert!(effective_set(&view, "x", &edge, &first.hash).is_none());

        let mut changed = CatalogView::default();
        changed.records = view.records.clone();
        changed
            .records
            .insert("a".into(), check("a", 2, false, all));
        let second = effective_set(&changed, "x", &edge, &first.hash).unwrap();
        assert_ne!(first.hash, second.hash);
    }

    #[test]
    fn a_heartbeat_is_in_no_set_and_is_found_by_its_token() {
        let (_, hash) = fleetmon::checks::heartbeat::new_token();
        let mut beat = (*check(
            "backup",
            1,
            false,
            Assignment {
                all: true,
                ..Default::default()
            },
        ))
        .clone();
        beat.kind = Some(fleetmon::pb::check_definition::Kind::Heartbeat(
            fleetmon::pb::HeartbeatCheck {
                period_seconds: 60,
                token_sha256: hash.clone(),
                ..Default::default()
            },
        ));
        let mut view = CatalogView::default();
        view.records.insert("backup".into(), Arc::new(beat));
        let set = effective_set(&view, "x", &labels(&[]), "").unwrap();
        assert!(set.checks.is_empty(), "{set:?}");
        assert_eq!(view.index().heartbeat(&hash).unwrap().id, "backup");
        assert!(view.index().heartbeat("0").is_none());
    }
}

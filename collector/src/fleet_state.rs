//! The collector's in-memory view of the fleet: who is connected, what each agent
//! sent last. Updated as samples are acknowledged; read by the `Fleet` service.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use fleetmon::identity::PeerIdentity;
use fleetmon::pb::{
    AgentCheckStatus, AgentInfo, AgentLatest, AgentReport, AppliedCheck, HostSample, SiteCheck,
    WatchEvent, watch_event,
};
use prometheus_client::metrics::counter::Counter;
use sha2::Digest as _;
use tokio::sync::broadcast;

use crate::validation::ValidSample;

/// The live view keeps every text of a site result (`url`, `method`, `regex`,
/// `error_message`, `final_url`, `matched_text`) to this many bytes; the rows in
/// PostgreSQL keep them whole.
pub const LIVE_TEXT_BYTES: usize = 512;

/// A `GetLatest` page stops growing once its encoded size passes this.
pub const LATEST_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// Events buffered per `WatchLatest` subscriber before it starts missing some.
const WATCH_BUFFER: usize = 4096;

#[derive(Debug, Default)]
struct AgentEntry {
    hostname: String,
    remote_address: String,
    open_streams: u32,
    connected_since: Option<SystemTime>,
    last_sample_at: Option<SystemTime>,
    samples_received: u64,
    cert_not_after: Option<SystemTime>,
    latest_host: Option<HostSample>,
    /// By check id, or by URL for a site of the agent's own config.
    latest_sites: BTreeMap<String, SiteCheck>,
    /// The labels that select the agent into checks: its token's, and with
    /// `assignment.trust_agent_labels` those it reports.
    labels: BTreeMap<String, String>,
    /// How far its clock is ahead of ours, as its last batch showed (milliseconds).
    clock_offset_ms: Option<i64>,
    /// The labels the agent reports on its control stream (shown, not trusted).
    reported_labels: BTreeMap<String, String>,
    /// The checks of the last set sent to the agent (`None`), and those dropped from
    /// it since, with when (results still in flight for them count for a grace time).
    assigned: HashMap<String, Option<Instant>>,
    control_streams: u32,
    remote_disabled: bool,
    /// What the agent last reported applying, by check id.
    applied: HashMap<String, AppliedCheck>,
}

/// A site result as the live view keeps it: its texts cut to [`LIVE_TEXT_BYTES`].
fn live_copy(site: SiteCheck) -> SiteCheck {
    let mut live = site;
    for text in [
        &mut live.url,
        &mut live.method,
        &mut live.regex,
        &mut live.error_message,
        &mut live.final_url,
        &mut live.matched_text,
    ] {
        fleetmon::samples::truncate_text(text, LIVE_TEXT_BYTES);
    }
    live
}

/// The key of a site result in `latest_sites`.
/// A URL longer than [`LIVE_TEXT_BYTES`] is keyed by its cut form and a hash of it
/// whole, so a key is small however long the URL.
fn site_key(site: &SiteCheck) -> String {
    if !site.check_id.is_empty() {
        return format!("check:{}", site.check_id);
    }
    if site.url.len() <= LIVE_TEXT_BYTES {
        return site.url.clone();
    }
    let mut key = site.url.clone();
    fleetmon::samples::truncate_text(&mut key, LIVE_TEXT_BYTES);
    let digest = sha2::Sha256::digest(site.url.as_bytes());
    key.push('#');
    for byte in &digest[..8] {
        key.push_str(&format!("{byte:02x}"));
    }
    key
}

/// Shared, cheap to clone.
#[derive(Debug, Clone)]
pub struct FleetState {
    agents: Arc<Mutex<HashMap<String, AgentEntry>>>,
    events: broadcast::Sender<Arc<WatchEvent>>,
    max_sites: usize,
    /// Counts site results left out for want of room.
    sites_dropped: Counter,
}

impl Default for FleetState {
    fn default() -> Self {
        Self::new()
    }
}

/// Marks an agent's control stream as open until dropped.
#[derive(Debug)]
pub struct ControlGuard {
    state: FleetState,
    agent_id: String,
}

impl Drop for ControlGuard {
    fn drop(&mut self) {
        if let Some(entry) = self.state.lock().get_mut(&self.agent_id) {
            entry.control_streams = entry.control_streams.saturating_sub(1);
        }
    }
}

/// Marks an agent's stream as open until dropped.
#[derive(Debug)]
pub struct StreamGuard {
    state: FleetState,
    agent_id: String,
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        let mut agents = self.state.lock();
        if let Some(entry) = agents.get_mut(&self.agent_id) {
            entry.open_streams = entry.open_streams.saturating_sub(1);
            if entry.open_streams == 0 {
                entry.connected_since = None;
            }
        }
    }
}

fn timestamp(t: Option<SystemTime>) -> Option<prost_types::Timestamp> {
    t.map(prost_types::Timestamp::from)
}

impl FleetState {
    /// An empty fleet.
    pub fn new() -> Self {
        Self::with_limits(
            crate::config::MAX_LATEST_SITES_PER_AGENT,
            Counter::default(),
        )
    }

    /// An empty fleet keeping at most `max_sites` sites per agent, counting those left
    /// out in `sites_dropped`.
    pub fn with_limits(max_sites: usize, sites_dropped: Counter) -> Self {
        FleetState {
            agents: Arc::default(),
            events: broadcast::channel(WATCH_BUFFER).0,
            max_sites,
            sites_dropped,
        }
    }

    /// Forgets agents with no open stream whose last sample or connection is older
    /// than `after`; returns how many. Their rows stay in PostgreSQL.
    pub fn forget_idle(&self, after: Duration, now: SystemTime) -> usize {
        let mut agents = self.lock();
        let before = agents.len();
        agents.retain(|_, e| {
            let last = e.last_sample_at.max(e.connected_since);
            e.open_streams > 0
                || e.control_streams > 0
                || last.is_some_and(|at| now.duration_since(at).unwrap_or_default() < after)
        });
        before - agents.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, AgentEntry>> {
        // A panic while holding the lock leaves plain data behind; keep serving.
        self.agents
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Records a call from an agent; for streams, hold the guard while it is open.
    pub fn connected(
        &self,
        peer: &PeerIdentity,
        remote: Option<SocketAddr>,
        stream: bool,
    ) -> Option<StreamGuard> {
        let mut agents = self.lock();
        let entry = agents.entry(peer.name.clone()).or_default();
        entry.remote_address = remote.map(|a| a.to_string()).unwrap_or_default();
        entry.cert_not_after = Some(peer.not_after);
        if !stream {
            return None;
        }
        entry.open_streams += 1;
        if entry.open_streams == 1 {
            entry.connected_since = Some(SystemTime::now());
        }
        Some(StreamGuard {
            state: self.clone(),
            agent_id: peer.name.clone(),
        })
    }

    /// Counts samples received from an agent (valid or not).
    pub fn received(&self, agent_id: &str, count: usize) {
        let mut agents = self.lock();
        let entry = agents.entry(agent_id.to_owned()).or_default();
        entry.samples_received += count as u64;
        entry.last_sample_at = Some(SystemTime::now());
    }

    /// Records how far an agent's clock is ahead of the collector's.
    pub fn clock_offset(&self, agent_id: &str, offset_ms: i64) {
        if let Some(entry) = self.lock().get_mut(agent_id) {
            entry.clock_offset_ms = Some(offset_ms);
        }
    }

    /// Remembers samples Kafka confirmed (kept, not copied) and tells the watchers,
    /// if any: the state's lock is taken once for all of them.
    pub fn delivered(&self, samples: impl IntoIterator<Item = ValidSample>) {
        let watched = self.events.receiver_count() > 0;
        let mut events = Vec::new();
        {
            let mut agents = self.lock();
            for sample in samples {
                let agent_id = match &sample {
                    ValidSample::Host(host) => &host.agent_id,
                    ValidSample::Site(site) => &site.agent_id,
                };
                // The entry is there already (made when the batch came): no key to copy.
                let entry = match agents.get_mut(agent_id) {
                    Some(entry) => entry,
                    None => agents.entry(agent_id.clone()).or_default(),
                };
                events.extend(self.remember(entry, sample, watched));
            }
        }
        for event in events {
            // A watcher may have left since: that is fine.
            let _ = self.events.send(Arc::new(WatchEvent { kind: Some(event) }));
        }
    }

    /// Keeps one delivered sample in its agent's entry; the event for watchers if
    /// `watched`.
    fn remember(
        &self,
        entry: &mut AgentEntry,
        sample: ValidSample,
        watched: bool,
    ) -> Option<watch_event::Kind> {
        match sample {
            ValidSample::Host(mut host) => {
                if entry.hostname != host.hostname {
                    entry.hostname.clone_from(&host.hostname);
                }
                // Kept without its processes (up to 200 of them): they travel in the
                // event only, so a watcher lists them from the next sample and an
                // agent's entry here stays small.
                let processes = std::mem::take(&mut host.processes);
                let event = watched.then(|| {
                    watch_event::Kind::Host(HostSample {
                        processes,
                        ..host.clone()
                    })
                });
                entry.latest_host = Some(host);
                event
            }
            ValidSample::Site(site) => {
                let key = site_key(&site);
                let live = live_copy(site);
                let event = watched.then(|| watch_event::Kind::Site(live.clone()));
                if entry.latest_sites.len() < self.max_sites
                    || entry.latest_sites.contains_key(&key)
                {
                    entry.latest_sites.insert(key, live);
                } else {
                    self.sites_dropped.inc();
                }
                event
            }
        }
    }

    /// Every agent seen since start, sorted by id.
    pub fn list(&self) -> Vec<AgentInfo> {
        self.list_page("", usize::MAX).0
    }

    /// The ids of `agents` after `after`, sorted.
    fn ids_after<'a>(agents: &'a HashMap<String, AgentEntry>, after: &str) -> Vec<&'a String> {
        let mut ids: Vec<&String> = agents.keys().filter(|id| id.as_str() > after).collect();
        ids.sort_unstable();
        ids
    }

    /// At most `size` agents whose ids sort after `after`, and the token of the next
    /// page (empty after the last).
    pub fn list_page(&self, after: &str, size: usize) -> (Vec<AgentInfo>, String) {
        let agents = self.lock();
        let ids = Self::ids_after(&agents, after);
        let page: Vec<AgentInfo> = ids
            .iter()
            .take(size)
            .map(|id| info(id, &agents[*id]))
            .collect();
        let next = if ids.len() > page.len() {
            page.last().map(|a| a.agent_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        (page, next)
    }

    /// One agent.
    pub fn get(&self, agent_id: &str) -> Option<AgentInfo> {
        self.lock().get(agent_id).map(|e| info(agent_id, e))
    }

    /// Latest samples of one agent; `None` if unknown.
    pub fn latest(&self, agent_id: &str) -> Option<AgentLatest> {
        self.lock()
            .get_key_value(agent_id)
            .map(|(id, e)| latest(id, e))
    }

    /// Latest samples of at most `size` agents whose ids sort after `after`, stopping
    /// once the page's encoded size passes `max_bytes` (one agent at least), and the
    /// token of the next page (empty after the last).
    pub fn latest_page(
        &self,
        after: &str,
        size: usize,
        max_bytes: usize,
    ) -> (Vec<AgentLatest>, String) {
        let agents = self.lock();
        let ids = Self::ids_after(&agents, after);
        let (mut page, mut bytes) = (Vec::new(), 0);
        for id in ids.iter().take(size) {
            if !page.is_empty() && bytes >= max_bytes {
                break;
            }
            let one = latest(id, &agents[*id]);
            bytes += prost::Message::encoded_len(&one);
            page.push(one);
        }
        let next = if ids.len() > page.len() {
            page.last().map(|a| a.agent_id.clone()).unwrap_or_default()
        } else {
            String::new()
        };
        (page, next)
    }

    /// Records an agent's control stream until the guard is dropped.
    pub fn control_connected(&self, peer: &PeerIdentity) -> ControlGuard {
        let mut agents = self.lock();
        let entry = agents.entry(peer.name.clone()).or_default();
        entry.control_streams += 1;
        entry.cert_not_after = Some(peer.not_after);
        ControlGuard {
            state: self.clone(),
            agent_id: peer.name.clone(),
        }
    }

    /// Takes in a report from an agent's control stream; `labels` are those that
    /// select it into checks.
    pub fn reported(&self, agent_id: &str, report: &AgentReport, labels: BTreeMap<String, String>) {
        let mut agents = self.lock();
        let entry = agents.entry(agent_id.to_owned()).or_default();
        entry.labels = labels;
        entry.reported_labels = report.labels.clone().into_iter().collect();
        entry.remote_disabled = report.remote_disabled;
        entry.applied = report
            .checks
            .iter()
            .map(|c| (c.id.clone(), c.clone()))
            .collect();
    }

    /// Records the check ids of the set just sent to an agent; those of the previous
    /// set that it lacks are marked dropped `now`, and drops older than `forget` go.
    pub fn sent_set<'a>(
        &self,
        agent_id: &str,
        check_ids: impl Iterator<Item = &'a str>,
        now: Instant,
        forget: Duration,
    ) {
        let mut agents = self.lock();
        let entry = agents.entry(agent_id.to_owned()).or_default();
        for dropped in entry.assigned.values_mut() {
            dropped.get_or_insert(now);
        }
        for id in check_ids {
            entry.assigned.insert(id.to_owned(), None);
        }
        entry
            .assigned
            .retain(|_, dropped| dropped.is_none_or(|at| now.duration_since(at) < forget));
    }

    /// Whether check `check_id` was in the set last sent to the agent, or dropped from
    /// it less than `grace` ago; `None` when no set was sent to it here.
    pub fn assigned_within(
        &self,
        agent_id: &str,
        check_id: &str,
        grace: Duration,
        now: Instant,
    ) -> Option<bool> {
        let agents = self.lock();
        let entry = agents.get(agent_id)?;
        if entry.control_streams == 0 && entry.assigned.is_empty() {
            return None;
        }
        Some(match entry.assigned.get(check_id) {
            Some(None) => true,
            Some(Some(dropped)) => now.duration_since(*dropped) < grace,
            None => false,
        })
    }

    /// The labels that select an agent into checks.
    pub fn labels(&self, agent_id: &str) -> BTreeMap<String, String> {
        self.lock()
            .get(agent_id)
            .map(|e| e.labels.clone())
            .unwrap_or_default()
    }

    /// How each agent that `selects` picks is doing with check `check_id`.
    pub fn check_agents(
        &self,
        check_id: &str,
        selects: impl Fn(&str, &BTreeMap<String, String>) -> bool,
    ) -> Vec<AgentCheckStatus> {
        let agents = self.lock();
        let key = format!("check:{check_id}");
        let mut list: Vec<AgentCheckStatus> = agents
            .iter()
            .filter(|(id, e)| !e.remote_disabled && selects(id, &e.labels))
            .map(|(id, e)| {
                let applied = e.applied.get(check_id);
                AgentCheckStatus {
                    agent_id: id.clone(),
                    connected: e.control_streams > 0,
                    applied_version: applied.map_or(0, |a| a.version),
                    error: applied.map(|a| a.error.clone()).unwrap_or_default(),
                    last_result: e.latest_sites.get(&key).cloned(),
                }
            })
            .collect();
        list.sort_by(|a, b| a.agent_id.cmp(&b.agent_id));
        list
    }

    /// A receiver of every sample confirmed from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<WatchEvent>> {
        self.events.subscribe()
    }

    /// Receivers from [`FleetState::subscribe`] still open (live `WatchLatest` calls).
    pub fn watchers(&self) -> usize {
        self.events.receiver_count()
    }
}

fn latest(agent_id: &str, e: &AgentEntry) -> AgentLatest {
    AgentLatest {
        agent_id: agent_id.to_owned(),
        host: e.latest_host.clone(),
        sites: e.latest_sites.values().cloned().collect(),
    }
}

fn info(agent_id: &str, e: &AgentEntry) -> AgentInfo {
    AgentInfo {
        agent_id: agent_id.to_owned(),
        hostname: e.hostname.clone(),
        remote_address: e.remote_address.clone(),
        connected: e.open_streams > 0,
        connected_since: timestamp(e.connected_since),
        last_sample_at: timestamp(e.last_sample_at),
        samples_received: e.samples_received,
        client_cert_not_after: timestamp(e.cert_not_after),
        labels: e.labels.clone().into_iter().collect(),
        reported_labels: e.reported_labels.clone().into_iter().collect(),
        clock_offset_ms: e.clock_offset_ms,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(agent: &str, url: &str) -> ValidSample {
        ValidSample::Site(SiteCheck {
            agent_id: agent.into(),
            url: url.into(),
            error_message: "e".repeat(4096),
            ..Default::default()
        })
    }

    #[test]
    fn the_live_view_keeps_little_of_what_a_site_controls_and_forgets_the_long_gone() {
        let fleet = FleetState::new();
        fleet.delivered([site("a1", "https://x.example/")]);
        let kept = fleet.latest("a1").unwrap().sites.remove(0);
        assert!(kept.error_message.len() <= LIVE_TEXT_BYTES);
        assert!(
            kept.error_message
                .ends_with(fleetmon::samples::TRUNCATED_MARK)
        );

        let now = SystemTime::now();
        fleet.received("a1", 1);
        let week = Duration::from_secs(7 * 86_400);
        assert_eq!(fleet.forget_idle(week, now), 0, "seen just now");
        assert_eq!(
            fleet.forget_idle(week, now + week + Duration::from_secs(1)),
            1
        );
        assert!(fleet.get("a1").is_none());
    }
}

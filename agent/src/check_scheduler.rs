//! Runs the agent's site checks, each on its own schedule, and changes the set live:
//! the sites of the agent's own config run from start to stop; central checks from
//! the collector start, stop and reschedule as their definitions change, without a
//! restart and without touching the checks that did not change.

use std::collections::HashMap;
use std::sync::Arc;

use fleetmon::pb::SiteCheck;
use fleetmon::pb::sample::Kind;
use rand::Rng;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::{AgentMetrics, OutcomeLabel};
use crate::outbox::Outbox;
use crate::site_prober::SiteProber;
use fleetmon::checks::Site;

/// A running central check: the version it runs and how to stop it.
#[derive(Debug)]
struct Running {
    version: u64,
    stop: CancellationToken,
}

/// Owns every check task; dropped or not, the tasks end at `stop`.
#[derive(Debug)]
pub struct CheckScheduler {
    prober: SiteProber,
    permits: Arc<Semaphore>,
    outbox: Arc<Outbox>,
    metrics: Arc<AgentMetrics>,
    /// Cancelled when the agent stops measuring.
    stop: CancellationToken,
    tasks: TaskTracker,
    /// Central checks by id.
    remote: HashMap<String, Running>,
}

/// What [`CheckScheduler::apply`] changed.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    /// Checks started (new ones).
    pub started: usize,
    /// Checks restarted with a new version.
    pub changed: usize,
    /// Checks stopped (removed or paused).
    pub stopped: usize,
}

impl CheckScheduler {
    /// A scheduler with no check running; `tasks` is where the agent waits for them.
    pub fn new(
        prober: SiteProber,
        max_concurrent: usize,
        outbox: Arc<Outbox>,
        metrics: Arc<AgentMetrics>,
        stop: CancellationToken,
        tasks: TaskTracker,
    ) -> Self {
        CheckScheduler {
            prober,
            permits: Arc::new(Semaphore::new(max_concurrent)),
            outbox,
            metrics,
            stop,
            tasks,
            remote: HashMap::new(),
        }
    }

    fn spawn(&self, site: Site, stop: CancellationToken) {
        self.tasks.spawn(probe_site(
            site,
            self.prober.clone(),
            self.permits.clone(),
            self.outbox.clone(),
            self.metrics.clone(),
            stop,
        ));
    }

    /// Starts the agent's own sites; they run until the agent stops.
    pub fn start_local(&mut self, sites: Vec<Site>) {
        for site in sites {
            self.spawn(site, self.stop.clone());
        }
    }

    /// Makes the running central checks exactly `sites` (each names its check): new
    /// ones start on a jittered schedule, ones whose version changed restart, ones
    /// not listed stop. Unchanged checks keep their schedule.
    pub fn apply(&mut self, sites: Vec<Site>) -> Applied {
        let mut applied = Applied::default();
        let mut wanted: HashMap<String, Site> = sites
            .into_iter()
            .filter_map(|site| site.check.clone().map(|check| (check.id, site)))
            .collect();
        let mut kept = 0;
        self.remote.retain(|id, running| {
            let keep = wanted
                .get(id)
                .and_then(|site| site.check.as_ref())
                .is_some_and(|check| check.version == running.version);
            if keep {
                wanted.remove(id);
                kept += 1;
            } else {
                running.stop.cancel();
                if wanted.contains_key(id) {
                    applied.changed += 1;
                } else {
                    applied.stopped += 1;
                }
            }
            keep
        });
        for (id, site) in wanted {
            let version = site.check.as_ref().map_or(0, |check| check.version);
            let stop = self.stop.child_token();
            self.spawn(site, stop.clone());
            self.remote.insert(id, Running { version, stop });
        }
        applied.started = self.remote.len() - kept - applied.changed;
        applied
    }

    /// How many central checks run now.
    pub fn remote_count(&self) -> usize {
        self.remote.len()
    }
}

fn outcome(check: &SiteCheck) -> &'static str {
    if check.ok {
        "ok"
    } else {
        fleetmon::check_failure::name_of(check.failure).unwrap_or("other")
    }
}

/// Checks one site until `stop` on its own schedule: a random first delay within one
/// interval spreads thousands of sites out; a check that overruns skips ticks of its
/// own site only; `permits` bounds how many checks run at once.
async fn probe_site(
    site: Site,
    prober: SiteProber,
    permits: Arc<Semaphore>,
    outbox: Arc<Outbox>,
    metrics: Arc<AgentMetrics>,
    stop: CancellationToken,
) {
    let jitter = site.interval.mul_f64(rand::rng().random_range(0.0..1.0));
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + jitter, site.interval);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        let scheduled = tokio::select! {
            at = ticks.tick() => at,
            () = stop.cancelled() => return,
        };
        let Ok(_permit) = permits.acquire().await else {
            return;
        };
        metrics
            .check_lateness_seconds
            .observe(scheduled.elapsed().as_secs_f64());
        let check = tokio::select! {
            check = prober.check(&site) => check,
            () = stop.cancelled() => return,
        };
        metrics
            .checks
            .get_or_create(&OutcomeLabel {
                outcome: outcome(&check),
            })
            .inc();
        outbox.push_counted(Kind::Site(check), &metrics);
    }
}

//! The agent's control stream: central checks in, what was applied out.
//!
//! Beside the ingest stream, the agent holds `Control/Subscribe` open to a collector.
//! Its first report names the agent's labels; every `CheckSet` that arrives is applied
//! at once ([`CheckScheduler::apply`]), written to the cache file, and answered with a
//! report of the hash applied and, per check, its version or why it could not run.
//! At start the cached set runs before any collector answers.

use std::path::{Path, PathBuf};
use std::time::Duration;

use fleetmon::pb::control_client::ControlClient;
use fleetmon::pb::{AgentReport, AppliedCheck, CheckSet};
use fleetmon::tls::Reloading;
use prost::Message as _;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::transport::Endpoint;

use crate::check_scheduler::CheckScheduler;
use crate::config::RemoteChecksConfig;
use crate::sender::backoff;
use fleetmon::checks::ProbeDefaults;
use fleetmon::checks::pattern::Patterns;
use fleetmon::checks::site_from_definition;

/// What the control task needs.
#[derive(Debug)]
pub struct Control {
    /// The collectors, as the sender has them.
    pub endpoints: Reloading<Vec<Endpoint>>,
    /// The agent's labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// `remote_checks` from the config.
    pub settings: RemoteChecksConfig,
    /// Defaults for fields a definition leaves out.
    pub defaults: ProbeDefaults,
    /// Longest pause between reconnects.
    pub max_backoff: Duration,
}

/// The set the agent runs now and what it reports about it.
#[derive(Debug, Default)]
struct AppliedSet {
    hash: String,
    checks: Vec<AppliedCheck>,
}

impl AppliedSet {
    fn report(&self, control: &Control) -> AgentReport {
        AgentReport {
            labels: control.labels.clone().into_iter().collect(),
            applied_hash: self.hash.clone(),
            checks: self.checks.clone(),
            remote_disabled: !control.settings.enabled,
        }
    }
}

/// Applies `set`: every check that converts runs, each that does not is reported.
fn apply(set: &CheckSet, scheduler: &mut CheckScheduler, defaults: &ProbeDefaults) -> AppliedSet {
    let mut patterns = Patterns::default();
    let mut sites = Vec::new();
    let mut checks = Vec::new();
    for definition in &set.checks {
        let error = match site_from_definition(definition, defaults, &mut patterns) {
            Ok(site) => {
                sites.push(site);
                String::new()
            }
            Err(error) => {
                tracing::warn!(check_id = %definition.id, version = definition.version, %error, "central check not applied");
                error.to_string()
            }
        };
        checks.push(AppliedCheck {
            id: definition.id.clone(),
            version: definition.version,
            error,
        });
    }
    let changes = scheduler.apply(sites);
    tracing::info!(
        hash = %set.hash,
        running = scheduler.remote_count(),
        started = changes.started,
        changed = changes.changed,
        stopped = changes.stopped,
        "central checks applied"
    );
    AppliedSet {
        hash: set.hash.clone(),
        checks,
    }
}

fn read_cache(path: &Path) -> Option<CheckSet> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return None,
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "cannot read the central checks cache");
            return None;
        }
    };
    match CheckSet::decode(bytes.as_slice()) {
        Ok(set) => Some(set),
        Err(error) => {
            tracing::warn!(path = %path.display(), %error, "central checks cache is corrupt: ignored");
            None
        }
    }
}

/// Replaces the cache file atomically (write beside it, then rename), readable by the
/// agent's user only: it holds secret header values in clear.
fn write_cache(path: &Path, set: &CheckSet) {
    use std::io::Write as _;
    use std::os::unix::fs::{OpenOptionsExt as _, PermissionsExt as _};
    let temporary: PathBuf = path.with_extension("tmp");
    let result = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&temporary)
        .and_then(|mut file| {
            file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
            file.write_all(&set.encode_to_vec())
        })
        .and_then(|()| std::fs::rename(&temporary, path));
    if let Err(error) = result {
        tracing::warn!(path = %path.display(), %error, "cannot write the central checks cache");
    }
}

/// Why a control stream ended.
enum Ended {
    Shutdown,
    /// The TLS files changed: reconnect at once with the new ones.
    Renewed,
    Failed(String),
}

/// Runs until `shutdown`: applies the cached set, then follows the collectors.
pub async fn run(control: Control, mut scheduler: CheckScheduler, shutdown: CancellationToken) {
    let mut applied = AppliedSet::default();
    if control.settings.enabled
        && let Some(path) = &control.settings.cache_file
        && let Some(set) = read_cache(path)
    {
        tracing::info!(path = %path.display(), checks = set.checks.len(), "running the cached central checks until a collector answers");
        applied = apply(&set, &mut scheduler, &control.defaults);
    }
    let mut endpoints = control.endpoints.clone();
    let mut failures: u32 = 0;
    let mut current = 0usize;
    loop {
        let (endpoint, count) = {
            let list = endpoints.borrow_and_update();
            (list[current % list.len()].clone(), list.len())
        };
        let ended = tokio::select! {
            ended = follow(&control, &endpoint, &mut endpoints, &mut scheduler, &mut applied, &mut failures) => ended,
            () = shutdown.cancelled() => Ended::Shutdown,
        };
        match ended {
            Ended::Shutdown => return,
            Ended::Renewed => {}
            Ended::Failed(reason) => {
                failures = failures.saturating_add(1);
                current = (current + 1) % count;
                let rounds = failures.div_ceil(u32::try_from(count).unwrap_or(u32::MAX));
                let delay = backoff(rounds, control.max_backoff);
                tracing::debug!(collector = %endpoint.uri(), %reason, retry_in = ?delay, "control stream unavailable");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return,
                }
            }
        }
    }
}

/// How often an agent repeats its report on an idle control stream.
pub const CONTROL_HEARTBEAT: std::time::Duration = std::time::Duration::from_secs(60);

/// One control stream: report, then apply each set that arrives (and report again
/// every [`CONTROL_HEARTBEAT`]).
async fn follow(
    control: &Control,
    endpoint: &Endpoint,
    endpoints: &mut Reloading<Vec<Endpoint>>,
    scheduler: &mut CheckScheduler,
    applied: &mut AppliedSet,
    failures: &mut u32,
) -> Ended {
    let channel = match endpoint.connect().await {
        Ok(channel) => channel,
        Err(error) => return Ended::Failed(format!("cannot connect: {error}")),
    };
    let (reports, rx) = mpsc::channel::<AgentReport>(4);
    // The first report goes before the call so the collector learns the labels at once.
    // A new channel with room for 4 and its receiver held: this cannot fail.
    let _ = reports.try_send(applied.report(control));
    let mut sets = match ControlClient::new(channel)
        .subscribe(ReceiverStream::new(rx))
        .await
    {
        Ok(response) => response.into_inner(),
        Err(status) => return Ended::Failed(format!("control stream refused: {status}")),
    };
    let mut watching = true;
    // The collector closes a control stream it has not heard from for a while
    // (`limits.idle_control_seconds`): say what is applied now and then.
    let mut heartbeat = tokio::time::interval_at(
        tokio::time::Instant::now() + CONTROL_HEARTBEAT,
        CONTROL_HEARTBEAT,
    );
    loop {
        tokio::select! {
            _ = heartbeat.tick() => {
                if reports.send(applied.report(control)).await.is_err() {
                    return Ended::Failed("control stream closed".to_owned());
                }
            }
            set = sets.message() => match set {
                Ok(Some(set)) => {
                    *failures = 0;
                    if !control.settings.enabled {
                        continue;
                    }
                    *applied = apply(&set, scheduler, &control.defaults);
                    if let Some(path) = &control.settings.cache_file {
                        write_cache(path, &set);
                    }
                    if reports.send(applied.report(control)).await.is_err() {
                        return Ended::Failed("control stream closed".to_owned());
                    }
                }
                Ok(None) => return Ended::Failed("collector closed the control stream".to_owned()),
                Err(status) => return Ended::Failed(format!("control stream failed: {status}")),
            },
            changed = endpoints.changed(), if watching => {
                if changed.is_ok() {
                    return Ended::Renewed;
                }
                // Reloading stopped: keep this stream for as long as it lasts.
                watching = false;
            }
        }
    }
}

//! The `Checks` gRPC service (operator certificates only): create, update, delete,
//! pause, resume, get and list central checks. Every change is validated with the
//! agent's own rules, written to the checks topic, and answered once read back; get and
//! list add how each selected agent is doing with the check.

use tonic::{Code, Request, Response, Status};
use tracing::instrument;

use fleetmon::checks::ProbeDefaults;
use fleetmon::checks::pattern::Patterns;
use fleetmon::checks::{DefinitionError, heartbeat, interval_seconds, site_from_definition};
use fleetmon::grpc::GrpcError;
use fleetmon::pb::checks_server::Checks;
use fleetmon::pb::{
    CheckDefinition, CheckRef, CheckStatus, CreateCheckRequest, DeleteCheckRequest,
    DeleteCheckResponse, ListChecksRequest, ListChecksResponse, UpdateCheckRequest,
    check_definition,
};

use crate::assignment::selects;
use crate::audit_log::{AuditLog, Pending, Unrecorded};
use crate::check_catalog::{CatalogError, CheckCatalog};
use crate::fleet_state::FleetState;
use fleetmon::audit::Author;
use fleetmon::check_secrets::{CheckSecrets, SecretsError, masked};

/// Why a `Checks` call failed; the one place these become gRPC statuses.
#[derive(Debug, thiserror::Error)]
pub enum ChecksError {
    /// The request has no definition.
    #[error("`check` is missing: send the check's definition")]
    Missing,
    /// A definition that cannot run.
    #[error("invalid check: {0}")]
    Invalid(#[from] DefinitionError),
    /// The catalog refused or failed.
    #[error(transparent)]
    Catalog(#[from] CatalogError),
    /// Secret header values could not be sealed or opened.
    #[error(transparent)]
    Secrets(#[from] SecretsError),
    /// The audit trail could not record the change: it was not made.
    #[error(transparent)]
    Unrecorded(#[from] Unrecorded),
    /// A ping token asked of a check that is not a heartbeat.
    #[error("check `{0}` is not a heartbeat: only heartbeat checks have a ping token")]
    NotHeartbeat(String),
}

impl GrpcError for ChecksError {
    fn code(&self) -> Code {
        match self {
            ChecksError::Missing | ChecksError::Invalid(_) => Code::InvalidArgument,
            ChecksError::Catalog(error) => error.code(),
            ChecksError::Secrets(SecretsError::NothingToKeep { .. }) => Code::InvalidArgument,
            ChecksError::Secrets(_) | ChecksError::NotHeartbeat(_) => Code::FailedPrecondition,
            ChecksError::Unrecorded(_) => Code::Unavailable,
        }
    }
}

fleetmon::status_from!(ChecksError);

/// Most runs in a row a threshold may ask for.
pub const MAX_THRESHOLD: u32 = 100;

/// Thresholds in range; a quorum no larger than the agents an assignment by name
/// selects (an assignment by label or `all` selects agents not known here yet).
fn validate_alerting(definition: &CheckDefinition) -> Result<(), DefinitionError> {
    let Some(alerting) = &definition.alerting else {
        return Ok(());
    };
    for (field, value) in [
        ("failure_threshold", alerting.failure_threshold),
        ("success_threshold", alerting.success_threshold),
    ] {
        if value > MAX_THRESHOLD {
            return Err(DefinitionError {
                field: format!("check.alerting.{field}"),
                message: format!(
                    "is {value}: use 1 to {MAX_THRESHOLD} runs in a row (0 for the default)"
                ),
            });
        }
    }
    let assignment = definition.assignment.clone().unwrap_or_default();
    let by_name_only = !assignment.all && assignment.labels.is_empty();
    let named: std::collections::BTreeSet<&str> =
        assignment.agents.iter().map(String::as_str).collect();
    if by_name_only && alerting.quorum as usize > named.len() {
        return Err(DefinitionError {
            field: "check.alerting.quorum".to_owned(),
            message: format!(
                "is {}: the check runs on {} agent(s), so that many can never agree; use at most {} (0 for a majority)",
                alerting.quorum,
                named.len(),
                named.len()
            ),
        });
    }
    Ok(())
}

/// Headers that carry credentials: refused in `headers`, which every operator reads and
/// the topic holds in clear.
const CREDENTIAL_HEADERS: [&str; 5] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-auth-token",
];

/// No credential header among the plain `headers` of an HTTP check.
fn validate_plain_headers(definition: &CheckDefinition) -> Result<(), DefinitionError> {
    let Some(check_definition::Kind::Http(http)) = &definition.kind else {
        return Ok(());
    };
    match http
        .headers
        .keys()
        .find(|name| CREDENTIAL_HEADERS.contains(&name.to_ascii_lowercase().as_str()))
    {
        Some(name) => Err(DefinitionError::new(
            "check.http.headers",
            format!(
                "names `{name}`, a credential: move it to `check.http.secret_headers` (`secret_headers` in checks.toml), which is stored encrypted and shown as `{}`",
                fleetmon::redact::SECRET
            ),
        )),
        None => Ok(()),
    }
}

/// A heartbeat definition with its token's hash: the one `before` holds, or a new token
/// (returned, to be answered once). What a caller sent as the hash never counts.
/// Other kinds pass unchanged.
fn with_ping_token(
    mut definition: CheckDefinition,
    before: Option<&CheckDefinition>,
) -> (CheckDefinition, Option<String>) {
    let stored = before
        .and_then(heartbeat::of)
        .map(|beat| beat.token_sha256.clone());
    let Some(check_definition::Kind::Heartbeat(beat)) = &mut definition.kind else {
        return (definition, None);
    };
    match stored {
        Some(hash) => {
            beat.token_sha256 = hash;
            (definition, None)
        }
        None => {
            let (token, hash) = heartbeat::new_token();
            beat.token_sha256 = hash;
            (definition, Some(token))
        }
    }
}

/// The service over the catalog and the fleet view.
#[derive(Debug, Clone)]
pub struct ChecksService {
    catalog: CheckCatalog,
    fleet: FleetState,
    /// The shortest interval accepted (`limits.min_check_interval_seconds`).
    min_interval_seconds: u32,
    /// Where changes are recorded.
    audit: AuditLog,
    /// Seals secret header values before they are stored.
    secrets: CheckSecrets,
}

/// A check as its audit record shows it: the `fleetmon checks` spec, version and
/// pause state, header values hidden (they may be secrets).
fn audited(check: &CheckDefinition) -> serde_json::Value {
    let mut spec = fleetmon::checks::spec::CheckSpec::from(&masked(check.clone()));
    for value in spec.headers.values_mut() {
        *value = fleetmon::redact::HIDDEN.to_owned();
    }
    let mut json = serde_json::to_value(spec).unwrap_or_default();
    json["version"] = check.version.into();
    json["paused"] = check.paused.into();
    json
}

impl ChecksService {
    /// A service over `catalog`, reporting agents from `fleet`, sealing secret header
    /// values with `secrets`.
    pub fn new(
        catalog: CheckCatalog,
        fleet: FleetState,
        min_interval_seconds: u32,
        secrets: CheckSecrets,
    ) -> Self {
        ChecksService {
            catalog,
            fleet,
            min_interval_seconds,
            audit: AuditLog::off(),
            secrets,
        }
    }

    /// Records every change in `audit`.
    pub fn audited_in(self, audit: AuditLog) -> Self {
        ChecksService { audit, ..self }
    }

    /// Records the change `author` asks for on check `subject` (as it is `before`) in
    /// the audit trail, before it is attempted.
    async fn request(
        &self,
        author: &Author,
        action: &str,
        subject: &str,
        before: Option<&CheckDefinition>,
    ) -> Result<Pending, ChecksError> {
        Ok(self
            .audit
            .request(author, action, subject, before.map(audited))
            .await?)
    }

    /// Checks a definition with the agent's rules and the collector's limits.
    fn validate(
        &self,
        definition: Option<CheckDefinition>,
    ) -> Result<CheckDefinition, ChecksError> {
        let definition = definition.ok_or(ChecksError::Missing)?;
        if let Some(heartbeat) = heartbeat::of(&definition) {
            heartbeat::validate(&definition, heartbeat)?;
            if definition.alerting.is_some() {
                return Err(DefinitionError::new(
                    "check.alerting",
                    "does not apply to a heartbeat (its period and grace decide): remove it",
                )
                .into());
            }
            return Ok(definition);
        }
        site_from_definition(
            &definition,
            &ProbeDefaults::default(),
            &mut Patterns::default(),
        )?;
        let interval = interval_seconds(&definition);
        if interval < self.min_interval_seconds {
            return Err(DefinitionError {
                field: "check.interval_seconds".to_owned(),
                message: format!(
                    "is {interval}: the shortest interval this collector accepts is {} s (limits.min_check_interval_seconds)",
                    self.min_interval_seconds
                ),
            }
            .into());
        }
        validate_alerting(&definition)?;
        validate_plain_headers(&definition)?;
        Ok(definition)
    }

    async fn set_paused(
        &self,
        request: Request<CheckRef>,
        paused: bool,
    ) -> Result<Response<CheckStatus>, Status> {
        let author = Author::of(&request)?;
        let check = request.into_inner();
        let before = self.catalog.get(&check.id);
        let action = if paused {
            "checks.pause"
        } else {
            "checks.resume"
        };
        let pending = self
            .request(&author, action, &check.id, before.as_ref())
            .await?;
        let changed = self
            .catalog
            .set_paused(&check.id, paused)
            .await
            .map_err(ChecksError::from);
        let check = pending.settle(changed, |c| Some(audited(c))).await?;
        tracing::info!(check_id = %check.id, version = check.version, paused, "check paused or resumed");
        Ok(Response::new(self.status(check)))
    }

    /// A definition (secret header values shown as `•••`) with the status of each
    /// agent it selects.
    fn status(&self, check: CheckDefinition) -> CheckStatus {
        let check = masked(check);
        let assignment = check.assignment.clone().unwrap_or_default();
        let agents = self.fleet.check_agents(&check.id, |agent, labels| {
            selects(&assignment, agent, labels)
        });
        let note = if heartbeat::of(&check).is_some() {
            "no agent runs it: jobs ping /ping/TOKEN on a collector's heartbeat listener, and the agents it selects may ping it with fleetmon-agent ping".to_owned()
        } else if agents.is_empty() {
            "the assignment selects no agent known to this collector yet".to_owned()
        } else {
            String::new()
        };
        CheckStatus {
            check: Some(check),
            agents,
            note,
            ping_token: String::new(),
        }
    }
}

#[tonic::async_trait]
impl Checks for ChecksService {
    #[instrument(skip_all)]
    async fn create_check(
        &self,
        request: Request<CreateCheckRequest>,
    ) -> Result<Response<CheckStatus>, Status> {
        let author = Author::of(&request)?;
        let definition = self.validate(request.into_inner().check)?;
        let (definition, token) = with_ping_token(definition, None);
        let definition = self.secrets.seal(definition).map_err(ChecksError::from)?;
        let pending = self
            .request(&author, "checks.create", &definition.id, None)
            .await?;
        let created = self
            .catalog
            .create(definition)
            .await
            .map_err(ChecksError::from);
        let created = pending.settle(created, |c| Some(audited(c))).await?;
        tracing::info!(check_id = %created.id, "check created");
        Ok(Response::new(CheckStatus {
            ping_token: token.unwrap_or_default(),
            ..self.status(created)
        }))
    }

    #[instrument(skip_all)]
    async fn update_check(
        &self,
        request: Request<UpdateCheckRequest>,
    ) -> Result<Response<CheckStatus>, Status> {
        let author = Author::of(&request)?;
        let request = request.into_inner();
        let definition = request.check.ok_or(ChecksError::Missing)?;
        let before = self.catalog.get(&definition.id);
        let definition = self
            .secrets
            .keep_stored(definition, before.as_ref())
            .map_err(ChecksError::from)?;
        let definition = self.validate(Some(definition))?;
        let (definition, token) = with_ping_token(definition, before.as_ref());
        if let Some(stored) = before.as_ref().filter(|stored| {
            stored.version == request.expected_version
                && self.secrets.open(stored).is_ok_and(|stored| {
                    stored
                        == CheckDefinition {
                            version: stored.version,
                            ..definition.clone()
                        }
                })
        }) {
            // Nothing changes (e.g. `checks apply` sending secret values it cannot
            // compare): no new version.
            return Ok(Response::new(self.status(stored.clone())));
        }
        let definition = self.secrets.seal(definition).map_err(ChecksError::from)?;
        let pending = self
            .request(&author, "checks.update", &definition.id, before.as_ref())
            .await?;
        let updated = self
            .catalog
            .update(definition, request.expected_version)
            .await
            .map_err(ChecksError::from);
        let updated = pending.settle(updated, |c| Some(audited(c))).await?;
        tracing::info!(check_id = %updated.id, version = updated.version, "check updated");
        Ok(Response::new(CheckStatus {
            ping_token: token.unwrap_or_default(),
            ..self.status(updated)
        }))
    }

    #[instrument(skip_all)]
    async fn delete_check(
        &self,
        request: Request<DeleteCheckRequest>,
    ) -> Result<Response<DeleteCheckResponse>, Status> {
        let author = Author::of(&request)?;
        let request = request.into_inner();
        let before = self.catalog.get(&request.id);
        let pending = self
            .request(&author, "checks.delete", &request.id, before.as_ref())
            .await?;
        let deleted = self
            .catalog
            .delete(&request.id, request.expected_version)
            .await
            .map_err(ChecksError::from);
        pending.settle(deleted, |_| None).await?;
        tracing::info!(check_id = %request.id, "check deleted");
        Ok(Response::new(DeleteCheckResponse { id: request.id }))
    }

    #[instrument(skip_all)]
    async fn pause_check(
        &self,
        request: Request<CheckRef>,
    ) -> Result<Response<CheckStatus>, Status> {
        self.set_paused(request, true).await
    }

    #[instrument(skip_all)]
    async fn resume_check(
        &self,
        request: Request<CheckRef>,
    ) -> Result<Response<CheckStatus>, Status> {
        self.set_paused(request, false).await
    }

    #[instrument(skip_all)]
    async fn rotate_ping_token(
        &self,
        request: Request<CheckRef>,
    ) -> Result<Response<CheckStatus>, Status> {
        let author = Author::of(&request)?;
        let id = request.into_inner().id;
        let before = self.catalog.get(&id).ok_or_else(|| {
            ChecksError::from(CatalogError::NotFound {
                kind: "check",
                id: id.clone(),
            })
        })?;
        if heartbeat::of(&before).is_none() {
            return Err(ChecksError::NotHeartbeat(id).into());
        }
        let (token, hash) = heartbeat::new_token();
        let pending = self
            .request(&author, "checks.rotate_ping_token", &id, Some(&before))
            .await?;
        let rotated = self
            .catalog
            .modify(&id, |current| {
                let mut changed = current.clone();
                match &mut changed.kind {
                    Some(check_definition::Kind::Heartbeat(beat)) => {
                        beat.token_sha256.clone_from(&hash);
                        Some(changed)
                    }
                    _ => None,
                }
            })
            .await
            .map_err(ChecksError::from)
            .and_then(|rotated| match heartbeat::of(&rotated) {
                Some(beat) if beat.token_sha256 == hash => Ok(rotated),
                _ => Err(ChecksError::NotHeartbeat(id.clone())),
            });
        let rotated = pending.settle(rotated, |c| Some(audited(c))).await?;
        tracing::info!(check_id = %id, version = rotated.version, "heartbeat ping token rotated");
        Ok(Response::new(CheckStatus {
            ping_token: token,
            ..self.status(rotated)
        }))
    }

    #[instrument(skip_all)]
    async fn get_check(&self, request: Request<CheckRef>) -> Result<Response<CheckStatus>, Status> {
        let id = request.into_inner().id;
        let check = self
            .catalog
            .get(&id)
            .ok_or_else(|| ChecksError::from(CatalogError::NotFound { kind: "check", id }))?;
        Ok(Response::new(self.status(check)))
    }

    #[instrument(skip_all)]
    async fn list_checks(
        &self,
        _request: Request<ListChecksRequest>,
    ) -> Result<Response<ListChecksResponse>, Status> {
        let view = self.catalog.view();
        let checks = view
            .records
            .values()
            .map(|check| self.status((**check).clone()))
            .collect();
        Ok(Response::new(ListChecksResponse { checks }))
    }
}

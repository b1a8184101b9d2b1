//! PostgreSQL for tests: a schema of a test's own, or a server of its own.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use super::env::{PG_ENV, free_port, unique_name};

/// The Postgres URL every test uses.
pub fn pg_url() -> String {
    std::env::var(PG_ENV)
        .ok()
        .filter(|url| !url.trim().is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/postgres".to_owned())
}

/// Writes every dirty page out (`CHECKPOINT`, as the server's superuser), so that a
/// timed run that follows does not pay for the writes of the one before it.
pub async fn pg_checkpoint(url: &str) {
    connect(url)
        .await
        .batch_execute("CHECKPOINT")
        .await
        .unwrap_or_else(|e| panic!("CHECKPOINT at {url}: {e}"));
}

/// A schema of its own for one test, dropped (with everything in it) on drop.
#[derive(Debug)]
pub struct PgSchema {
    /// The schema name (`t_<hex>`).
    pub name: String,
    url: String,
}

impl PgSchema {
    /// Creates a new, empty schema in the suite's database ([`pg_url`]).
    pub async fn create() -> Self {
        Self::create_in(&pg_url()).await
    }

    /// Creates a new, empty schema in the database at `url`.
    pub async fn create_in(url: &str) -> Self {
        let name = unique_name("t").replace('-', "_");
        let url = url.to_owned();
        let client = connect(&url).await;
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .unwrap_or_else(|e| panic!("create schema {name}: {e}"));
        PgSchema { name, url }
    }

    /// The Postgres URL the schema lives in.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// A connection whose `search_path` is this schema.
    pub async fn connect(&self) -> tokio_postgres::Client {
        let client = connect(&self.url).await;
        client
            .batch_execute(&format!("SET search_path TO {}", self.name))
            .await
            .expect("set search_path");
        client
    }

    /// The one value `sql` returns (a bigint), on a fresh connection to this schema.
    pub async fn scalar(&self, sql: &str) -> i64 {
        self.connect()
            .await
            .query_one(sql, &[])
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0)
    }
}

async fn connect(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap_or_else(|e| {
            panic!("connect to Postgres at {url}: {e} (is it running? set {PG_ENV})")
        });
    tokio::spawn(connection);
    client
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        let (url, name) = (self.url.clone(), self.name.clone());
        // Drop may run inside a runtime: clean up on a thread with its own.
        let cleanup = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("cleanup runtime");
            runtime.block_on(async {
                if let Ok((client, connection)) =
                    tokio_postgres::connect(&url, tokio_postgres::NoTls).await
                {
                    tokio::spawn(connection);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                }
            });
        });
        let _ = cleanup.join();
    }
}

/// A Postgres server of a test's own (initdb in a temporary directory, a free port on
/// 127.0.0.1, trust auth), for tests that stop or crash the server. Uses the newest
/// server under `/usr/lib/postgresql` (or `$FLEETMON_PG_BIN`); run as the `postgres`
/// user when the test runs as root. Stopped on drop.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    port: u16,
    bin: PathBuf,
}

impl PgCluster {
    /// Creates and starts the server.
    pub fn start() -> Self {
        let cluster = Self::init();
        cluster.pg_ctl("start", &[]);
        cluster
    }

    /// Creates and starts a server that accepts TCP connections only over TLS
    /// (`ssl = on`, `hostssl` lines only in pg_hba.conf), with this certificate and key
    /// (PEM). The Unix socket ([`PgCluster::socket_url`]) stays open, without TLS.
    pub fn start_tls(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with_tls(cert_pem, key_pem, "hostssl")
    }

    /// Like [`PgCluster::start_tls`], but plaintext TCP connections are accepted too
    /// (`host` lines): the client's `sslmode` decides, as on most servers.
    pub fn start_tls_or_plaintext(cert_pem: &str, key_pem: &str) -> Self {
        Self::start_with_tls(cert_pem, key_pem, "host")
    }

    fn start_with_tls(cert_pem: &str, key_pem: &str, tcp_rule: &str) -> Self {
        let cluster = Self::init();
        let data = cluster.dir.path().join("data");
        for (name, pem) in [("server.crt", cert_pem), ("server.key", key_pem)] {
            let path = data.join(name);
            std::fs::write(&path, pem).expect("write server TLS file");
            std::fs::set_permissions(&path, std::os::unix::fs::PermissionsExt::from_mode(0o600))
                .expect("chmod server TLS file");
            cluster.chown(&path);
        }
        let mut conf = std::fs::OpenOptions::new()
            .append(true)
            .open(data.join("postgresql.conf"))
            .expect("open postgresql.conf");
        std::io::Write::write_all(&mut conf, b"\nssl = on\n").expect("write postgresql.conf");
        std::fs::write(
            data.join("pg_hba.conf"),
            format!(
                "local all all trust\n{tcp_rule} all all 127.0.0.1/32 trust\n{tcp_rule} all all ::1/128 trust\n"
            ),
        )
        .expect("write pg_hba.conf");
        cluster.pg_ctl("start", &[]);
        cluster
    }

    /// A URL over the server's Unix socket (never TLS), for checking what was stored.
    pub fn socket_url(&self) -> String {
        format!(
            "host={} port={} user=postgres dbname=postgres",
            self.dir.path().display(),
            self.port
        )
    }

    /// The port it listens on at 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    fn chown(&self, path: &Path) {
        if let Some((uid, gid)) = self.owner() {
            let path = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
                .expect("path without NUL");
            // SAFETY: chown(2) on a path we created.
            assert_eq!(unsafe { libc::chown(path.as_ptr(), uid, gid) }, 0);
        }
    }

    fn init() -> Self {
        let bin = std::env::var_os("FLEETMON_PG_BIN")
            .map(PathBuf::from)
            .or_else(|| {
                let mut versions: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
                    .ok()?
                    .flatten()
                    .map(|e| e.path().join("bin"))
                    .filter(|bin| bin.join("initdb").is_file())
                    .collect();
                versions.sort_by_key(|p| {
                    p.parent()
                        .and_then(|v| v.file_name()?.to_str()?.parse::<u32>().ok())
                });
                versions.pop()
            })
            .expect("no Postgres server binaries: set FLEETMON_PG_BIN to the directory of initdb");
        let dir = tempfile::Builder::new()
            .prefix("fleetmon-pg-")
            .tempdir()
            .expect("temporary directory");
        let cluster = PgCluster {
            dir,
            port: free_port(),
            bin,
        };
        cluster.chown(cluster.dir.path());
        let data = cluster.dir.path().join("data");
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-A".as_ref(),
                "trust".as_ref(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        cluster
    }

    /// `postgres://` URL of the `postgres` database.
    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Crashes the server (immediate shutdown: every connection cut, no checkpoint)
    /// and starts it again on the same port; returns once it accepts connections.
    pub fn crash_and_restart(&self) {
        self.crash();
        self.restart();
    }

    /// Stops the server at once (immediate shutdown) and leaves it down.
    pub fn crash(&self) {
        self.pg_ctl("stop", &["-m", "immediate"]);
    }

    /// Starts a stopped server again on the same port, with its data.
    pub fn restart(&self) {
        self.pg_ctl("start", &[]);
    }

    /// The uid and gid of `postgres` when running as root (initdb refuses root).
    fn owner(&self) -> Option<(libc::uid_t, libc::gid_t)> {
        // SAFETY: getuid never fails; getpwnam returns null or a valid static entry.
        unsafe {
            if libc::getuid() != 0 {
                return None;
            }
            let entry = libc::getpwnam(c"postgres".as_ptr());
            assert!(
                !entry.is_null(),
                "running as root and no `postgres` user for initdb"
            );
            Some(((*entry).pw_uid, (*entry).pw_gid))
        }
    }

    fn pg_ctl(&self, action: &str, extra: &[&str]) {
        let data = self.dir.path().join("data");
        let log = self.dir.path().join("server.log");
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.path().display()
        );
        let mut args: Vec<&std::ffi::OsStr> = vec![
            action.as_ref(),
            "-w".as_ref(),
            "-D".as_ref(),
            data.as_os_str(),
        ];
        if action == "start" {
            args.extend([
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
            ]);
        }
        args.extend(extra.iter().map(std::ffi::OsStr::new));
        self.run("pg_ctl", &args);
    }

    fn command(&self, program: &str) -> Command {
        use std::os::unix::process::CommandExt;
        let mut command = Command::new(self.bin.join(program));
        command.stdin(Stdio::null());
        if let Some((uid, gid)) = self.owner() {
            command.uid(uid).gid(gid);
        }
        command
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = self
            .command(program)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("run {program}: {e}"));
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ = self
            .command("pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(data)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// The first column of every row `sql` returns on `client`, as text.
pub async fn texts(client: &tokio_postgres::Client, sql: &str) -> Vec<String> {
    client
        .query(sql, &[])
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Polls `sql` until `ok` holds of its value (90 s at most).
pub async fn eventually(schema: &PgSchema, sql: &str, what: &str, ok: impl Fn(i64) -> bool) -> i64 {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(90);
    loop {
        let value = schema.scalar(sql).await;
        if ok(value) {
            return value;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{what}: `{sql}` is still {value} after 90 s (schema {})",
            schema.name
        );
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
    }
}

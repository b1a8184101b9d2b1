//! The Debian packages, on this machine: `scripts/package` builds them from the test
//! binaries, `dpkg -i` installs them, `systemd-analyze verify` checks the units, the
//! installed agent runs with the packaged config against a real collector and writer
//! until its rows land, and `dpkg --purge` leaves nothing behind.

use std::path::Path;
use std::process::{Command, Stdio};

use fleetmon::testkit::{CentralRig, binary, eventually};

const PACKAGES: [&str; 5] = [
    "fleetmon-agent",
    "fleetmon-collector",
    "fleetmon-writer",
    "fleetmon",
    "fleetmon-status-page",
];

/// The packages that run a service: each has a user, a unit and a config of its own.
const SERVERS: [&str; 4] = [
    "fleetmon-agent",
    "fleetmon-collector",
    "fleetmon-writer",
    "fleetmon-status-page",
];

fn run(program: &str, args: &[&str]) -> String {
    let out = Command::new(program).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{program} {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Purges the packages however the test ends.
struct Purge;

impl Drop for Purge {
    fn drop(&mut self) {
        let _ = Command::new("dpkg")
            .arg("--purge")
            .args(PACKAGES)
            .stdout(Stdio::null())
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_packages_install_verify_run_and_purge_without_a_trace() {
    let _ = binary("fleetmon-agent");
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_fleetmon")).parent().unwrap();
    let out = tempfile::tempdir().unwrap();
    let built = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/package"))
        .arg("--bin-dir")
        .arg(bin_dir)
        .arg("--out")
        .arg(out.path())
        .args(["--compression", "none"])
        .output()
        .unwrap();
    assert!(
        built.status.success(),
        "{}",
        String::from_utf8_lossy(&built.stderr)
    );
    let debs: Vec<String> = String::from_utf8(built.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    assert_eq!(debs.len(), 5, "{debs:?}");

    let purge = Purge;
    let mut install = vec!["-i"];
    install.extend(debs.iter().map(String::as_str));
    run("dpkg", &install);
    for name in SERVERS {
        assert!(
            run("getent", &["passwd", name]).contains("/usr/sbin/nologin"),
            "a system user of its own"
        );
        let unit = format!("/lib/systemd/system/{name}.service");
        run("systemd-analyze", &["verify", &unit]);
        let text = std::fs::read_to_string(&unit).unwrap();
        for line in [
            &format!("User={name}") as &str,
            "ProtectSystem=strict",
            &format!("StateDirectory={name}"),
            "NoNewPrivileges=yes",
        ] {
            assert!(text.contains(line), "{unit} lacks {line}");
        }
        let short = name.trim_start_matches("fleetmon-");
        assert!(
            run("dpkg-query", &["--control-show", name, "conffiles"])
                .contains(&format!("/etc/fleetmon/{short}.toml"))
        );
    }

    // The installed agent, with the packaged config (its collector and certificate
    // given on the command line, as an operator would after enrolling).
    let mut rig = CentralRig::start("").await;
    let files = rig.pki.client(fleetmon::identity::Role::Agent, "packaged");
    rig.procs.spawn(
        "packaged-agent",
        rig.logs.path(),
        Command::new("/usr/bin/fleetmon-agent")
            .args(["--config", "/etc/fleetmon/agent.toml", "--interval", "1"])
            .arg("--collector")
            .arg(format!("https://127.0.0.1:{}", rig.collector))
            .arg("--ca")
            .arg(&files.ca)
            .arg("--cert")
            .arg(&files.cert)
            .arg("--key")
            .arg(&files.key)
            .args(["--metrics-listen", "127.0.0.1:0"]),
    );
    eventually(
        &rig.schema,
        "SELECT count(*) FROM host_samples WHERE agent_id = 'packaged'",
        "the packaged agent's rows land",
        |n| n >= 2,
    )
    .await;
    assert!(
        Path::new("/var/lib/fleetmon-agent/spool").is_dir(),
        "its spool is where the packaged config puts it"
    );
    rig.procs.stop("packaged-agent");

    drop(purge);
    for path in [
        "/usr/bin/fleetmon-agent",
        "/usr/bin/fleetmon-collector",
        "/usr/bin/fleetmon-writer",
        "/usr/bin/fleetmon",
        "/lib/systemd/system/fleetmon-agent.service",
        "/etc/fleetmon",
        "/var/lib/fleetmon-agent",
        "/var/lib/fleetmon-collector",
        "/var/lib/fleetmon-writer",
        "/var/lib/fleetmon-status-page",
        "/lib/systemd/system/fleetmon-status-page.service",
        "/usr/share/doc/fleetmon-agent",
    ] {
        assert!(!Path::new(path).exists(), "{path} is left after purge");
    }
    for name in PACKAGES {
        let listed = Command::new("dpkg-query")
            .args(["-W", "-f", "${Status}", name])
            .output()
            .unwrap();
        assert!(
            !String::from_utf8_lossy(&listed.stdout).contains("installed"),
            "{name} still known to dpkg"
        );
    }
    for user in SERVERS {
        assert!(
            !Command::new("getent")
                .args(["passwd", user])
                .status()
                .unwrap()
                .success(),
            "user {user} is left after purge"
        );
    }
}

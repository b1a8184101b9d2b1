//! The writer's command line: environment names on the common flags, and no secret in
//! `--help`.

use std::process::Command;

fn writer() -> Command {
    Command::new(env!("CARGO_BIN_EXE_fleetmon-writer"))
}

#[test]
fn help_names_the_database_url_variable_but_never_its_value() {
    let output = writer()
        .arg("--help")
        .env(
            "FLEETMON_PG_URL",
            "postgres://fleetmon:s3cret-pw@db/fleetmon",
        )
        .output()
        .expect("run fleetmon-writer --help");
    assert!(output.status.success());
    let help = String::from_utf8(output.stdout).unwrap();
    assert!(help.contains("[env: FLEETMON_PG_URL]"), "{help}");
    assert!(help.contains("[env: FLEETMON_WRITER_LISTEN=]"), "{help}");
    assert!(!help.contains("s3cret-pw"), "{help}");
}

#[test]
fn listen_from_the_environment_is_checked_like_the_flag() {
    let output = writer()
        .env("FLEETMON_WRITER_LISTEN", "nowhere")
        .output()
        .expect("run fleetmon-writer");
    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        stderr.contains("invalid value 'nowhere' for '--listen <LISTEN>'"),
        "{stderr}"
    );
}

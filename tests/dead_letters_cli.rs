//! `fleetmon dead-letters` against the real binaries: samples PostgreSQL refuses are
//! listed with their SQLSTATE, shown with their sample, and once the cause is fixed
//! replayed into rows, each stored once.

use std::time::{Duration, Instant};

use fleetmon::testkit::{CentralRig, eventually};
use serde_json::Value;

/// Polls `fleetmon ARGS --json` until `ok` holds for its answer (90 s at most).
fn until(rig: &CentralRig, args: &[&str], what: &str, ok: impl Fn(&Value) -> bool) -> Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    loop {
        let mut with_json = args.to_vec();
        with_json.push("--json");
        let value: Value = serde_json::from_str(&rig.fleetmon_ok(&with_json)).unwrap();
        if ok(&value) {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: still {value} after 90 s"
        );
        std::thread::sleep(Duration::from_millis(250));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_samples_are_listed_shown_and_replayed_once_the_cause_is_fixed() {
    let mut rig = CentralRig::start("").await;
    eventually(
        &rig.schema,
        "SELECT count(*) FROM information_schema.tables \
         WHERE table_schema = current_schema() AND table_name = 'host_samples'",
        "the writer's schema",
        |n| n == 1,
    )
    .await;
    // A rule of this database refuses every host sample of one agent.
    rig.schema
        .connect()
        .await
        .batch_execute(
            "ALTER TABLE host_samples ADD CONSTRAINT no_poisoned CHECK (agent_id <> 'poisoned')",
        )
        .await
        .unwrap();
    rig.agent("poisoned", "");
    let listed = until(
        &rig,
        &["dead-letters", "list", "--reason", "23514"],
        "two refused samples listed",
        |v| v.as_array().is_some_and(|a| a.len() >= 2),
    );
    let letters = listed.as_array().unwrap();
    for letter in letters {
        assert_eq!(letter["reason"], "23514", "{letter}");
        assert_eq!(letter["agent_id"], "poisoned", "{letter}");
        assert!(
            letter["error"]
                .as_str()
                .unwrap()
                .ends_with("violates check constraint \"no_poisoned\""),
            "{letter}"
        );
    }
    let id = letters[0]["id"].as_str().unwrap();
    let shown: Value =
        serde_json::from_str(&rig.fleetmon_ok(&["dead-letters", "show", id])).unwrap();
    assert_eq!(shown["headers"]["sqlstate"], "23514");
    assert_eq!(shown["sample"]["agent_id"], "poisoned");
    assert_eq!(shown["sample"]["seq"], letters[0]["seq"]);
    assert!(
        shown["sample"]["hostname"]
            .as_str()
            .is_some_and(|h| !h.is_empty())
    );
    let table = rig.fleetmon_ok(&["dead-letters", "list"]);
    assert!(
        table.starts_with("ID ") && table.contains(" 23514 ") && table.contains(" poisoned "),
        "{table}"
    );

    let (ok, _, stderr) = rig.fleetmon(&["dead-letters", "show", "nope"]);
    assert!(!ok);
    assert!(
        stderr.contains("id `nope` is not PARTITION:OFFSET (see `fleetmon dead-letters list`)"),
        "{stderr}"
    );
    let (ok, _, stderr) = rig.fleetmon(&["dead-letters", "replay"]);
    assert!(
        !ok && stderr.contains("the following required arguments were not provided"),
        "{stderr}"
    );

    // Nothing of the agent was stored; fixed, the replay stores what was refused.
    assert_eq!(
        rig.schema
            .scalar("SELECT count(*) FROM host_samples WHERE agent_id = 'poisoned'")
            .await,
        0
    );
    rig.schema
        .connect()
        .await
        .batch_execute("ALTER TABLE host_samples DROP CONSTRAINT no_poisoned")
        .await
        .unwrap();
    let replayed = rig.fleetmon_ok(&["dead-letters", "replay", "--all"]);
    assert!(replayed.starts_with("replayed "), "{replayed}");
    for letter in letters {
        let (stream, seq) = (
            letter["stream_id"].as_str().unwrap(),
            letter["seq"].as_u64().unwrap(),
        );
        eventually(
            &rig.schema,
            &format!(
                "SELECT count(*) FROM host_samples WHERE agent_id = 'poisoned' \
                 AND stream_id = '{stream}' AND seq = {seq}"
            ),
            "a replayed sample stored once",
            |n| n == 1,
        )
        .await;
    }
    // Replayed twice: still one row per sample.
    rig.fleetmon_ok(&["dead-letters", "replay", id]);
    assert_eq!(
        rig.schema
            .scalar(
                "SELECT count(*) - count(DISTINCT (stream_id, seq)) FROM host_samples \
                 WHERE agent_id = 'poisoned'"
            )
            .await,
        0
    );
    // Each replay is in the audit trail, with its author.
    let audit: serde_json::Value =
        serde_json::from_str(&rig.fleetmon_ok(&["audit", "--json"])).unwrap();
    let replays: Vec<&serde_json::Value> = audit
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["action"] == "dead_letters.replay")
        .collect();
    assert_eq!(replays.len(), 2, "the two that replayed: {audit}");
    assert!(replays.iter().all(|e| e["actor"] == "admin"), "{audit}");
    assert!(replays.iter().any(|e| e["subject"] == "all"), "{audit}");
}

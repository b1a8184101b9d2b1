//! Starting in any order: a writer started before PostgreSQL waits for it (its port
//! answering health checks NOT_SERVING) and then stores; a configuration error still ends the start at once, naming the cause.

use std::time::{Duration, SystemTime};

use fleetmon::identity::Role;
use fleetmon::testkit::{ServingStatus, wait_for_health};
use fleetmon_writer::testkit::*;
use tokio_util::sync::CancellationToken;

/// `url` with its host and port replaced by 127.0.0.1:`port`.
fn at_port(url: &str, port: u16) -> String {
    let mut url = url::Url::parse(url).expect("a postgres URL");
    url.set_host(Some("127.0.0.1")).unwrap();
    url.set_port(Some(port)).unwrap();
    url.to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_writer_started_before_postgresql_waits_for_it_then_stores() {
    let setup = Setup::new().await;
    let real = url::Url::parse(setup.schema.url()).unwrap();
    let real = format!(
        "{}:{}",
        real.host_str().unwrap(),
        real.port().unwrap_or(5432)
    );
    // Nothing answers PostgreSQL's port yet: only a listener that hangs up.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let mut config = setup.config.clone();
    config.postgres.url = at_port(setup.schema.url(), port);
    let grpc_port = fleetmon::testkit::free_port();
    config.listen = format!("127.0.0.1:{grpc_port}").parse().unwrap();
    let shutdown = CancellationToken::new();
    let starting = tokio::spawn(fleetmon_writer::start(config, shutdown.clone()));

    // The writer tries, is hung up on, and tries again: it waits rather than exits.
    for _ in 0..2 {
        let (socket, _) = listener.accept().await.unwrap();
        drop(socket);
    }
    assert!(!starting.is_finished(), "the writer gave up waiting");
    // Meanwhile its port answers health checks: NOT_SERVING, as a whole and per service.
    let grpc = format!("https://127.0.0.1:{grpc_port}");
    let operator = setup.pki.client(Role::Operator, "ops");
    for service in ["", "fleetmon.v1.History"] {
        wait_for_health(
            &grpc,
            &operator,
            service,
            ServingStatus::NotServing,
            Duration::from_secs(30),
        )
        .await;
    }
    // And any other call: UNAVAILABLE, which clients retry, saying why.
    let mut history = fleetmon::pb::history_client::HistoryClient::new(
        fleetmon::tls::endpoint(&grpc, &operator)
            .unwrap()
            .connect_lazy(),
    );
    let early = history
        .list_stored_agents(fleetmon::pb::ListStoredAgentsRequest {})
        .await
        .unwrap_err();
    assert_eq!(
        (early.code(), early.message()),
        (
            tonic::Code::Unavailable,
            "starting: waiting for PostgreSQL; try again shortly"
        )
    );

    // PostgreSQL "comes up": the port now leads to the real server.
    fleetmon::testkit::forward_to(listener, real);
    let running = starting
        .await
        .unwrap()
        .expect("the writer starts once PostgreSQL answers");
    assert_eq!(running.grpc_addr.port(), grpc_port);
    wait_for_health(
        &grpc,
        &operator,
        "",
        ServingStatus::Serving,
        Duration::from_secs(30),
    )
    .await;
    setup
        .produce_hosts(&[host("late-db", 1, SystemTime::now())])
        .await;
    setup
        .wait_for(
            "SELECT count(*) FROM host_samples WHERE agent_id = 'late-db'",
            1,
        )
        .await;
    TestWriter { running, shutdown }.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_that_does_not_exist_ends_the_start_naming_it() {
    let setup = Setup::new().await;
    let mut config = setup.config.clone();
    let mut url = url::Url::parse(setup.schema.url()).unwrap();
    url.set_path("/no_such_database");
    config.postgres.url = url.to_string();
    let Err(error) = fleetmon_writer::start(config, CancellationToken::new()).await else {
        panic!("a configuration error ends the start");
    };
    assert!(
        error
            .to_string()
            .contains("database \"no_such_database\" does not exist"),
        "{error}"
    );
}

//! Rows through the real Postgres with binary COPY, in a schema of the test's own.

use fleetmon::testkit::PgSchema;
use futures::pin_mut;
use tokio_postgres::binary_copy::BinaryCopyInWriter;
use tokio_postgres::types::Type;

#[tokio::test]
async fn binary_copy_rows_are_stored_in_the_test_schema() {
    let schema = PgSchema::create().await;
    let client = schema.connect().await;
    client
        .batch_execute(
            "CREATE TABLE samples (agent_id text NOT NULL, seq bigint NOT NULL, cpu double precision, \
             PRIMARY KEY (agent_id, seq))",
        )
        .await
        .unwrap();

    let sink = client
        .copy_in("COPY samples (agent_id, seq, cpu) FROM STDIN BINARY")
        .await
        .unwrap();
    let writer = BinaryCopyInWriter::new(sink, &[Type::TEXT, Type::INT8, Type::FLOAT8]);
    pin_mut!(writer);
    for seq in 1..=1000i64 {
        let agent = format!("a{}", seq % 3);
        let cpu = seq as f64 / 100.0;
        writer.as_mut().write(&[&agent, &seq, &cpu]).await.unwrap();
    }
    assert_eq!(writer.finish().await.unwrap(), 1000);

    let row = client
        .query_one("SELECT count(*), sum(seq)::bigint FROM samples", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, i64>(0), 1000);
    assert_eq!(row.get::<_, i64>(1), 500_500);
    let row = client
        .query_one("SELECT agent_id, cpu FROM samples WHERE seq = 42", &[])
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "a0");
    assert_eq!(row.get::<_, f64>(1), 0.42);

    // The table lives in the test's schema, nowhere else.
    let other = PgSchema::create().await;
    let other_client = other.connect().await;
    let error = other_client
        .query_one("SELECT count(*) FROM samples", &[])
        .await
        .unwrap_err();
    assert_eq!(
        error.as_db_error().map(|e| e.message()),
        Some("relation \"samples\" does not exist")
    );
}

#[tokio::test]
async fn schemas_are_dropped_when_the_test_ends() {
    let name = {
        let schema = PgSchema::create().await;
        schema.name.clone()
    };
    let probe = PgSchema::create().await;
    let client = probe.connect().await;
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0, "schema {name} should have been dropped");
}

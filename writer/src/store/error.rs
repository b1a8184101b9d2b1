//! Why PostgreSQL could not be used, and whether trying again can help: a refusal of
//! the *data* (this row can never be stored) or a failure of *availability* (the
//! database is away, try again).

/// Why Postgres could not be used.
#[derive(Debug, thiserror::Error)]
pub enum SinkError {
    /// The URL does not parse.
    #[error("invalid postgres.url: {0}")]
    Url(tokio_postgres::Error),
    /// The CA file for TLS could not be read.
    #[error(transparent)]
    Tls(#[from] fleetmon::tls::TlsError),
    /// No connection from the pool.
    #[error("cannot get a PostgreSQL connection: {0}")]
    Pool(#[from] deadpool_postgres::PoolError),
    /// A statement failed.
    #[error("postgres: {}", describe(.0))]
    Query(#[from] tokio_postgres::Error),
    /// A value could not be encoded for a binary COPY.
    #[error("cannot encode column {column} for COPY: {source}")]
    Encode {
        /// The column.
        column: &'static str,
        /// postgres-types' explanation.
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// Migrations failed.
    #[error("schema migration failed: {0}")]
    Migration(#[from] refinery::Error),
    /// The pool could not be built.
    #[error("cannot build the PostgreSQL pool: {0}")]
    Build(#[from] deadpool_postgres::BuildError),
    /// No connection at start, with what to change.
    #[error("cannot connect to PostgreSQL: {reason}: {hint}")]
    Connect {
        /// The client's error.
        reason: String,
        /// What to do about it.
        hint: String,
    },
}

impl SinkError {
    /// Whether PostgreSQL is not there yet (no answer, refused, starting up, out of
    /// connections) rather than set up wrong (a bad URL, TLS, password or database
    /// name): at start the writer waits for the first and exits on the second.
    pub fn is_unreachable(&self) -> bool {
        let transient = fleetmon::postgres::is_unreachable;
        match self {
            SinkError::Pool(deadpool_postgres::PoolError::Timeout(_)) => true,
            SinkError::Pool(deadpool_postgres::PoolError::Backend(error))
            | SinkError::Query(error) => transient(error),
            _ => false,
        }
    }
}

pub use fleetmon::postgres::describe;

/// What kind of failure a batch write met.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Failure {
    /// PostgreSQL refused a value: the same rows will always fail.
    Data {
        /// The SQLSTATE (`encode` when the value could not even be encoded for COPY).
        sqlstate: String,
        /// The server's message.
        message: String,
    },
    /// The database is unreachable, out of resources, shutting down, or a
    /// transaction lost a race: the same rows may be stored later.
    Availability,
}

impl Failure {
    /// Classifies a write error by its SQLSTATE class: 22 (data exception), 23
    /// (integrity, except a unique violation: that is the de-duplication key, met only
    /// in a race with another writer) and 54 (program limit) are data; everything else
    /// (08 connection, 53 resources, 57 operator intervention, 40 serialization, no
    /// server answer at all) is availability.
    pub fn of(error: &SinkError) -> Failure {
        match error {
            SinkError::Encode { column, source } => Failure::Data {
                sqlstate: "encode".to_owned(),
                message: format!("cannot encode column {column}: {source}"),
            },
            SinkError::Query(error) => match error.as_db_error() {
                Some(db) => {
                    let sqlstate = db.code().code();
                    let data = match &sqlstate[..2] {
                        "22" | "54" => true,
                        "23" => sqlstate != "23505",
                        _ => false,
                    };
                    if data {
                        Failure::Data {
                            sqlstate: sqlstate.to_owned(),
                            message: db.message().to_owned(),
                        }
                    } else {
                        Failure::Availability
                    }
                }
                None => Failure::Availability,
            },
            _ => Failure::Availability,
        }
    }
}

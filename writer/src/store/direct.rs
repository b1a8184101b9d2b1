//! Storing rows the fast way first: straight into their table, under a savepoint, and
//! the careful way only when that meets a row already stored.

use deadpool_postgres::Transaction;
use tokio_postgres::error::SqlState;

use super::error::SinkError;

/// Runs `write`, which stores rows straight into their table, under a savepoint: true
/// when it stored them all; false when it met a row already stored (a redelivery) and
/// was rolled back, so that the caller takes the careful way.
pub async fn stored_directly(
    tx: &Transaction<'_>,
    write: impl Future<Output = Result<u64, SinkError>>,
) -> Result<bool, SinkError> {
    tx.batch_execute("SAVEPOINT direct").await?;
    match write.await {
        Ok(_) => {
            tx.batch_execute("RELEASE SAVEPOINT direct").await?;
            Ok(true)
        }
        Err(SinkError::Query(error)) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => {
            tx.batch_execute("ROLLBACK TO SAVEPOINT direct").await?;
            Ok(false)
        }
        Err(error) => Err(error),
    }
}

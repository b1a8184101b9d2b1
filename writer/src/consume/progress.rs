//! How far this writer has stored each partition it holds, for the rules that judge
//! agents by time: an agent is not silent while samples that would show it alive may
//! still wait in Kafka.
//!
//! A partition is stored up to a time when every record published to it before that
//! time is in PostgreSQL. Two readings say so: the consumer's statistics (every
//! `statistics.interval.ms`, 5 s) showing nothing left to store in the partition
//! (stored up to then), and each stored batch (up to its newest host sample). The
//! writer saves these to `partition_progress` every few seconds; the timed rules
//! take the oldest of the host topic's partitions as what they may judge up to.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use deadpool_postgres::Pool;
use tokio_util::sync::CancellationToken;

use crate::consume::row_batch::PartitionKey;
use crate::store::SinkError;

/// How often the progress is saved.
const SAVE_INTERVAL: Duration = Duration::from_secs(2);

const SAVE_PROGRESS: &str = include_str!("../../sql/save_partition_progress.sql");

/// Partition → the time it is stored up to; shared by the consumer's callbacks and
/// the pipeline.
#[derive(Debug, Clone, Default)]
pub struct Progress(Arc<Mutex<HashMap<PartitionKey, SystemTime>>>);

impl Progress {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PartitionKey, SystemTime>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// `partition` is stored up to `to` (an earlier time than known changes nothing).
    pub fn advance(&self, partition: PartitionKey, to: SystemTime) {
        let mut known = self.lock();
        let at = known.entry(partition).or_insert(to);
        *at = (*at).max(to);
    }

    /// Partitions this writer no longer holds: their new owner says how far they are.
    pub fn forget(&self, partitions: &[PartitionKey]) {
        let mut known = self.lock();
        for partition in partitions {
            known.remove(partition);
        }
    }

    /// What is known now.
    pub fn snapshot(&self) -> Vec<(PartitionKey, SystemTime)> {
        self.lock().iter().map(|(k, t)| (k.clone(), *t)).collect()
    }
}

/// Saves the progress every [`SAVE_INTERVAL`] until `shutdown` (a failed save is
/// logged and tried again: the rules then judge by the last saved, older times).
pub async fn save(pool: Pool, progress: Progress, shutdown: CancellationToken) {
    loop {
        tokio::select! {
            () = tokio::time::sleep(SAVE_INTERVAL) => {}
            () = shutdown.cancelled() => return,
        }
        if let Err(error) = save_once(&pool, &progress).await {
            tracing::warn!(%error, "partition progress not saved; retrying");
        }
    }
}

async fn save_once(pool: &Pool, progress: &Progress) -> Result<(), SinkError> {
    let known = progress.snapshot();
    if known.is_empty() {
        return Ok(());
    }
    let topics: Vec<&str> = known.iter().map(|((topic, _), _)| topic.as_str()).collect();
    let partitions: Vec<i32> = known.iter().map(|((_, partition), _)| *partition).collect();
    let times: Vec<SystemTime> = known.iter().map(|(_, at)| *at).collect();
    let client = pool.get().await?;
    client
        .execute(SAVE_PROGRESS, &[&topics, &partitions, &times])
        .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn progress_only_moves_forward_and_forgets_partitions_given_away() {
        let progress = Progress::default();
        let t = |s| SystemTime::UNIX_EPOCH + Duration::from_secs(s);
        let p0 = ("hosts".to_owned(), 0);
        progress.advance(p0.clone(), t(100));
        progress.advance(p0.clone(), t(50));
        progress.advance(("hosts".to_owned(), 1), t(70));
        let mut known = progress.snapshot();
        known.sort();
        assert_eq!(
            known,
            [(p0.clone(), t(100)), (("hosts".to_owned(), 1), t(70))]
        );
        progress.forget(&[p0]);
        assert_eq!(progress.snapshot().len(), 1);
    }
}

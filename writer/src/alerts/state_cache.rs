//! The check states a writer keeps in memory, so that a batch reads from PostgreSQL
//! only the states of pairs it has not seen (docs/BENCHMARKS.md, alert evaluation).
//!
//! A (check, location) pair's results all come through one Kafka partition, and a
//! batch holds its partitions for its transaction (`lock_partitions.sql`), so the
//! states of a partition are moved by one batch at a time. The cache mirrors what this
//! writer's batches committed. It can be trusted for a partition only while no other
//! writer moved that partition's states since: each batch records its writer as the
//! partition's last holder (`claim_partitions.sql`, in the batch's transaction), and a
//! partition another writer held last empties the cache. That also covers a writer
//! that lost its partitions without hearing of it (paused past its session) while
//! another stored them.
//!
//! A batch's states reach the cache only once its transaction committed; a batch that
//! did not commit (or whose commit is in doubt) empties it at the next batch.

use std::collections::BTreeMap;
use std::sync::Mutex;

use deadpool_postgres::Transaction;

use crate::alerts::rules::LocationState;
use crate::store::SinkError;

/// A (check key, location) pair.
pub type Pair = (String, String);

/// At most this many pairs are kept (about 250 bytes each): beyond it, pairs are read
/// from PostgreSQL as without a cache.
pub const MAX_PAIRS: usize = 200_000;

const CLAIM_PARTITIONS: &str = include_str!("../../sql/claim_partitions.sql");

/// The states this writer's batches committed, for the partitions it held last.
#[derive(Debug)]
pub struct StateCache {
    /// This writer's token in `partition_holders`.
    holder: String,
    /// The most pairs kept.
    max_pairs: usize,
    inner: Mutex<Inner>,
}

#[derive(Debug, Default)]
struct Inner {
    states: foldhash::HashMap<Pair, LocationState>,
    /// The states a batch stored, not yet committed: applied by [`StateCache::committed`].
    /// Still here when the next batch begins, its batch did not commit.
    pending: Option<BTreeMap<Pair, LocationState>>,
}

impl Default for StateCache {
    fn default() -> Self {
        StateCache::new(MAX_PAIRS)
    }
}

impl StateCache {
    /// An empty cache of at most `max_pairs` pairs, with a token of its own.
    pub fn new(max_pairs: usize) -> Self {
        StateCache {
            holder: uuid::Uuid::new_v4().to_string(),
            max_pairs,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Begins a batch over `partitions` (topic, partition) in `tx`, which holds them:
    /// records this writer as their last holder and empties the cache if another
    /// writer (or none) was, or if the previous batch did not commit.
    pub async fn begin(
        &self,
        tx: &Transaction<'_>,
        partitions: &[(&str, i32)],
    ) -> Result<(), SinkError> {
        let (topics, numbers): (Vec<&str>, Vec<i32>) = partitions.iter().copied().unzip();
        let claim = tx.prepare_cached(CLAIM_PARTITIONS).await?;
        let taken = tx.query(&claim, &[&topics, &numbers, &self.holder]).await?;
        let mut inner = self.lock();
        let unfinished = inner.pending.take().is_some();
        if !taken.is_empty() || unfinished {
            if !inner.states.is_empty() {
                tracing::debug!(
                    partitions_taken = taken.len(),
                    unfinished,
                    pairs = inner.states.len(),
                    "check state cache emptied"
                );
            }
            inner.states = foldhash::HashMap::default();
        }
        Ok(())
    }

    /// The kept states of `pairs`, and the pairs not kept.
    pub fn get<'a>(
        &self,
        pairs: impl IntoIterator<Item = &'a Pair>,
    ) -> (BTreeMap<Pair, LocationState>, Vec<&'a Pair>) {
        let inner = self.lock();
        let mut found = BTreeMap::new();
        let mut missing = Vec::new();
        for pair in pairs {
            match inner.states.get(pair) {
                Some(state) => {
                    found.insert(pair.clone(), state.clone());
                }
                None => missing.push(pair),
            }
        }
        (found, missing)
    }

    /// The states the batch leaves stored (read, or written by it), kept once its
    /// transaction commits.
    pub fn stored(&self, states: BTreeMap<Pair, LocationState>) {
        self.lock().pending = Some(states);
    }

    /// The batch's transaction committed: its states are what PostgreSQL holds.
    pub fn committed(&self) {
        let mut inner = self.lock();
        let Some(states) = inner.pending.take() else {
            return;
        };
        for (pair, state) in states {
            if inner.states.len() >= self.max_pairs && !inner.states.contains_key(&pair) {
                continue;
            }
            inner.states.insert(pair, state);
        }
    }

    /// The batch's alert work was rolled back (its states are not stored): nothing of
    /// it is kept, and the cache stays as it was.
    pub fn rolled_back(&self) {
        self.lock().pending = None;
    }

    /// How many pairs are kept.
    pub fn len(&self) -> usize {
        self.lock().states.len()
    }

    /// Whether none is.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;

    fn pair(agent: &str) -> Pair {
        ("shop".to_owned(), agent.to_owned())
    }

    fn states(agents: &[&str]) -> BTreeMap<Pair, LocationState> {
        agents
            .iter()
            .map(|agent| (pair(agent), LocationState::new(SystemTime::UNIX_EPOCH)))
            .collect()
    }

    #[test]
    fn a_batchs_states_are_kept_only_once_it_committed() {
        let cache = StateCache::new(10);
        cache.stored(states(&["eu-1"]));
        assert!(cache.is_empty(), "not before the commit");
        cache.committed();
        let wanted = [pair("eu-1"), pair("us-1")];
        let (found, missing) = cache.get(&wanted);
        assert_eq!(found.keys().collect::<Vec<_>>(), [&pair("eu-1")]);
        assert_eq!(missing, [&pair("us-1")]);
    }

    #[test]
    fn alert_work_rolled_back_leaves_the_cache_as_it_was() {
        let cache = StateCache::new(10);
        cache.stored(states(&["eu-1"]));
        cache.rolled_back();
        cache.committed();
        assert!(cache.is_empty());
    }

    #[test]
    fn no_more_pairs_are_kept_than_the_bound_and_kept_ones_still_change() {
        let cache = StateCache::new(2);
        cache.stored(states(&["a", "b", "c"]));
        cache.committed();
        assert_eq!(cache.len(), 2);
        let mut changed = states(&["a"]);
        changed.get_mut(&pair("a")).unwrap().consecutive_failures = 4;
        cache.stored(changed);
        cache.committed();
        let (found, _) = cache.get(&[pair("a")]);
        assert_eq!(found[&pair("a")].consecutive_failures, 4);
    }
}

//! The outbox: every sample the agent measured and the collector has not yet
//! acknowledged, numbered `(stream_id, seq)`.
//!
//! It is bounded: when full it drops the oldest sample and counts it. While it drops,
//! it logs at most once a minute; when a run of drops ends (the next acknowledgement,
//! or the agent stops) it logs exactly which seqs went: `first_seq..=last_seq`.
//!
//! With a spool directory it also lives on disk, so unacknowledged samples (and the
//! stream id and next seq) survive a restart:
//!
//! - `stream`: the stream id;
//! - `settled`: the highest seq that is acknowledged or dropped (nothing at or below
//!   it is ever sent again);
//! - `samples.log`: every sample pushed, length-delimited protobuf, truncated when
//!   everything in it is settled. A torn last record (killed mid-write) is ignored.
//!
//! The files are written by a thread of their own (`fleetmon-spool`), never on the
//! async executor and never under the outbox's lock: the lock only queues what to
//! write, in seq order. A sample is sent only once it is in the log, so a seq the
//! collector has seen is never given to another sample after a kill.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use fleetmon::pb::{Sample, sample::Kind};
use fleetmon::samples::SampleKind;
use fleetmon::telemetry::LogEvery;
use prost::Message as _;
use tokio::sync::Notify;

use crate::metrics::{AgentMetrics, KindLabel};

/// How often a full outbox may log that it drops samples.
pub const DROP_LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Rewrite the log once it is this much larger than what it must hold.
const COMPACT_BYTES: u64 = 16 * 1024 * 1024;

/// Why the spool could not be used.
#[derive(Debug, thiserror::Error)]
#[error("spool {path}: {source}")]
pub struct SpoolError {
    path: PathBuf,
    source: std::io::Error,
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> SpoolError + '_ {
    move |source| SpoolError {
        path: path.to_owned(),
        source,
    }
}

/// The seq of a sample.
pub fn seq_of(sample: &Sample) -> u64 {
    sample.kind.as_ref().map_or(0, Kind::seq)
}

#[derive(Debug)]
struct Spool {
    dir: PathBuf,
    log: File,
}

impl Spool {
    fn write_settled(&self, settled: u64) -> Result<(), SpoolError> {
        let path = self.dir.join("settled");
        let tmp = self.dir.join("settled.tmp");
        write_private(&tmp, settled.to_string().as_bytes())?;
        fs::rename(&tmp, &path).map_err(io_error(&path))
    }

    fn append(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let path = self.dir.join("samples.log");
        self.log.write_all(bytes).map_err(io_error(&path))
    }

    /// Replaces the log with `bytes` (length-delimited samples).
    fn rewrite(&mut self, bytes: &[u8]) -> Result<(), SpoolError> {
        let path = self.dir.join("samples.log");
        let tmp = self.dir.join("samples.log.tmp");
        write_private(&tmp, bytes)?;
        fs::rename(&tmp, &path).map_err(io_error(&path))?;
        self.log = OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(io_error(&path))?;
        Ok(())
    }
}

/// Writes a spool file readable by the agent's user only: samples carry what sites
/// answered and the URLs checked.
fn write_private(path: &Path, bytes: &[u8]) -> Result<(), SpoolError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut file| file.write_all(bytes))
        .map_err(io_error(path))
}

/// What the spool thread is asked to write, in the order the outbox decided it.
#[derive(Debug)]
enum SpoolWrite {
    /// A pushed sample, length-delimited.
    Append { seq: u64, bytes: Vec<u8> },
    /// The new highest settled seq.
    Settled(u64),
    /// The whole log, replaced by what is still queued.
    Rewrite(Vec<u8>),
    /// Answered once everything queued before it is written.
    Flush(tokio::sync::oneshot::Sender<()>),
}

/// Progress the spool thread reports back to the outbox.
#[derive(Debug)]
struct Written {
    /// The highest seq in the log: samples above it are not sent yet.
    through: AtomicU64,
    /// fsyncs of the log so far.
    syncs: AtomicU64,
    /// Wakes the sender after a push (or, spooled, once the push is in the log).
    pushed: tokio::sync::Notify,
}

/// How often the spool's log is fsynced by default.
pub const DEFAULT_SPOOL_SYNC: Duration = Duration::from_secs(1);

/// Writes the spool's files, batching what queued while it wrote, and fsyncs the log
/// at most every `sync_every` (zero: after every batch), and when idle with writes not
/// yet synced: a power cut loses at most that long of samples, a crash of the agent
/// none.
fn write_spool(
    mut spool: Spool,
    writes: mpsc::Receiver<SpoolWrite>,
    written: Arc<Written>,
    sync_every: Duration,
) {
    let mut last_sync = Instant::now();
    let mut unsynced = false;
    let sync = |spool: &Spool| {
        if let Err(error) = spool.log.sync_data() {
            tracing::warn!(%error, "cannot fsync the spool");
        }
        written.syncs.fetch_add(1, Ordering::Relaxed);
        Instant::now()
    };
    loop {
        let first = if unsynced {
            let wait = sync_every.saturating_sub(last_sync.elapsed());
            match writes.recv_timeout(wait) {
                Ok(write) => write,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    last_sync = sync(&spool);
                    unsynced = false;
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match writes.recv() {
                Ok(write) => write,
                Err(_) => break,
            }
        };
        let mut appended = Vec::new();
        let mut appended_through = None;
        let mut settled = None;
        let mut flushes = Vec::new();
        for write in std::iter::once(first).chain(writes.try_iter()) {
            match write {
                SpoolWrite::Append { seq, bytes } => {
                    appended.extend_from_slice(&bytes);
                    appended_through = Some(seq);
                }
                SpoolWrite::Settled(seq) => settled = Some(seq),
                SpoolWrite::Rewrite(bytes) => {
                    // Appends queued before the rewrite are in `bytes` already.
                    appended.clear();
                    if let Err(error) = spool.rewrite(&bytes) {
                        tracing::warn!(%error, "cannot compact the spool");
                    }
                }
                SpoolWrite::Flush(done) => flushes.push(done),
            }
        }
        if !appended.is_empty() {
            match spool.append(&appended) {
                Ok(()) => unsynced = true,
                Err(error) => {
                    tracing::warn!(%error, "cannot spool samples; they are kept in memory only");
                }
            }
        }
        if unsynced && last_sync.elapsed() >= sync_every {
            last_sync = sync(&spool);
            unsynced = false;
        }
        if let Some(seq) = settled
            && let Err(error) = spool.write_settled(seq)
        {
            tracing::warn!(%error, "cannot record acknowledged samples in the spool");
        }
        if let Some(seq) = appended_through {
            written.through.store(seq, Ordering::Release);
            written.pushed.notify_one();
        }
        for done in flushes {
            // A caller that stopped waiting for its flush needs no answer.
            let _ = done.send(());
        }
    }
    // The outbox is gone (the agent stops): what it wrote reaches the disk.
    if unsynced {
        sync(&spool);
    }
}

/// The outbox's side of the spool: where to queue writes, and how big the log is.
#[derive(Debug)]
struct SpoolQueue {
    writes: mpsc::Sender<SpoolWrite>,
    /// Bytes in the log once every queued write is done.
    log_bytes: u64,
}

impl SpoolQueue {
    fn send(&self, write: SpoolWrite) {
        // The thread only ends when the outbox drops this sender, so it is listening.
        let _ = self.writes.send(write);
    }
}

#[derive(Debug)]
struct State {
    stream_id: String,
    next_seq: u64,
    /// Unacknowledged samples in seq order.
    queue: VecDeque<Sample>,
    queue_bytes: u64,
    /// Highest seq acknowledged or dropped.
    settled: u64,
    acked: u64,
    dropped: u64,
    /// Drops counted for the "outbox full" warning, at most one a minute.
    drop_log: LogEvery,
    /// Consecutive seqs dropped and not yet reported.
    drop_run: Option<DropRun>,
    spool: Option<SpoolQueue>,
}

/// Consecutive dropped seqs, `first..=last`.
#[derive(Debug, Clone, Copy)]
struct DropRun {
    first: u64,
    last: u64,
}

impl State {
    fn record_drop(&mut self, seq: u64) {
        match &mut self.drop_run {
            Some(run) if run.last + 1 == seq => run.last = seq,
            _ => {
                self.report_drops();
                self.drop_run = Some(DropRun {
                    first: seq,
                    last: seq,
                });
            }
        }
    }

    /// Logs the pending run of dropped seqs, if any.
    fn report_drops(&mut self) {
        if let Some(run) = self.drop_run.take() {
            tracing::warn!(
                stream_id = %self.stream_id,
                first_seq = run.first,
                last_seq = run.last,
                count = run.last - run.first + 1,
                "samples dropped: the outbox was full"
            );
        }
    }
}

/// What [`Outbox::push`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pushed {
    /// The seq given to the sample.
    pub seq: u64,
    /// Whether the oldest sample was dropped to make room.
    pub dropped_oldest: bool,
}

/// Bounded, optionally spooled queue of unacknowledged samples. Shared by the
/// samplers (push) and the sender (read, ack).
#[derive(Debug)]
pub struct Outbox {
    state: Mutex<State>,
    capacity: usize,
    /// Encoded bytes held at most (the newest sample is always kept).
    max_bytes: u64,
    written: Arc<Written>,
    spool_thread: Option<JoinHandle<()>>,
}

impl Outbox {
    /// Holds at most `max_bytes` of encoded samples too: past it the oldest are dropped
    /// as past `capacity` (site checks carry bodies' matched text, so a count alone
    /// does not bound memory or the spool).
    pub fn with_max_bytes(mut self, max_bytes: u64) -> Self {
        self.max_bytes = max_bytes;
        self
    }

    /// An outbox for at most `capacity` samples, restored from `spool_dir` if given.
    pub fn open(capacity: usize, spool_dir: Option<&Path>) -> Result<Self, SpoolError> {
        Self::open_synced(capacity, spool_dir, DEFAULT_SPOOL_SYNC)
    }

    /// [`Outbox::open`], fsyncing the spool's log at most every `sync_every` (zero:
    /// after every write).
    pub fn open_synced(
        capacity: usize,
        spool_dir: Option<&Path>,
        sync_every: Duration,
    ) -> Result<Self, SpoolError> {
        let mut state = State {
            stream_id: uuid::Uuid::new_v4().to_string(),
            next_seq: 1,
            queue: VecDeque::new(),
            queue_bytes: 0,
            settled: 0,
            acked: 0,
            dropped: 0,
            drop_log: LogEvery::new(DROP_LOG_INTERVAL),
            drop_run: None,
            spool: None,
        };
        let written = Arc::new(Written {
            through: AtomicU64::new(0),
            syncs: AtomicU64::new(0),
            pushed: Notify::new(),
        });
        let mut spool_thread = None;
        if let Some(dir) = spool_dir {
            let (spool, log_bytes) = restore(&mut state, dir, capacity)?;
            written.through.store(state.next_seq - 1, Ordering::Release);
            let (writes, queued) = mpsc::channel();
            let thread_written = written.clone();
            spool_thread = Some(
                std::thread::Builder::new()
                    .name("fleetmon-spool".to_owned())
                    .spawn(move || write_spool(spool, queued, thread_written, sync_every))
                    .map_err(io_error(dir))?,
            );
            state.spool = Some(SpoolQueue { writes, log_bytes });
        }
        Ok(Outbox {
            state: Mutex::new(state),
            capacity,
            max_bytes: u64::MAX,
            written,
            spool_thread,
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This agent's stream id.
    pub fn stream_id(&self) -> String {
        self.lock().stream_id.clone()
    }

    /// Pushes a sample the agent took, counting it (`samples_taken`, `dropped`) and
    /// setting `queue_depth`.
    pub fn push_counted(&self, kind: Kind, metrics: &AgentMetrics) {
        metrics
            .samples_taken
            .get_or_create(&KindLabel {
                kind: SampleKind::of(&kind).label(),
            })
            .inc();
        if self.push(kind).dropped_oldest {
            metrics.dropped.inc();
        }
        metrics.queue_depth.set(self.len() as i64);
    }

    /// Numbers a sample, queues it (dropping the oldest when full) and spools it.
    pub fn push(&self, kind: Kind) -> Pushed {
        let pushed = {
            let mut state = self.lock();
            let state = &mut *state;
            let seq = state.next_seq;
            state.next_seq += 1;
            let mut kind = kind;
            kind.number(&state.stream_id, seq);
            let sample = Sample { kind: Some(kind) };
            if let Some(spool) = &mut state.spool {
                let bytes = sample.encode_length_delimited_to_vec();
                spool.log_bytes += bytes.len() as u64;
                spool.send(SpoolWrite::Append { seq, bytes });
            }
            state.queue_bytes += sample.encoded_len() as u64;
            state.queue.push_back(sample);
            let mut dropped_oldest = false;
            while (state.queue.len() > self.capacity || state.queue_bytes > self.max_bytes)
                && state.queue.len() > 1
                && let Some(oldest) = state.queue.pop_front()
            {
                dropped_oldest = true;
                state.queue_bytes -= oldest.encoded_len() as u64;
                state.settled = state.settled.max(seq_of(&oldest));
                state.record_drop(seq_of(&oldest));
                state.dropped += 1;
                if let Some(dropped) = state.drop_log.count(1, Instant::now()) {
                    tracing::warn!(
                        dropped,
                        total_dropped = state.dropped,
                        capacity = self.capacity,
                        max_bytes = self.max_bytes,
                        through_seq = state.settled,
                        "outbox full: oldest samples dropped"
                    );
                }
                persist_settled(state);
            }
            Pushed {
                seq,
                dropped_oldest,
            }
        };
        if self.spool_thread.is_none() {
            self.written.pushed.notify_one();
        }
        pushed
    }

    /// The queued samples that may be sent, from the first with seq above `after`:
    /// spooled, only those already in the log.
    fn sendable<'a>(&self, state: &'a State, after: u64) -> impl Iterator<Item = &'a Sample> {
        let through = match self.spool_thread {
            Some(_) => self.written.through.load(Ordering::Acquire),
            None => u64::MAX,
        };
        let start = state.queue.partition_point(|s| seq_of(s) <= after);
        state
            .queue
            .range(start..)
            .take_while(move |s| seq_of(s) <= through)
    }

    /// Up to `max` queued samples with seq above `after`, in seq order.
    pub fn after(&self, after: u64, max: usize) -> Vec<Sample> {
        let state = self.lock();
        self.sendable(&state, after).take(max).cloned().collect()
    }

    /// Queued samples with seq above `after` that may be sent.
    pub fn count_after(&self, after: u64) -> usize {
        let state = self.lock();
        self.sendable(&state, after).count()
    }

    /// The collector acknowledged every seq up to `through`: forget them. Returns
    /// how many were removed.
    pub fn ack(&self, stream_id: &str, through: u64) -> usize {
        let mut state = self.lock();
        let state = &mut *state;
        if stream_id != state.stream_id || through <= state.acked {
            return 0;
        }
        state.acked = through;
        state.report_drops();
        let mut removed = 0;
        while state.queue.front().is_some_and(|s| seq_of(s) <= through) {
            let sample = state.queue.pop_front().expect("front exists");
            state.queue_bytes -= sample.encoded_len() as u64;
            removed += 1;
        }
        state.settled = state.settled.max(through);
        persist_settled(state);
        if let Some(spool) = &mut state.spool {
            let stale = spool.log_bytes > state.queue_bytes.saturating_mul(2) + COMPACT_BYTES;
            if (state.queue.is_empty() && spool.log_bytes > 0) || stale {
                let bytes = encode_all(&state.queue);
                spool.log_bytes = bytes.len() as u64;
                spool.send(SpoolWrite::Rewrite(bytes));
            }
        }
        removed
    }

    /// The highest seq acknowledged or dropped: a new connection resends what is above.
    pub fn settled(&self) -> u64 {
        self.lock().settled
    }

    /// Samples waiting for an acknowledgement.
    pub fn len(&self) -> usize {
        self.lock().queue.len()
    }

    /// True when nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Samples dropped because the outbox was full, since start.
    pub fn dropped(&self) -> u64 {
        self.lock().dropped
    }

    /// Logs what was dropped and not yet reported, then where the stream stands:
    /// call once, when the agent stops.
    pub fn report_on_stop(&self) {
        let mut state = self.lock();
        state.report_drops();
        tracing::info!(
            stream_id = %state.stream_id,
            last_seq = state.next_seq - 1,
            unacknowledged = state.queue.len(),
            dropped = state.dropped,
            spooled = state.spool.is_some(),
            "outbox closed"
        );
    }

    /// Resolves after the next push (spooled: once it is in the log).
    pub async fn pushed(&self) {
        self.written.pushed.notified().await;
    }

    /// Resolves once every spool write queued so far is done.
    pub async fn flush(&self) {
        let (done, flushed) = tokio::sync::oneshot::channel();
        if let Some(spool) = &self.lock().spool {
            spool.send(SpoolWrite::Flush(done));
        } else {
            return;
        }
        // An error means the spool thread ended: nothing more will be written.
        let _ = flushed.await;
    }
}

impl Drop for Outbox {
    /// Lets the spool thread write what is queued, then ends it.
    fn drop(&mut self) {
        self.lock().spool = None;
        if let Some(thread) = self.spool_thread.take()
            && thread.join().is_err()
        {
            tracing::error!(
                "the spool thread panicked: samples queued since its last write are not on disk"
            );
        }
    }
}

fn persist_settled(state: &State) {
    if let Some(spool) = &state.spool {
        spool.send(SpoolWrite::Settled(state.settled));
    }
}

/// Samples as the log holds them: length-delimited, one after another.
fn encode_all<'a>(samples: impl IntoIterator<Item = &'a Sample>) -> Vec<u8> {
    let mut bytes = Vec::new();
    for sample in samples {
        sample
            .encode_length_delimited(&mut bytes)
            .expect("a Vec grows as needed");
    }
    bytes
}

/// Reads the spool into `state` and rewrites it to hold just that; returns the spool
/// and the log's size.
fn restore(state: &mut State, dir: &Path, capacity: usize) -> Result<(Spool, u64), SpoolError> {
    fs::create_dir_all(dir).map_err(io_error(dir))?;
    let stream_path = dir.join("stream");
    match fs::read_to_string(&stream_path) {
        Ok(id) if !id.trim().is_empty() => state.stream_id = id.trim().to_owned(),
        Ok(_) => fs::write(&stream_path, &state.stream_id).map_err(io_error(&stream_path))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::write(&stream_path, &state.stream_id).map_err(io_error(&stream_path))?;
        }
        Err(e) => return Err(io_error(&stream_path)(e)),
    }
    let settled_path = dir.join("settled");
    state.settled = match fs::read_to_string(&settled_path) {
        Ok(text) => text.trim().parse().unwrap_or(0),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
        Err(e) => return Err(io_error(&settled_path)(e)),
    };
    state.acked = state.settled;
    let log_path = dir.join("samples.log");
    let mut bytes = Vec::new();
    match File::open(&log_path) {
        Ok(mut file) => {
            file.read_to_end(&mut bytes).map_err(io_error(&log_path))?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error(&log_path)(e)),
    }
    let mut max_seq = state.settled;
    let mut buf = bytes.as_slice();
    while !buf.is_empty() {
        let Ok(sample) = Sample::decode_length_delimited(&mut buf) else {
            tracing::warn!(spool = %dir.display(), "ignoring a torn record at the end of the spool");
            break;
        };
        let seq = seq_of(&sample);
        max_seq = max_seq.max(seq);
        if seq > state.settled {
            state.queue_bytes += sample.encoded_len() as u64;
            state.queue.push_back(sample);
        }
    }
    while state.queue.len() > capacity {
        let oldest = state.queue.pop_front().expect("non-empty");
        state.queue_bytes -= oldest.encoded_len() as u64;
        state.settled = state.settled.max(seq_of(&oldest));
        state.record_drop(seq_of(&oldest));
        state.dropped += 1;
    }
    state.report_drops();
    state.next_seq = max_seq + 1;
    let mut spool = Spool {
        dir: dir.to_owned(),
        log: std::os::unix::fs::OpenOptionsExt::mode(
            OpenOptions::new().create(true).append(true),
            0o600,
        )
        .open(&log_path)
        .map_err(io_error(&log_path))?,
    };
    let bytes = encode_all(&state.queue);
    spool.rewrite(&bytes)?;
    spool.write_settled(state.settled)?;
    if !state.queue.is_empty() {
        tracing::info!(
            stream_id = %state.stream_id,
            unacknowledged = state.queue.len(),
            next_seq = state.next_seq,
            "restored unacknowledged samples from the spool"
        );
    }
    Ok((spool, bytes.len() as u64))
}

#[cfg(test)]
mod tests {
    use super::*;
    use fleetmon::pb::HostSample;

    fn host() -> Kind {
        Kind::Host(HostSample {
            hostname: "h".into(),
            ..Default::default()
        })
    }

    fn seqs(samples: &[Sample]) -> Vec<u64> {
        samples.iter().map(seq_of).collect()
    }

    #[test]
    fn samples_are_numbered_and_acks_remove_them() {
        let outbox = Outbox::open(10, None).unwrap();
        for expected in 1..=5 {
            assert_eq!(outbox.push(host()).seq, expected);
        }
        assert_eq!(seqs(&outbox.after(0, 3)), [1, 2, 3]);
        assert_eq!(seqs(&outbox.after(3, 10)), [4, 5]);
        assert_eq!(outbox.ack("another-stream", 5), 0);
        assert_eq!(outbox.ack(&outbox.stream_id(), 3), 3);
        assert_eq!(seqs(&outbox.after(0, 10)), [4, 5]);
        assert_eq!(outbox.settled(), 3);
    }

    #[test]
    fn a_full_outbox_drops_the_oldest_and_counts() {
        let outbox = Outbox::open(3, None).unwrap();
        let dropped: Vec<bool> = (0..5).map(|_| outbox.push(host()).dropped_oldest).collect();
        assert_eq!(dropped, [false, false, false, true, true]);
        assert_eq!(outbox.dropped(), 2);
        assert_eq!(seqs(&outbox.after(0, 10)), [3, 4, 5]);
        assert_eq!(outbox.settled(), 2, "dropped seqs are never sent");
    }

    #[tokio::test]
    async fn the_spool_is_fsynced_at_its_cadence() {
        let dir = tempfile::tempdir().unwrap();
        // Zero: after every write.
        let every = Outbox::open_synced(100, Some(dir.path()), Duration::ZERO).unwrap();
        for _ in 0..3 {
            every.push(host());
            every.flush().await;
        }
        assert_eq!(every.written.syncs.load(Ordering::Relaxed), 3);
        drop(every);
        // An hour: writes in a row are not fsynced one by one.
        let rarely = Outbox::open_synced(100, Some(dir.path()), Duration::from_secs(3600)).unwrap();
        for _ in 0..3 {
            rarely.push(host());
            rarely.flush().await;
        }
        assert_eq!(rarely.written.syncs.load(Ordering::Relaxed), 0);
    }

    #[test]
    fn an_outbox_over_its_bytes_drops_the_oldest_too() {
        // A pushed sample's size (its stream id and seq included; seqs 1 to 5 take a
        // byte each).
        let probe = Outbox::open(10, None).unwrap();
        probe.push(host());
        let one = probe.after(0, 1)[0].encoded_len() as u64;
        // Room for a hundred samples by count, two by bytes.
        let outbox = Outbox::open(100, None).unwrap().with_max_bytes(2 * one + 1);
        for _ in 0..5 {
            outbox.push(host());
        }
        assert_eq!(seqs(&outbox.after(0, 10)), [4, 5]);
        assert_eq!(outbox.dropped(), 3);
        // The newest is kept whatever its size.
        let tiny = Outbox::open(100, None).unwrap().with_max_bytes(1);
        tiny.push(host());
        tiny.push(host());
        assert_eq!(seqs(&tiny.after(0, 10)), [2]);
    }

    #[test]
    fn the_spool_keeps_what_was_not_acknowledged() {
        let dir = tempfile::tempdir().unwrap();
        let stream = {
            let outbox = Outbox::open(100, Some(dir.path())).unwrap();
            for _ in 0..10 {
                outbox.push(host());
            }
            outbox.ack(&outbox.stream_id(), 6);
            outbox.stream_id()
            // Dropped without any shutdown: as if killed.
        };
        // A torn record at the end, as a kill mid-write leaves it.
        let mut log = OpenOptions::new()
            .append(true)
            .open(dir.path().join("samples.log"))
            .unwrap();
        log.write_all(&[0x7f, 0x01]).unwrap();

        let outbox = Outbox::open(100, Some(dir.path())).unwrap();
        assert_eq!(outbox.stream_id(), stream);
        assert_eq!(seqs(&outbox.after(0, 100)), [7, 8, 9, 10]);
        assert_eq!(outbox.push(host()).seq, 11);
        outbox.ack(&stream, 11);
        assert!(outbox.is_empty());
        drop(outbox); // waits for the spool thread's last writes
        assert_eq!(
            fs::metadata(dir.path().join("samples.log")).unwrap().len(),
            0,
            "compacted"
        );

        let reopened = Outbox::open(100, Some(dir.path())).unwrap();
        assert!(reopened.is_empty());
        assert_eq!(reopened.push(host()).seq, 12);
    }

    #[tokio::test]
    async fn a_spooled_sample_is_sent_once_it_is_in_the_log() {
        let dir = tempfile::tempdir().unwrap();
        let outbox = Outbox::open(10_000, Some(dir.path())).unwrap();
        for _ in 0..1000 {
            outbox.push(host());
        }
        outbox.flush().await;
        assert_eq!(outbox.count_after(0), 1000);
        let bytes = fs::read(dir.path().join("samples.log")).unwrap();
        let mut buf = bytes.as_slice();
        let mut logged = Vec::new();
        while !buf.is_empty() {
            logged.push(seq_of(&Sample::decode_length_delimited(&mut buf).unwrap()));
        }
        assert_eq!(logged, (1..=1000).collect::<Vec<_>>());
        assert_eq!(seqs(&outbox.after(998, 10)), [999, 1000]);

        outbox.ack(&outbox.stream_id(), 1000);
        outbox.flush().await;
        assert_eq!(
            fs::read_to_string(dir.path().join("settled")).unwrap(),
            "1000"
        );
        assert_eq!(
            fs::metadata(dir.path().join("samples.log")).unwrap().len(),
            0
        );
        for file in ["samples.log", "settled"] {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = fs::metadata(dir.path().join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600, "{file} is private");
        }
    }
}

//! When PostgreSQL refuses a batch on its data ([`Failure::Data`]): finding the rows
//! it refuses so that everything else is stored.
//!
//! The data path calls [`store_isolating`] after a batch failed on data: it bisects the
//! batch, one transaction per half, until each refused record stands alone; those are
//! returned (to be dead-lettered with their SQLSTATE) and every other row is stored. A
//! half stored twice is harmless: the unique key skips what is already there and the
//! rollups count only rows a transaction inserted.

use fleetmon::pb::{HOST_SAMPLE_CONTENT_TYPE, SITE_CHECK_CONTENT_TYPE};
use prost::Message as _;

use crate::consume::row_batch::{CheckRow, HostRow, PartitionKey, RowBatch};
use crate::store::{Failure, PostgresSink, SinkError, WriteStats};

/// One row of a batch, borrowed, with the partition it was read from.
#[derive(Debug, Clone, Copy)]
enum RowRef<'a> {
    Host(&'a HostRow),
    Check(&'a CheckRow),
}

/// A record PostgreSQL refuses, as it goes to the dead-letter topic.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// Where it was read.
    pub source: PartitionKey,
    /// The sample's agent, stream and sequence number.
    pub agent_id: String,
    /// See `agent_id`.
    pub stream_id: String,
    /// See `agent_id`.
    pub seq: u64,
    /// The record key the collector gave it (agent id; check id or URL).
    pub key: String,
    /// The sample, encoded again (the same message the collector published).
    pub payload: Vec<u8>,
    /// Its `content-type` header.
    pub content_type: &'static str,
    /// Why PostgreSQL refused it.
    pub sqlstate: String,
    /// See `sqlstate`.
    pub message: String,
}

impl Refused {
    fn new(source: &PartitionKey, row: RowRef<'_>, sqlstate: String, message: String) -> Self {
        let (agent_id, stream_id, seq, key, payload, content_type) = match row {
            RowRef::Host(row) => {
                let s = &row.sample;
                (
                    &s.agent_id,
                    &s.stream_id,
                    s.seq,
                    s.agent_id.clone(),
                    s.encode_to_vec(),
                    HOST_SAMPLE_CONTENT_TYPE,
                )
            }
            RowRef::Check(row) => {
                let c = &row.check;
                let key = if c.check_id.is_empty() {
                    &c.url
                } else {
                    &c.check_id
                };
                (
                    &c.agent_id,
                    &c.stream_id,
                    c.seq,
                    key.clone(),
                    c.encode_to_vec(),
                    SITE_CHECK_CONTENT_TYPE,
                )
            }
        };
        Refused {
            source: source.clone(),
            agent_id: agent_id.clone(),
            stream_id: stream_id.clone(),
            seq,
            key,
            payload,
            content_type,
            sqlstate,
            message,
        }
    }
}

/// What [`store_isolating`] did: the rows stored, and the records refused.
#[derive(Debug, Default)]
pub struct Isolated {
    /// Added up over the transactions it took.
    pub stats: WriteStats,
    /// The records PostgreSQL refuses on data, each alone.
    pub refused: Vec<Refused>,
}

/// Stores every row of `batch` that PostgreSQL accepts, bisecting until each refused
/// record is alone. Returns an availability error as soon as one is met (the caller
/// retries the whole batch; what was stored is skipped then).
pub async fn store_isolating(sink: &PostgresSink, batch: &RowBatch) -> Result<Isolated, SinkError> {
    let rows: Vec<(&PartitionKey, RowRef<'_>)> = batch
        .partitions()
        .iter()
        .flat_map(|(key, rows)| {
            rows.hosts
                .iter()
                .map(move |r| (key, RowRef::Host(r)))
                .chain(rows.checks.iter().map(move |r| (key, RowRef::Check(r))))
        })
        .collect();
    let mut isolated = Isolated::default();
    // Ranges still to store, the next one on top.
    let mut pending = Vec::with_capacity(64);
    pending.push(0..rows.len());
    while let Some(range) = pending.pop() {
        let part = &rows[range.clone()];
        let mut sub = RowBatch::default();
        for (offset, (key, row)) in part.iter().enumerate() {
            let (topic, partition) = (&key.0, key.1);
            match row {
                RowRef::Host(r) => sub.push_host(topic, partition, offset as i64, (*r).clone()),
                RowRef::Check(r) => sub.push_check(topic, partition, offset as i64, (*r).clone()),
            }
        }
        match sink.write(&sub).await {
            Ok(stats) => isolated.stats.add(&stats),
            Err(error) => match Failure::of(&error) {
                Failure::Availability => return Err(error),
                Failure::Data { sqlstate, message } if part.len() == 1 => {
                    let (key, row) = part[0];
                    isolated
                        .refused
                        .push(Refused::new(key, row, sqlstate, message));
                }
                Failure::Data { .. } => {
                    let middle = range.start + range.len() / 2;
                    pending.push(middle..range.end);
                    pending.push(range.start..middle);
                }
            },
        }
    }
    Ok(isolated)
}

//! Which `seq` of each stream may be acknowledged: the highest one with no
//! undelivered sample at or below it among those received on this connection.
//!
//! Agents send each stream in increasing `seq` order, and after a reconnect resend
//! from their lowest unacknowledged `seq`; an ack never covers a `seq` below the
//! first one this connection received.

use std::collections::{BTreeSet, HashMap};

use fleetmon::pb::StreamAck;

#[derive(Debug, Default)]
struct Progress {
    /// Received, queued to Kafka, not yet confirmed.
    pending: BTreeSet<u64>,
    /// Lowest seq received on this connection (0 until one is).
    min_received: u64,
    /// Highest seq received (delivered, pending or rejected).
    max_received: u64,
    /// Highest seq already acknowledged to the agent.
    acked: u64,
}

impl Progress {
    fn ackable(&self) -> u64 {
        match self.pending.first() {
            Some(&lowest) if lowest > self.min_received => lowest - 1,
            Some(_) => 0,
            None => self.max_received,
        }
    }

    fn received(&mut self, seq: u64) {
        if self.min_received == 0 || seq < self.min_received {
            self.min_received = seq;
        }
        self.max_received = self.max_received.max(seq);
    }
}

/// Per-connection acknowledgement state of every stream seen on it.
#[derive(Debug, Default)]
pub struct StreamAcks {
    streams: HashMap<String, Progress>,
}

impl StreamAcks {
    /// A sample was queued to Kafka and awaits its delivery report.
    pub fn queued(&mut self, stream_id: &str, seq: u64) {
        let p = self.entry(stream_id);
        p.pending.insert(seq);
        p.received(seq);
    }

    /// A sample was rejected: it is settled (the agent must not resend it).
    pub fn settled(&mut self, stream_id: &str, seq: u64) {
        self.entry(stream_id).received(seq);
    }

    /// Kafka confirmed a sample.
    pub fn delivered(&mut self, stream_id: &str, seq: u64) {
        if let Some(p) = self.streams.get_mut(stream_id) {
            p.pending.remove(&seq);
        }
    }

    fn entry(&mut self, stream_id: &str) -> &mut Progress {
        if !self.streams.contains_key(stream_id) {
            self.streams
                .insert(stream_id.to_owned(), Progress::default());
        }
        self.streams.get_mut(stream_id).expect("just inserted")
    }

    /// Streams whose acknowledgeable seq moved since the last call, marking them acked.
    pub fn take_progress(&mut self) -> Vec<StreamAck> {
        let mut acks: Vec<StreamAck> = self
            .streams
            .iter_mut()
            .filter_map(|(stream_id, p)| {
                let through = p.ackable();
                (through > p.acked).then(|| {
                    p.acked = through;
                    StreamAck {
                        stream_id: stream_id.clone(),
                        acked_through_seq: through,
                    }
                })
            })
            .collect();
        acks.sort_by(|a, b| a.stream_id.cmp(&b.stream_id));
        acks
    }

    /// Whether a sample of `stream_id` may be taken when at most `max` streams are:
    /// a stream already seen always may.
    pub fn admits(&self, stream_id: &str, max: usize) -> bool {
        self.streams.len() < max || self.streams.contains_key(stream_id)
    }

    /// Samples queued but not yet confirmed, over all streams.
    pub fn in_flight(&self) -> usize {
        self.streams.values().map(|p| p.pending.len()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn through(acks: &[StreamAck]) -> Vec<(&str, u64)> {
        acks.iter()
            .map(|a| (a.stream_id.as_str(), a.acked_through_seq))
            .collect()
    }

    #[test]
    fn acks_stop_below_the_lowest_undelivered_seq() {
        let mut acks = StreamAcks::default();
        for seq in 1..=5 {
            acks.queued("s", seq);
        }
        acks.delivered("s", 1);
        acks.delivered("s", 2);
        acks.delivered("s", 4);
        assert_eq!(through(&acks.take_progress()), [("s", 2)]);
        assert!(acks.take_progress().is_empty(), "nothing new");
        acks.delivered("s", 3);
        assert_eq!(through(&acks.take_progress()), [("s", 4)]);
        acks.delivered("s", 5);
        assert_eq!(through(&acks.take_progress()), [("s", 5)]);
    }

    #[test]
    fn rejected_samples_do_not_hold_acks_back() {
        let mut acks = StreamAcks::default();
        acks.queued("s", 1);
        acks.settled("s", 2);
        acks.queued("s", 3);
        acks.delivered("s", 3);
        assert_eq!(through(&acks.take_progress()), Vec::<(&str, u64)>::new());
        acks.delivered("s", 1);
        assert_eq!(through(&acks.take_progress()), [("s", 3)]);
    }

    #[test]
    fn a_resend_after_reconnect_starts_where_the_agent_resumes() {
        let mut acks = StreamAcks::default();
        acks.queued("s", 41);
        acks.queued("s", 42);
        acks.delivered("s", 42);
        assert!(acks.take_progress().is_empty());
        acks.delivered("s", 41);
        assert_eq!(through(&acks.take_progress()), [("s", 42)]);
        assert_eq!(acks.in_flight(), 0);
    }
}

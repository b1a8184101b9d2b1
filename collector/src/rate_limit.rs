//! Requests per minute per key (a source address, a token id): fixed one-minute windows,
//! a bounded number of keys.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

const WINDOW: Duration = Duration::from_secs(60);
/// Keys tracked at most; past it, windows that ended are forgotten, then the oldest.
const MAX_KEYS: usize = 10_000;

/// At most `per_minute` requests per key in any one-minute window.
#[derive(Debug)]
pub struct RateLimit {
    per_minute: u32,
    windows: Mutex<HashMap<String, (Instant, u32)>>,
}

impl RateLimit {
    /// A limit of `per_minute` (0: none).
    pub fn per_minute(per_minute: u32) -> Self {
        RateLimit {
            per_minute,
            windows: Mutex::new(HashMap::new()),
        }
    }

    /// Counts a request of `key`; false when it is over the limit.
    pub fn allow(&self, key: &str) -> bool {
        self.allow_at(key, Instant::now())
    }

    fn allow_at(&self, key: &str, now: Instant) -> bool {
        if self.per_minute == 0 {
            return true;
        }
        let mut windows = self.windows.lock().expect("rate limit lock");
        if windows.len() >= MAX_KEYS && !windows.contains_key(key) {
            windows.retain(|_, (start, _)| now.duration_since(*start) < WINDOW);
            if windows.len() >= MAX_KEYS
                && let Some(oldest) = windows
                    .iter()
                    .min_by_key(|(_, (start, _))| *start)
                    .map(|(k, _)| k.clone())
            {
                windows.remove(&oldest);
            }
        }
        let (start, count) = windows.entry(key.to_owned()).or_insert((now, 0));
        if now.duration_since(*start) >= WINDOW {
            *start = now;
            *count = 0;
        }
        *count += 1;
        *count <= self.per_minute
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_gets_its_quota_per_minute_and_others_are_not_affected() {
        let limit = RateLimit::per_minute(3);
        let t0 = Instant::now();
        assert!((0..3).all(|_| limit.allow_at("10.0.0.1", t0)));
        assert!(!limit.allow_at("10.0.0.1", t0));
        assert!(limit.allow_at("10.0.0.2", t0));
        assert!(limit.allow_at("10.0.0.1", t0 + WINDOW));
    }

    #[test]
    fn keys_are_bounded() {
        let limit = RateLimit::per_minute(1);
        let t0 = Instant::now();
        for i in 0..MAX_KEYS + 10 {
            limit.allow_at(&i.to_string(), t0);
        }
        assert!(limit.windows.lock().unwrap().len() <= MAX_KEYS);
    }
}

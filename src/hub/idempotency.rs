//! Idempotency keys of `POST /api/events` (PROTOCOL.md section 5): the
//! first reply to each key, for [`IDEMPOTENCY_WINDOW`], and never more than
//! [`MAX_IDEMPOTENCY_KEYS`] of them: past that the oldest key is forgotten
//! first, as if its window had ended.
//!
//! Keys are at most 128 characters (the decoder's rule), so a full table
//! weighs at most about 45 MiB, typically a third of that. Keys are kept in
//! the order they came, which is the order their windows end, so pruning
//! costs O(1) per forgotten key and never walks the live ones.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::protocol::Published;

/// How long an idempotency key is remembered.
pub(crate) const IDEMPOTENCY_WINDOW: Duration = Duration::from_secs(300);

/// How many idempotency keys are remembered at most.
pub(crate) const MAX_IDEMPOTENCY_KEYS: usize = 100_000;

/// Remembered keys and their first replies.
#[derive(Debug)]
pub(crate) struct IdempotencyKeys {
    replies: HashMap<Arc<str>, (Instant, Published)>,
    /// Every key of `replies`, oldest first.
    order: VecDeque<Arc<str>>,
    window: Duration,
    capacity: usize,
}

impl Default for IdempotencyKeys {
    fn default() -> Self {
        Self::new(IDEMPOTENCY_WINDOW, MAX_IDEMPOTENCY_KEYS)
    }
}

impl IdempotencyKeys {
    /// Keys remembered for `window`, at most `capacity` (at least 1) of them.
    pub fn new(window: Duration, capacity: usize) -> Self {
        Self {
            replies: HashMap::new(),
            order: VecDeque::new(),
            window,
            capacity: capacity.max(1),
        }
    }

    /// How many keys are remembered.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.replies.len()
    }

    /// The first reply to `key`, if it came within the window before `now`.
    pub fn get(&self, key: &str, now: Instant) -> Option<&Published> {
        self.replies
            .get(key)
            .filter(|(at, _)| now.saturating_duration_since(*at) < self.window)
            .map(|(_, reply)| reply)
    }

    /// Remembers `reply` as the first reply to `key`, unless a reply within
    /// the window is remembered already. Makes room by forgetting the
    /// oldest key when full.
    pub fn insert(&mut self, key: String, reply: Published, now: Instant) {
        // Afterwards every remembered key is within its window, so a key
        // present now is one whose first reply must stand.
        self.prune(now);
        if self.replies.contains_key(key.as_str()) {
            return;
        }
        while self.replies.len() >= self.capacity {
            if !self.forget_oldest() {
                break;
            }
        }
        let key: Arc<str> = key.into();
        self.order.push_back(key.clone());
        self.replies.insert(key, (now, reply));
    }

    /// Forgets every key whose window ended by `now`.
    pub fn prune(&mut self, now: Instant) {
        while let Some(oldest) = self.order.front() {
            let ended = self
                .replies
                .get(oldest)
                .is_none_or(|(at, _)| now.saturating_duration_since(*at) >= self.window);
            if !ended || !self.forget_oldest() {
                break;
            }
        }
    }

    /// Forgets the oldest key; `false` if there was none.
    fn forget_oldest(&mut self) -> bool {
        match self.order.pop_front() {
            Some(key) => {
                self.replies.remove(&key);
                true
            }
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(n: u64) -> Published {
        Published {
            id: format!("id-{n}"),
            seq: Some(n),
            recipients: 0,
            correlation_id: "c".into(),
        }
    }

    #[test]
    fn a_key_answers_with_its_first_reply_within_the_window() {
        let t0 = Instant::now();
        let mut keys = IdempotencyKeys::new(Duration::from_secs(300), 10);
        keys.insert("k".into(), reply(1), t0);
        keys.insert("k".into(), reply(2), t0 + Duration::from_secs(1));
        let at = |s| t0 + Duration::from_secs(s);
        assert_eq!(keys.get("k", at(299)).map(|r| r.seq), Some(Some(1)));
        assert_eq!(keys.get("k", at(300)), None, "the window is 5 minutes");
        assert_eq!(keys.len(), 1);
        // After its window the key may be used again, and is pruned first.
        keys.insert("k".into(), reply(3), at(301));
        assert_eq!(keys.get("k", at(302)).map(|r| r.seq), Some(Some(3)));
        assert_eq!((keys.len(), keys.order.len()), (1, 1));
    }

    #[test]
    fn pruning_forgets_only_what_is_old() {
        let t0 = Instant::now();
        let mut keys = IdempotencyKeys::new(Duration::from_secs(30), 100);
        for n in 0..20 {
            keys.insert(format!("k{n}"), reply(n), t0 + Duration::from_secs(n));
        }
        assert_eq!(keys.len(), 20);
        let later = t0 + Duration::from_secs(35);
        keys.prune(later);
        assert_eq!(keys.len(), 14, "k0..=k5 ended");
        assert!(keys.get("k5", later).is_none());
        assert!(keys.get("k6", later).is_some());
        assert_eq!(keys.order.len(), keys.len());
    }

    #[test]
    fn a_full_table_forgets_its_oldest_key() {
        let t0 = Instant::now();
        let mut keys = IdempotencyKeys::new(Duration::from_secs(300), 3);
        for n in 0..10 {
            keys.insert(format!("k{n}"), reply(n), t0);
            assert!(keys.len() <= 3);
        }
        assert!(keys.get("k6", t0).is_none());
        for n in 7..10 {
            assert!(keys.get(&format!("k{n}"), t0).is_some());
        }
        assert_eq!(keys.order.len(), 3);
    }

    #[test]
    fn a_flood_of_keys_stays_at_the_cap() {
        let t0 = Instant::now();
        let mut keys = IdempotencyKeys::default();
        for n in 0..(MAX_IDEMPOTENCY_KEYS as u64 + 5_000) {
            keys.insert(format!("key-{n}"), reply(n), t0);
        }
        assert_eq!(keys.len(), MAX_IDEMPOTENCY_KEYS);
        assert_eq!(keys.order.len(), MAX_IDEMPOTENCY_KEYS);
        assert!(keys.get("key-4999", t0).is_none());
        assert!(keys.get("key-5000", t0).is_some());
    }
}

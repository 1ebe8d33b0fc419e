//! Per-object exponential backoff, shared by every controller: 1 s after the first
//! failure, doubling with each further one up to a cap the caller chooses, and forgotten
//! on the first success.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

/// Identifies an object across kinds: (kind, namespace, name).
pub(crate) type ObjectKey = (&'static str, String, String);

/// Consecutive failures per object.
#[derive(Default)]
pub struct Backoff {
    failures: Mutex<HashMap<ObjectKey, u32>>,
}

impl Backoff {
    /// Records one more failure of `key`; returns how long to wait before retrying.
    pub(crate) fn failed(&self, key: ObjectKey, cap: Duration) -> Duration {
        let attempts = {
            let mut failures = self.failures.lock().unwrap_or_else(|e| e.into_inner());
            let attempts = failures.entry(key).or_insert(0);
            *attempts = attempts.saturating_add(1);
            *attempts
        };
        delay(attempts, cap)
    }

    /// Forgets the failures of `key` after a success.
    pub(crate) fn succeeded(&self, key: &ObjectKey) {
        self.failures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(key);
    }
}

fn delay(attempts: u32, cap: Duration) -> Duration {
    let exponent = attempts.saturating_sub(1).min(30);
    Duration::from_secs(1u64 << exponent).min(cap.max(Duration::from_secs(1)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> ObjectKey {
        ("ExternalSecret", "ns".into(), "db".into())
    }

    #[test]
    fn doubles_from_one_second_up_to_the_cap_and_resets_on_success() {
        let backoff = Backoff::default();
        let cap = Duration::from_secs(10);
        let delays: Vec<u64> = (0..6)
            .map(|_| backoff.failed(key(), cap).as_secs())
            .collect();
        assert_eq!(delays, [1, 2, 4, 8, 10, 10]);
        backoff.succeeded(&key());
        assert_eq!(backoff.failed(key(), cap), Duration::from_secs(1));
    }

    #[test]
    fn objects_back_off_independently() {
        let backoff = Backoff::default();
        let cap = Duration::from_secs(60);
        backoff.failed(key(), cap);
        backoff.failed(key(), cap);
        let other = ("ExternalSecret", "ns".into(), "other".into());
        assert_eq!(backoff.failed(other, cap), Duration::from_secs(1));
    }

    #[test]
    fn many_failures_do_not_overflow() {
        assert_eq!(delay(u32::MAX, Duration::from_secs(3600)).as_secs(), 3600);
    }
}

//! Shared test helpers: an Observer that counts, and OpenBao's audit log.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use sigil_providers::{ErrorKind, Observer, Operation, Provider};

/// One kind of report: which provider, what was asked, and how it ended.
type Report = (Provider, Operation, Result<(), ErrorKind>);

/// Counts every report by operation and outcome.
#[derive(Debug, Default)]
pub struct Counter {
    seen: Mutex<HashMap<Report, u64>>,
}

impl Counter {
    /// Reports of `operation` with any outcome.
    pub fn total(&self, operation: Operation) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, op, _), _)| *op == operation)
            .map(|(_, n)| n)
            .sum()
    }

    /// Reports of `operation` that succeeded.
    pub fn ok(&self, operation: Operation) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, op, outcome), _)| *op == operation && outcome.is_ok())
            .map(|(_, n)| n)
            .sum()
    }

    /// Reports of `operation` that failed with `kind`.
    pub fn failed(&self, operation: Operation, kind: ErrorKind) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, op, outcome), _)| *op == operation && *outcome == Err(kind))
            .map(|(_, n)| n)
            .sum()
    }
}

impl Observer for Counter {
    fn observe(
        &self,
        provider: Provider,
        operation: Operation,
        outcome: Result<(), ErrorKind>,
        _elapsed: Duration,
    ) {
        *self
            .seen
            .lock()
            .unwrap()
            .entry((provider, operation, outcome))
            .or_default() += 1;
    }
}

/// Responses in OpenBao's audit log (`SIGIL_VAULT_AUDIT_LOG`) to `path` whose token
/// metadata has `key` = `value`, e.g. `auth/approle/login` with `role_name` = the
/// test's own role. Only successful logins and renewals carry metadata.
pub fn audited_responses(log: &Path, path: &str, key: &str, value: &str) -> usize {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    text.lines()
        .filter_map(|line| serde_json::from_str::<serde_json::Value>(line).ok())
        .filter(|entry| entry["type"] == "response")
        .filter(|entry| entry["request"]["path"] == path)
        .filter(|entry| entry["auth"]["metadata"][key] == value)
        .count()
}

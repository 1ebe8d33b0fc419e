//! Shared test helpers: an Observer that counts, and OpenBao's audit log.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sigil_providers::{ErrorKind, Observer, Operation, Provider};

/// One kind of report: which provider, what was asked, and how it ended.
type Report = (Provider, Operation, Result<(), ErrorKind>);

/// Counts every report by operation and outcome.
#[derive(Debug, Default)]
pub(crate) struct Counter {
    seen: Mutex<HashMap<Report, u64>>,
}

impl Counter {
    /// Reports of `operation` with any outcome.
    pub(crate) fn total(&self, operation: Operation) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, op, _), _)| *op == operation)
            .map(|(_, n)| n)
            .sum()
    }

    /// Reports of `operation` that succeeded.
    pub(crate) fn ok(&self, operation: Operation) -> u64 {
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|((_, op, outcome), _)| *op == operation && outcome.is_ok())
            .map(|(_, n)| n)
            .sum()
    }

    /// Reports of `operation` that failed with `kind`.
    pub(crate) fn failed(&self, operation: Operation, kind: ErrorKind) -> u64 {
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

//! One provider read per remote key: every ExternalSecret asking for the same (store,
//! key, version) shares one read while it is in flight and its result while it is
//! fresh; on AWS, reads due together go out as one `BatchGetSecretValue` of up to 20
//! ids, topped up with the store's other keys that are about to fall due. Entries are
//! keyed by store identity, never by ExternalSecret, and only successes are kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::FutureExt as _;
use futures::future::{BoxFuture, Shared};
use sigil_providers::{Error as ProviderError, RemoteValue};
use tokio::time::Instant;

use crate::common::metrics::{CacheLabel, CacheOutcome, Metrics};
use sigil_providers::Session;

/// The most secret ids `BatchGetSecretValue` takes in one call.
const BATCH_LIMIT: usize = 20;
/// How long a batch waits for more reads to join it.
const BATCH_LINGER: Duration = Duration::from_millis(100);
/// How recent a cached value must be for an ExternalSecret that syncs once.
const ONCE_FRESHNESS: Duration = Duration::from_secs(10);

/// A read's result, shared by everyone who waited for it.
pub(crate) type Fetch = Result<Arc<RemoteValue>, Arc<ProviderError>>;
/// A read's result and when the provider gave it.
pub(crate) type Read = (Fetch, Instant);
type SharedRead = Shared<BoxFuture<'static, Read>>;

/// What is read: a remote key at a version, through one store's session.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct CacheKey {
    /// The store's identity (kind, namespace, name, UID, generation).
    pub store: Arc<str>,
    /// The remote key.
    pub key: String,
    /// The version asked for; `None` is the current one.
    pub version: Option<String>,
}

enum Slot {
    Pending(SharedRead),
    Done {
        at: Instant,
        value: Arc<RemoteValue>,
        /// The shortest refresh interval of the ExternalSecrets that used it.
        interval: Duration,
    },
}

/// Keys read together; the batch owns its list, so that a full batch, once replaced in
/// the map by the next one, still sends exactly its own keys.
struct Batch {
    keys: Arc<Mutex<Vec<String>>>,
    result: Shared<BoxFuture<'static, Arc<BatchResult>>>,
}

struct BatchResult {
    values: HashMap<String, Fetch>,
    at: Instant,
}

/// The shared read cache.
pub(crate) struct ReadCache {
    slots: Mutex<HashMap<CacheKey, Slot>>,
    batches: Mutex<HashMap<Arc<str>, Batch>>,
    metrics: Arc<Metrics>,
}

impl ReadCache {
    pub(crate) fn new(metrics: Arc<Metrics>) -> Arc<Self> {
        Arc::new(Self {
            slots: Mutex::default(),
            batches: Mutex::default(),
            metrics,
        })
    }

    fn count(&self, outcome: CacheOutcome) {
        self.metrics
            .read_cache
            .get_or_create(&CacheLabel { outcome })
            .inc();
    }

    /// Reads `key` through `session` for an ExternalSecret refreshing every `interval`
    /// (`None`: once) that holds a value of it read at `held`: any value read since is
    /// new to it and serves it, so that one read per interval serves every
    /// ExternalSecret of the key however their jittered schedules fall. `bypass`
    /// (force-sync) always asks the provider. Returns the value and when it was read.
    pub(crate) async fn read(
        self: &Arc<Self>,
        session: &Arc<Session>,
        key: CacheKey,
        interval: Option<Duration>,
        held: Option<Instant>,
        bypass: bool,
    ) -> Read {
        // Nothing held yet (new, changed or after a restart): a value read in the last
        // half interval is recent enough, which lets a burst of new objects share reads.
        let since = held.unwrap_or_else(|| {
            let window = interval.map_or(ONCE_FRESHNESS, |i| i / 2);
            Instant::now()
                .checked_sub(window)
                .unwrap_or_else(Instant::now)
        });
        let interval = interval.unwrap_or(Duration::MAX);
        let pending = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            match slots.get_mut(&key) {
                Some(Slot::Done {
                    at,
                    value,
                    interval: shortest,
                }) if !bypass && *at > since => {
                    *shortest = (*shortest).min(interval);
                    let read = (Ok(value.clone()), *at);
                    drop(slots);
                    self.count(CacheOutcome::Hit);
                    return read;
                }
                Some(Slot::Pending(shared)) if !bypass => {
                    let shared = shared.clone();
                    drop(slots);
                    self.count(CacheOutcome::Coalesced);
                    shared
                }
                _ => {
                    let shared = self.start(session, &key, bypass);
                    slots.insert(key.clone(), Slot::Pending(shared.clone()));
                    drop(slots);
                    self.count(CacheOutcome::Miss);
                    shared
                }
            }
        };
        let (result, fetched_at) = pending.await;
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        match &result {
            Ok(value) => {
                let keep = match slots.get(&key) {
                    Some(Slot::Done { at, .. }) => *at < fetched_at,
                    _ => true,
                };
                if keep {
                    slots.insert(
                        key,
                        Slot::Done {
                            at: fetched_at,
                            value: value.clone(),
                            interval,
                        },
                    );
                }
            }
            Err(_) => {
                if matches!(slots.get(&key), Some(Slot::Pending(_))) {
                    slots.remove(&key);
                }
            }
        }
        (result, fetched_at)
    }

    fn start(self: &Arc<Self>, session: &Arc<Session>, key: &CacheKey, bypass: bool) -> SharedRead {
        if session.reads_in_batches() && key.version.is_none() && !bypass {
            self.join_batch(session, key)
        } else {
            let session = session.clone();
            let key = key.clone();
            async move {
                let result = session
                    .read(&key.key, key.version.as_deref())
                    .await
                    .map(Arc::new)
                    .map_err(Arc::new);
                (result, Instant::now())
            }
            .boxed()
            .shared()
        }
    }

    /// Adds `key` to the store's open batch, opening one (sent after a short linger)
    /// when there is none; a batch that fills up leaves the map, so the next key opens
    /// a new one.
    fn join_batch(self: &Arc<Self>, session: &Arc<Session>, key: &CacheKey) -> SharedRead {
        let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
        let result = match batches.get(&key.store) {
            Some(batch) => {
                let mut keys = batch.keys.lock().unwrap_or_else(|e| e.into_inner());
                keys.push(key.key.clone());
                let result = batch.result.clone();
                if keys.len() >= BATCH_LIMIT {
                    drop(keys);
                    batches.remove(&key.store);
                }
                result
            }
            None => {
                let keys = Arc::new(Mutex::new(vec![key.key.clone()]));
                let result = self
                    .clone()
                    .send_batch(session.clone(), key.store.clone(), keys.clone())
                    .boxed()
                    .shared();
                // Started now, so that it sends even if every waiter gives up.
                tokio::spawn(result.clone());
                batches.insert(
                    key.store.clone(),
                    Batch {
                        keys,
                        result: result.clone(),
                    },
                );
                result
            }
        };
        let name = key.key.clone();
        result
            .map(move |batch| {
                let value = batch.values.get(&name).cloned().unwrap_or_else(|| {
                    Err(Arc::new(ProviderError::Unavailable {
                        provider: sigil_providers::Provider::Aws,
                        operation: sigil_providers::Operation::BatchRead,
                        detail: format!("the batch answered nothing for `{name}`"),
                    }))
                });
                (value, batch.at)
            })
            .boxed()
            .shared()
    }

    async fn send_batch(
        self: Arc<Self>,
        session: Arc<Session>,
        store: Arc<str>,
        own: Arc<Mutex<Vec<String>>>,
    ) -> Arc<BatchResult> {
        tokio::time::sleep(BATCH_LINGER).await;
        let mut keys = {
            let mut batches = self.batches.lock().unwrap_or_else(|e| e.into_inner());
            // Closed to newcomers from here on (unless it already left the map, full).
            if batches
                .get(&store)
                .is_some_and(|open| Arc::ptr_eq(&open.keys, &own))
            {
                batches.remove(&store);
            }
            std::mem::take(&mut *own.lock().unwrap_or_else(|e| e.into_inner()))
        };
        let asked = keys.len();
        keys.extend(self.falling_due(&store, &keys, BATCH_LIMIT - asked % BATCH_LIMIT));
        let results = session.read_batch(&keys).await;
        let at = Instant::now();
        let mut values = HashMap::with_capacity(results.len());
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        for (name, result) in results {
            let result = result.map(Arc::new).map_err(Arc::new);
            if let Ok(value) = &result {
                let cache_key = CacheKey {
                    store: store.clone(),
                    key: name.clone(),
                    version: None,
                };
                // Prefetched keys are stored here; asked ones by their readers.
                if let Some(Slot::Done {
                    at: old_at,
                    value: old,
                    ..
                }) = slots.get_mut(&cache_key)
                {
                    *old_at = at;
                    *old = value.clone();
                }
            }
            values.insert(name, result);
        }
        Arc::new(BatchResult { values, at })
    }

    /// Up to `room` keys of `store` whose cached values are about to be asked for
    /// again, oldest first, so one batch serves them too.
    fn falling_due(&self, store: &Arc<str>, asked: &[String], room: usize) -> Vec<String> {
        let slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        let mut due: Vec<(Instant, String)> = slots
            .iter()
            .filter_map(|(key, slot)| match slot {
                Slot::Done { at, interval, .. }
                    if key.store == *store
                        && key.version.is_none()
                        && *interval != Duration::MAX
                        && at.elapsed() >= interval.mul_f64(0.7)
                        && !asked.contains(&key.key) =>
                {
                    Some((*at, key.key.clone()))
                }
                _ => None,
            })
            .collect();
        due.sort();
        due.into_iter().take(room).map(|(_, key)| key).collect()
    }

    /// Drops values nobody asked for in a long while, and everything of stores that
    /// changed or went away.
    pub(crate) fn sweep(&self, live_stores: &dyn Fn(&str) -> bool) {
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        slots.retain(|key, slot| {
            live_stores(&key.store)
                && match slot {
                    Slot::Pending(_) => true,
                    Slot::Done { at, interval, .. } => {
                        at.elapsed() < interval.saturating_mul(2).min(Duration::from_secs(86_400))
                    }
                }
        });
    }
}

//! `dataFrom.find`: which remote keys a find matches. One listing per store and find
//! serves every ExternalSecret that shares it while it is recent (the same freshness as
//! the read cache: half the shortest interval, or what a forced refresh asks), and
//! concurrent askers wait for the one listing in flight. The keys found are then read
//! through the read cache like any other key.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};

use sigil_providers::{Error as ProviderError, Session};
use sigil_types::FindRef;
use tokio::time::Instant;

/// A find, as one store lists it: every ExternalSecret asking the same shares it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(crate) struct FindKey {
    /// The store's identity.
    pub store: Arc<str>,
    path: Option<String>,
    regexp: Option<String>,
    tags: BTreeMap<String, String>,
}

impl FindKey {
    pub(crate) fn new(store: Arc<str>, find: &FindRef) -> Self {
        Self {
            store,
            path: find.path.clone(),
            regexp: find.name.as_ref().map(|n| n.regexp.clone()),
            tags: find.tags.clone(),
        }
    }
}

/// A listing and when it was made.
#[derive(Clone)]
pub(crate) struct Listing {
    pub at: Instant,
    pub keys: Arc<Vec<String>>,
}

/// Why a find did not list.
#[derive(Debug)]
pub(crate) enum FindError {
    /// `name.regexp` does not compile.
    Regexp(String),
    /// The provider failed.
    Provider(ProviderError),
}

type Slot = Arc<tokio::sync::Mutex<Option<Listing>>>;

/// The shared listings.
#[derive(Default)]
pub(crate) struct FindCache {
    slots: Mutex<HashMap<FindKey, Slot>>,
}

impl FindCache {
    /// The keys `find` matches through `session`, listed after `since` (a listing made
    /// since serves), at most `limit` + 1 of them.
    pub(crate) async fn keys(
        &self,
        session: &Session,
        key: FindKey,
        since: Instant,
        limit: usize,
    ) -> Result<Listing, FindError> {
        let slot = self
            .slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let mut held = slot.lock().await;
        if let Some(listing) = held.as_ref().filter(|l| l.at > since) {
            return Ok(listing.clone());
        }
        let matcher = match &key.regexp {
            Some(pattern) => Some(
                regex::Regex::new(pattern)
                    .map_err(|e| FindError::Regexp(format!("find.name.regexp `{pattern}`: {e}")))?,
            ),
            None => None,
        };
        let matches = |name: &str| matcher.as_ref().is_none_or(|re| re.is_match(name));
        let keys = session
            .find(key.path.as_deref(), &matches, &key.tags, limit)
            .await
            .map_err(FindError::Provider)?;
        let listing = Listing {
            at: Instant::now(),
            keys: Arc::new(keys),
        };
        *held = Some(listing.clone());
        Ok(listing)
    }

    /// Forgets the listings of stores that no longer exist.
    pub(crate) fn sweep(&self, live_stores: &dyn Fn(&str) -> bool) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|key, _| live_stores(&key.store));
    }
}

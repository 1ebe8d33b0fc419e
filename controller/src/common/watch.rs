//! Watching the API server the same way for every kind: the scope of a watch, a cache
//! without bookkeeping fields, how a watch starts, and waiting for its first list.

use std::time::Duration;

use futures::FutureExt as _;
use kube::runtime::reflector::{self, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};

/// The API of `K` in `namespace`, or in every namespace when `None`.
pub(crate) fn scoped_api<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Watches every `K` `api` reaches, caching each without its bookkeeping: the cache a
/// controller reads, and the objects that changed, each one after the cache has it.
pub(crate) fn watch_lean<K>(
    api: Api<K>,
    initial: InitialList,
) -> (
    Store<K>,
    impl futures::Stream<Item = std::result::Result<K, watcher::Error>> + Send + 'static,
)
where
    K: kube::Resource<DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let (store, writer) = reflector::store();
    let changes = watcher(api, initial.watcher_config())
        .default_backoff()
        .modify(forget_bookkeeping)
        .reflect(writer)
        .applied_objects();
    (store, changes)
}

/// How a watch learns what exists when it starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum InitialList {
    /// One watch streams every object, then the changes (Kubernetes' streaming lists,
    /// `WatchList`, beta and on by default since 1.32). No list page is held in memory,
    /// and a cold start's cache fills sooner.
    Streaming,
    /// Paginated lists, then a watch: what every API server serves.
    Paginated,
}

impl InitialList {
    /// Streaming where the API server is 1.32 or newer; paginated where it is older or
    /// does not say.
    pub async fn for_server(client: &Client) -> Self {
        match client.apiserver_version().await {
            Ok(info) => Self::for_version(&info.major, &info.minor),
            Err(_) => InitialList::Paginated,
        }
    }

    /// As [`InitialList::for_server`], from the version's parts (a managed cluster's minor
    /// version may end in `+`).
    fn for_version(major: &str, minor: &str) -> Self {
        let digits: String = minor.chars().take_while(char::is_ascii_digit).collect();
        match digits.parse::<u32>() {
            Ok(minor) if major == "1" && minor >= 32 => InitialList::Streaming,
            _ => InitialList::Paginated,
        }
    }

    pub(crate) fn watcher_config(self) -> watcher::Config {
        match self {
            InitialList::Streaming => watcher::Config::default().streaming_lists(),
            InitialList::Paginated => watcher::Config::default().any_semantic(),
        }
    }
}

/// Drops what no reconcile reads and caches would otherwise keep for every object: the
/// managed fields, and the copy of the whole object `kubectl apply` leaves in an
/// annotation (for a SealedSecret, every sealed value a second time).
pub(crate) fn forget_bookkeeping<K: kube::Resource>(obj: &mut K) {
    let meta = obj.meta_mut();
    meta.managed_fields = None;
    if let Some(annotations) = &mut meta.annotations {
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
    }
}

/// Waits until `store` has been filled by its first list; false if its watch is gone.
pub(crate) async fn cache_synced<K>(store: &Store<K>) -> bool
where
    K: kube::Resource + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
{
    // Polled rather than awaited: the store's readiness signal wakes only its most recent
    // waiter, and the controllers wait on it too.
    loop {
        match store.wait_until_ready().now_or_never() {
            Some(Ok(())) => return true,
            Some(Err(_)) => return false,
            None => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::InitialList;

    #[test]
    fn watches_stream_from_kubernetes_1_32_on() {
        assert_eq!(InitialList::for_version("1", "34"), InitialList::Streaming);
        assert_eq!(InitialList::for_version("1", "32+"), InitialList::Streaming);
        assert_eq!(InitialList::for_version("1", "31"), InitialList::Paginated);
        assert_eq!(InitialList::for_version("1", ""), InitialList::Paginated);
    }
}

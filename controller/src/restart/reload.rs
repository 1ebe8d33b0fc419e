//! The reload opt-in: a workload annotated [`RELOAD_ANNOTATION`]` = "true"` is rolled
//! when the data of a Secret it consumes changes, whatever changed it, once the Secret
//! has been quiet for the debounce. Only a keyed hash of the data of Secrets an opted-in
//! workload consumes is kept.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::PartialObjectMeta;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, ResourceExt};
use sigil_types::RELOAD_ANNOTATION;
use tokio::time::Instant;

use super::*;

/// (namespace, Secret name).
type SecretKey = (String, String);

/// A workload whose Secrets changed, waiting for them to be quiet.
struct Pending {
    first: Instant,
    last: Instant,
    /// `reload/<secret>@<resourceVersion>` of the latest change.
    cause: String,
}

impl Pending {
    fn due(&self, debounce: Duration) -> Instant {
        (self.last + debounce).min(self.first + debounce * MAX_WAIT_DEBOUNCES)
    }
}

/// Which opted-in workload consumes which Secret, and which are waiting to be rolled:
/// no I/O, so that it is tested on its own.
#[derive(Default)]
struct Index {
    /// Opted-in workload → the Secrets (in its namespace) its pods consume.
    uses: HashMap<Workload, BTreeSet<String>>,
    /// Secret → the opted-in workloads that consume it.
    consumers: HashMap<SecretKey, BTreeSet<Workload>>,
    pending: HashMap<Workload, Pending>,
    /// The opted-in workloads of each kind listed since its watch (re)started.
    relisting: HashMap<WorkloadKind, HashSet<Workload>>,
}

impl Index {
    /// Records what `workload` consumes; returns the Secrets nothing consumed before, and
    /// those nothing consumes any more.
    fn set(
        &mut self,
        workload: &Workload,
        secrets: BTreeSet<String>,
    ) -> (Vec<SecretKey>, Vec<SecretKey>) {
        let old = self.uses.insert(workload.clone(), secrets.clone());
        let old = old.unwrap_or_default();
        let mut unused = Vec::new();
        for name in old.difference(&secrets) {
            unused.extend(self.unconsume(&workload.namespace, name, workload));
        }
        let mut new = Vec::new();
        for name in secrets.difference(&old) {
            let key = (workload.namespace.clone(), name.clone());
            let users = self.consumers.entry(key.clone()).or_default();
            if users.is_empty() {
                new.push(key);
            }
            users.insert(workload.clone());
        }
        (new, unused)
    }

    /// Forgets `workload`; returns the Secrets nothing consumes any more.
    fn forget(&mut self, workload: &Workload) -> Vec<SecretKey> {
        self.pending.remove(workload);
        let Some(old) = self.uses.remove(workload) else {
            return Vec::new();
        };
        old.iter()
            .filter_map(|name| self.unconsume(&workload.namespace, name, workload))
            .collect()
    }

    fn unconsume(&mut self, namespace: &str, name: &str, workload: &Workload) -> Option<SecretKey> {
        let key = (namespace.to_owned(), name.to_owned());
        let users = self.consumers.get_mut(&key)?;
        users.remove(workload);
        if !users.is_empty() {
            return None;
        }
        self.consumers.remove(&key);
        Some(key)
    }

    /// The data of Secret `key` changed at `now`: its consumers wait until it is quiet.
    fn changed(&mut self, key: &SecretKey, resource_version: &str, now: Instant) {
        let cause = format!("reload/{}@{resource_version}", key.1);
        for workload in self.consumers.get(key).into_iter().flatten() {
            self.pending
                .entry(workload.clone())
                .and_modify(|p| {
                    p.last = now;
                    p.cause.clone_from(&cause);
                })
                .or_insert_with(|| Pending {
                    first: now,
                    last: now,
                    cause: cause.clone(),
                });
        }
    }

    fn next_due(&self, debounce: Duration) -> Option<Instant> {
        self.pending.values().map(|p| p.due(debounce)).min()
    }

    /// The workloads due at `now`, with their restarted-for value, sorted; those
    /// `rolled_since` the last change they wait for are dropped instead.
    fn take_due(
        &mut self,
        now: Instant,
        debounce: Duration,
        rolled_since: impl Fn(&Workload, Instant) -> bool,
    ) -> Vec<(Workload, String)> {
        let due: Vec<Workload> = self
            .pending
            .iter()
            .filter(|(_, p)| p.due(debounce) <= now)
            .map(|(w, _)| w.clone())
            .collect();
        let mut due: Vec<(Workload, String)> = due
            .into_iter()
            .filter_map(|w| {
                let pending = self.pending.remove(&w)?;
                (!rolled_since(&w, pending.last)).then_some((w, pending.cause))
            })
            .collect();
        due.sort();
        due
    }

    /// A watch of `kind` (re)started: the objects it lists next are all there are.
    fn relist(&mut self, kind: WorkloadKind) {
        self.relisting.insert(kind, HashSet::new());
    }

    fn listed(&mut self, workload: &Workload) {
        if let Some(seen) = self.relisting.get_mut(&workload.kind) {
            seen.insert(workload.clone());
        }
    }

    /// The relist of `kind` is over: forgets the workloads it did not list; returns the
    /// Secrets nothing consumes any more.
    fn relisted(&mut self, kind: WorkloadKind) -> Vec<SecretKey> {
        let Some(listed) = self.relisting.remove(&kind) else {
            return Vec::new();
        };
        let vanished: Vec<Workload> = self
            .uses
            .keys()
            .filter(|w| w.kind == kind && !listed.contains(*w))
            .cloned()
            .collect();
        vanished.iter().flat_map(|w| self.forget(w)).collect()
    }
}

/// One event of the three workload watches.
enum WorkloadEvent {
    Relist(WorkloadKind),
    /// The workload exists; `Some`: it opted in and consumes these Secrets.
    Seen(Workload, Option<BTreeSet<String>>),
    Deleted(Workload),
    Relisted(WorkloadKind),
}

fn workload_events<K: Kind>(
    client: &Client,
    namespace: Option<&str>,
) -> BoxStream<'static, WorkloadEvent> {
    let seen = |obj: K| {
        let opted_in = obj
            .annotations()
            .get(RELOAD_ANNOTATION)
            .is_some_and(|v| v == "true");
        let secrets = opted_in.then(|| {
            obj.template()
                .and_then(|t| t.spec.as_ref())
                .map(|spec| secrets_of(spec).into_iter().map(str::to_owned).collect())
                .unwrap_or_default()
        });
        WorkloadEvent::Seen(workload_of(&obj), secrets)
    };
    watcher(
        crate::common::watch::scoped_api::<K>(client, namespace),
        watcher::Config::default().any_semantic(),
    )
    .default_backoff()
    .filter_map(move |event| {
        std::future::ready(match event {
            Ok(watcher::Event::Init) => Some(WorkloadEvent::Relist(K::KIND)),
            Ok(watcher::Event::Apply(obj) | watcher::Event::InitApply(obj)) => Some(seen(obj)),
            Ok(watcher::Event::Delete(obj)) => Some(WorkloadEvent::Deleted(workload_of(&obj))),
            Ok(watcher::Event::InitDone) => Some(WorkloadEvent::Relisted(K::KIND)),
            Err(err) => {
                tracing::warn!(kind = K::KIND.as_str(), error = %err, "workload watch failed; retrying");
                None
            }
        })
    })
    .boxed()
}

/// What reload last saw of a Secret that an opted-in workload consumes.
struct Seen {
    /// `None` while the Secret is deleted (its hash stays, so that a Secret replaced
    /// with other data counts as changed).
    resource_version: Option<String>,
    /// Keyed hash of its data.
    hash: u64,
}

/// The reload loop's state.
struct Reload {
    client: Client,
    metrics: Arc<Metrics>,
    debounce: Duration,
    hasher: RandomState,
    index: Index,
    seen: HashMap<SecretKey, Seen>,
}

impl Reload {
    fn hash(&self, secret: &Secret) -> u64 {
        let data: Vec<(&String, &[u8])> = secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k, v.0.as_slice()))
            .collect();
        self.hasher.hash_one(&data)
    }

    /// Reads Secret `key` and records its hash; returns its `resourceVersion` when its
    /// data differ from what was recorded before (never on first sight).
    async fn look(&mut self, key: &SecretKey) -> Option<String> {
        let api: Api<Secret> = Api::namespaced(self.client.clone(), &key.0);
        let secret = match api.get_opt(&key.1).await {
            Ok(secret) => secret,
            Err(err) => {
                tracing::warn!(namespace = %key.0, secret = %key.1, error = %err, "reload cannot read a consumed Secret; a change may go unnoticed");
                return None;
            }
        };
        let Some(secret) = secret else {
            if let Some(seen) = self.seen.get_mut(key) {
                seen.resource_version = None;
            }
            return None;
        };
        let hash = self.hash(&secret);
        let version = secret.resource_version().unwrap_or_default();
        let before = self.seen.insert(
            key.clone(),
            Seen {
                resource_version: Some(version.clone()),
                hash,
            },
        );
        before.filter(|b| b.hash != hash).map(|_| version)
    }

    async fn on_workload(&mut self, event: WorkloadEvent) {
        let unused = match event {
            WorkloadEvent::Relist(kind) => {
                self.index.relist(kind);
                Vec::new()
            }
            WorkloadEvent::Seen(workload, Some(secrets)) => {
                self.index.listed(&workload);
                let (new, unused) = self.index.set(&workload, secrets);
                for key in new {
                    // A baseline: what the Secret holds now is not a change.
                    if !self.seen.contains_key(&key) {
                        self.look(&key).await;
                    }
                }
                unused
            }
            WorkloadEvent::Seen(workload, None) | WorkloadEvent::Deleted(workload) => {
                self.index.forget(&workload)
            }
            WorkloadEvent::Relisted(kind) => self.index.relisted(kind),
        };
        for key in unused {
            self.seen.remove(&key);
        }
        self.metrics
            .reload_workloads
            .set(i64::try_from(self.index.uses.len()).unwrap_or(i64::MAX));
    }

    async fn on_secret(&mut self, event: watcher::Event<PartialObjectMeta<Secret>>) {
        let (meta, deleted) = match event {
            watcher::Event::Apply(meta) | watcher::Event::InitApply(meta) => (meta, false),
            watcher::Event::Delete(meta) => (meta, true),
            watcher::Event::Init | watcher::Event::InitDone => return,
        };
        let key = (meta.namespace().unwrap_or_default(), meta.name_any());
        if !self.index.consumers.contains_key(&key) {
            return;
        }
        if deleted {
            if let Some(seen) = self.seen.get_mut(&key) {
                seen.resource_version = None;
            }
            return;
        }
        let seen_version = self
            .seen
            .get(&key)
            .and_then(|s| s.resource_version.as_deref());
        if seen_version.is_some() && seen_version == meta.resource_version().as_deref() {
            return;
        }
        if let Some(version) = self.look(&key).await {
            tracing::debug!(namespace = %key.0, secret = %key.1, "consumed Secret changed; reload pending");
            self.index.changed(&key, &version, Instant::now());
        }
    }
}

/// Rolls opted-in workloads (`sigil.dev/reload: "true"`) in `watch_namespace` (every
/// namespace when `None`) through `restarter` when the data of a Secret their pods
/// consume changes, whatever changed it, until `stop` resolves.
///
/// Workloads are watched whole but not kept: only the opted-in ones' Secret names are.
/// Secrets are watched by metadata only (a Secret may hold up to 1 MiB, and most are
/// consumed by no opted-in workload); when one that an opted-in workload consumes
/// shows a new `resourceVersion`, it is read and a keyed hash of its data (never the
/// data) is compared with the last. The first sight of a Secret after start is not a
/// change; a metadata-only edit is not either.
///
/// Debounce: a workload is rolled once the Secrets it consumes have been quiet for
/// `debounce` (so a Secret flapping every second for 30 s rolls it once, `debounce`
/// after it stops); one that never stays quiet is still rolled every
/// `6 × debounce`. The restarted-for value `reload/<secret>@<resourceVersion>` names
/// the latest change, so a retried rollout rolls nothing twice.
pub async fn reload(
    client: Client,
    restarter: Arc<Restarter>,
    debounce: Duration,
    watch_namespace: Option<String>,
    secrets: impl Stream<Item = watcher::Event<PartialObjectMeta<Secret>>>,
    stop: impl Future<Output = ()>,
) {
    let ns = watch_namespace.as_deref();
    let mut workloads = futures::stream::select_all([
        workload_events::<Deployment>(&client, ns),
        workload_events::<StatefulSet>(&client, ns),
        workload_events::<DaemonSet>(&client, ns),
    ]);
    let (due_tx, due_rx) = tokio::sync::mpsc::unbounded_channel();
    let worker = tokio::spawn(roll_due(restarter.clone(), due_rx));
    let mut state = Reload {
        client,
        metrics: restarter.metrics.clone(),
        debounce,
        hasher: RandomState::new(),
        index: Index::default(),
        seen: HashMap::new(),
    };
    tokio::pin!(stop, secrets);
    loop {
        let wake = state
            .index
            .next_due(debounce)
            .unwrap_or_else(|| Instant::now() + Duration::from_secs(3600));
        tokio::select! {
            () = &mut stop => break,
            Some(event) = workloads.next() => state.on_workload(event).await,
            event = secrets.next() => match event {
                Some(event) => state.on_secret(event).await,
                None => break,
            },
            () = tokio::time::sleep_until(wake) => {
                let rotated = |w: &Workload, since| restarter.rotated_since(w, since);
                for due in state.index.take_due(Instant::now(), state.debounce, rotated) {
                    let _ = due_tx.send(due);
                }
            }
        }
    }
    worker.abort();
}

/// Rolls each due workload in turn (the [`Restarter`] bounds how many roll at once),
/// retrying a failed request a few times.
async fn roll_due(
    restarter: Arc<Restarter>,
    mut due: tokio::sync::mpsc::UnboundedReceiver<(Workload, String)>,
) {
    const ATTEMPTS: u32 = 4;
    while let Some((workload, restarted_for)) = due.recv().await {
        for attempt in 1..=ATTEMPTS {
            match restarter
                .roll_for(Trigger::Reload, &workload, &restarted_for)
                .await
            {
                Ok(rolled) => {
                    tracing::debug!(%workload, restarted_for, result = rolled.as_str(), "reload");
                    break;
                }
                Err(err) if attempt < ATTEMPTS => {
                    tracing::warn!(%workload, error = %err, attempt, "reload rollout failed; retrying");
                    tokio::time::sleep(Duration::from_secs(1 << attempt)).await;
                }
                Err(err) => {
                    tracing::error!(%workload, error = %err, "reload rollout failed; giving up until the Secret changes again");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::workload;
    use super::*;

    fn set(names: &[&str]) -> BTreeSet<String> {
        names.iter().map(|n| (*n).to_owned()).collect()
    }

    fn key(name: &str) -> SecretKey {
        ("ns".to_owned(), name.to_owned())
    }

    #[test]
    fn index_reports_secrets_as_they_gain_and_lose_their_last_consumer() {
        let mut index = Index::default();
        let (new, unused) = index.set(&workload("a"), set(&["s", "t"]));
        assert_eq!((new, unused), (vec![key("s"), key("t")], vec![]));
        assert_eq!(index.set(&workload("b"), set(&["s"])), (vec![], vec![]));
        // `a` stops consuming `t`: nothing else does.
        assert_eq!(
            index.set(&workload("a"), set(&["s"])),
            (vec![], vec![key("t")])
        );
        assert!(!index.consumers.contains_key(&key("t")));
        assert!(index.forget(&workload("a")).is_empty());
        assert_eq!(index.forget(&workload("b")), [key("s")]);
        assert!(index.consumers.is_empty() && index.uses.is_empty());
    }

    #[test]
    fn a_relist_forgets_workloads_it_no_longer_lists() {
        let mut index = Index::default();
        index.set(&workload("kept"), set(&["s"]));
        index.set(&workload("vanished"), set(&["t"]));
        let daemon = Workload {
            kind: WorkloadKind::DaemonSet,
            ..workload("other-kind")
        };
        index.set(&daemon, set(&["u"]));
        index.relist(WorkloadKind::Deployment);
        index.listed(&workload("kept"));
        assert_eq!(index.relisted(WorkloadKind::Deployment), [key("t")]);
        let left: BTreeSet<&str> = index.uses.keys().map(|w| w.name.as_str()).collect();
        assert_eq!(left, BTreeSet::from(["kept", "other-kind"]));
    }

    #[test]
    fn a_flapping_secret_rolls_once_after_it_is_quiet() {
        let debounce = Duration::from_secs(10);
        let mut index = Index::default();
        index.set(&workload("a"), set(&["s"]));
        index.set(&workload("b"), set(&["s", "t"]));
        index.set(&workload("c"), set(&["u"]));
        let start = Instant::now();
        for second in 0..30 {
            let now = start + Duration::from_secs(second);
            index.changed(&key("s"), &format!("{second}"), now);
            assert!(index.take_due(now, debounce, |_, _| false).is_empty());
        }
        assert_eq!(
            index.next_due(debounce),
            Some(start + Duration::from_secs(39))
        );
        assert!(
            index
                .take_due(start + Duration::from_secs(38), debounce, |_, _| false)
                .is_empty()
        );
        // A Rotation rolled `b` after the last change: the reload would roll it again.
        let rotated = |w: &Workload, since: Instant| {
            w.name == "b" && since <= start + Duration::from_secs(35)
        };
        let due = index.take_due(start + Duration::from_secs(39), debounce, rotated);
        assert_eq!(due, [(workload("a"), "reload/s@29".to_owned())]);
        assert_eq!(index.next_due(debounce), None);
    }

    #[test]
    fn a_secret_that_never_settles_still_rolls_every_few_debounces() {
        let debounce = Duration::from_secs(10);
        let mut index = Index::default();
        index.set(&workload("a"), set(&["s"]));
        let start = Instant::now();
        let mut rolled = Vec::new();
        for second in 0..=121 {
            let now = start + Duration::from_secs(second);
            index.changed(&key("s"), &format!("{second}"), now);
            rolled.extend(
                index
                    .take_due(now, debounce, |_, _| false)
                    .into_iter()
                    .map(|(_, c)| c),
            );
        }
        assert_eq!(rolled, ["reload/s@60", "reload/s@121"]);
    }

    #[test]
    fn changes_to_unconsumed_secrets_and_forgotten_workloads_roll_nothing() {
        let debounce = Duration::ZERO;
        let mut index = Index::default();
        index.set(&workload("a"), set(&["s"]));
        let now = Instant::now();
        index.changed(&key("other"), "1", now);
        assert!(index.take_due(now, debounce, |_, _| false).is_empty());
        index.changed(&key("s"), "2", now);
        index.forget(&workload("a"));
        assert!(index.take_due(now, debounce, |_, _| false).is_empty());
    }
}

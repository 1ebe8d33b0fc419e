//! The one metadata-only watch of Secrets every kind shares, and what each kind learns
//! from it of the Secrets it writes: their resourceVersions and whether each still
//! holds what was last written. Names and versions are kept hashed; no value ever.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::{Arc, Mutex};

use futures::channel::mpsc;
use futures::{SinkExt, Stream, StreamExt};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, PartialObjectMeta};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, ResourceExt};

use super::watch::InitialList;

/// A Secret's resourceVersion as the controller keeps it: a keyed hash, compared only
/// for equality, in 8 bytes where the version and its name would take about 100 (one is
/// kept per Secret, and a cluster may hold tens of thousands).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct SecretVersion(u64);

/// The Secrets one kind writes, as its watch last saw them, and what was last written
/// to each. Only (hashed) names and resourceVersions are kept, never a value: whether a
/// Secret still holds what was written is told by its resourceVersion, against the
/// version that held it and a keyed hash of everything written. The hashes are keyed
/// per process, so no Secret's name can be chosen to collide with another's.
#[derive(Default)]
pub(crate) struct OwnedSecrets {
    known: Mutex<Known>,
    hasher: std::hash::RandomState,
}

/// A keyed hash of a Secret's namespace and name.
type SecretKey = u64;

#[derive(Default)]
struct Known {
    /// Per Secret the watch shows (or one was written to): its version, and what held.
    secrets: HashMap<SecretKey, Versions>,
    /// While the watch lists again: the versions listed so far.
    relisted: Option<HashMap<SecretKey, SecretVersion>>,
}

#[derive(Default)]
struct Versions {
    /// As the watch last showed it; `None`: not shown (yet).
    seen: Option<SecretVersion>,
    /// The version at which it held the content with this fingerprint.
    held: Option<(SecretVersion, u64)>,
}

/// One metadata-only watch of the Secrets in scope, for everything that follows them:
/// the Secret writer of each kind, and the reloads of workloads. One watch, not one per
/// follower: the API server encodes and sends each Secret it writes once per watch, and
/// at a cold start every Secret the controller creates is such a write.
pub(crate) struct SecretWatch {
    api: Api<PartialObjectMeta<Secret>>,
    initial: InitialList,
    owned: Vec<OwnedFollower>,
    every_event: Vec<mpsc::Sender<watcher::Event<PartialObjectMeta<Secret>>>>,
}

struct OwnedFollower {
    label: &'static str,
    secrets: Arc<OwnedSecrets>,
    changes: mpsc::Sender<PartialObjectMeta<Secret>>,
}

/// Events a follower may lag behind the watch; beyond, the watch waits for it.
const FOLLOWER_BACKLOG: usize = 256;

impl SecretWatch {
    pub(crate) fn new(api: Api<PartialObjectMeta<Secret>>, initial: InitialList) -> Self {
        Self {
            api,
            initial,
            owned: Vec::new(),
            every_event: Vec::new(),
        }
    }

    /// Follows the Secrets carrying `label`, as a watch selecting that label would: what
    /// the Secret writer reads, and a stream of the Secrets that changed, each one after
    /// it was recorded (a Secret deleted by hand is never judged unchanged from a
    /// version that is gone). The echo of the controller's own write is left out of the
    /// stream: the reconcile that wrote already knows, and at a cold start 10,000 of
    /// them would queue as many reconciles that have nothing to do.
    pub(crate) fn owned(
        &mut self,
        label: &'static str,
    ) -> (
        Arc<OwnedSecrets>,
        impl Stream<Item = Result<PartialObjectMeta<Secret>, watcher::Error>> + Send + 'static,
    ) {
        let secrets = Arc::new(OwnedSecrets::default());
        let (changes, changed) = mpsc::channel(FOLLOWER_BACKLOG);
        self.owned.push(OwnedFollower {
            label,
            secrets: secrets.clone(),
            changes,
        });
        (secrets, changed.map(Ok))
    }

    /// Every event of the watch, for a follower of all the Secrets in scope.
    pub(crate) fn every_event(
        &mut self,
    ) -> impl Stream<Item = watcher::Event<PartialObjectMeta<Secret>>> + Send + 'static {
        let (events, followed) = mpsc::channel(FOLLOWER_BACKLOG);
        self.every_event.push(events);
        followed
    }

    /// Runs the watch and hands each event to every follower, retrying a failed watch
    /// with backoff; runs until dropped.
    pub(crate) async fn run(mut self) {
        let events = watcher(self.api.clone(), self.initial.watcher_config()).default_backoff();
        futures::pin_mut!(events);
        while let Some(event) = events.next().await {
            let event = match event {
                Ok(event) => event,
                Err(err) => {
                    tracing::warn!(error = %err, "the Secret watch failed; retrying");
                    continue;
                }
            };
            for follower in &mut self.owned {
                if let Some(changed) = follower.secrets.follow(follower.label, &event) {
                    // A follower gone (its controller stopped) has nothing left to learn.
                    let _ = follower.changes.send(changed).await;
                }
            }
            for follower in &mut self.every_event {
                let _ = follower.send(event.clone()).await;
            }
        }
    }
}

impl OwnedSecrets {
    fn key(&self, namespace: &str, name: &str) -> SecretKey {
        self.hasher.hash_one((namespace, name))
    }

    fn key_of(&self, meta: &PartialObjectMeta<Secret>) -> SecretKey {
        self.key(
            meta.metadata.namespace.as_deref().unwrap_or_default(),
            meta.metadata.name.as_deref().unwrap_or_default(),
        )
    }

    /// `resource_version` as kept.
    pub(crate) fn version(&self, resource_version: &str) -> SecretVersion {
        SecretVersion(self.hasher.hash_one(resource_version))
    }

    /// The version in a Secret's (or its metadata's) `metadata`, as kept.
    pub(super) fn version_of(&self, meta: &ObjectMeta) -> Option<SecretVersion> {
        meta.resource_version.as_deref().map(|v| self.version(v))
    }

    fn known(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records one event of the watch of every Secret as a watch of the Secrets carrying
    /// `label` would show it, and returns the Secret that changed, unless it is the echo
    /// of the controller's own write.
    fn follow(
        &self,
        label: &str,
        event: &watcher::Event<PartialObjectMeta<Secret>>,
    ) -> Option<PartialObjectMeta<Secret>> {
        let labelled = |meta: &PartialObjectMeta<Secret>| meta.labels().contains_key(label);
        match event {
            watcher::Event::Init | watcher::Event::InitDone => {
                self.observe(event);
                None
            }
            watcher::Event::Apply(meta) | watcher::Event::InitApply(meta) if labelled(meta) => {
                self.observe(event);
                (!self.wrote(meta)).then(|| meta.clone())
            }
            // A Secret that loses the label leaves a selecting watch as if deleted.
            watcher::Event::Apply(meta) if self.was_seen(meta) => {
                self.observe(&watcher::Event::Delete(meta.clone()));
                Some(meta.clone())
            }
            watcher::Event::Delete(meta) if labelled(meta) || self.was_seen(meta) => {
                self.observe(event);
                Some(meta.clone())
            }
            _ => None,
        }
    }

    /// Whether the watch has shown this Secret (with the label) since it last listed.
    fn was_seen(&self, meta: &PartialObjectMeta<Secret>) -> bool {
        self.known()
            .secrets
            .get(&self.key_of(meta))
            .is_some_and(|versions| versions.seen.is_some())
    }

    fn observe(&self, event: &watcher::Event<PartialObjectMeta<Secret>>) {
        let mut known = self.known();
        let known = &mut *known;
        match event {
            watcher::Event::Apply(meta) => {
                known.secrets.entry(self.key_of(meta)).or_default().seen =
                    self.version_of(&meta.metadata);
            }
            watcher::Event::Delete(meta) => {
                known.secrets.remove(&self.key_of(meta));
            }
            watcher::Event::Init => known.relisted = Some(HashMap::new()),
            watcher::Event::InitApply(meta) => {
                if let (Some(relisted), Some(version)) =
                    (&mut known.relisted, self.version_of(&meta.metadata))
                {
                    relisted.insert(self.key_of(meta), version);
                }
            }
            watcher::Event::InitDone => {
                let mut relisted = known.relisted.take().unwrap_or_default();
                // What the list no longer shows is gone, with what it held.
                known
                    .secrets
                    .retain(|key, versions| match relisted.remove(key) {
                        Some(version) => {
                            versions.seen = Some(version);
                            true
                        }
                        None => false,
                    });
                for (key, version) in relisted {
                    known.secrets.entry(key).or_default().seen = Some(version);
                }
            }
        }
    }

    /// Whether `meta` is the version the controller's own last write left, as it holds.
    fn wrote(&self, meta: &PartialObjectMeta<Secret>) -> bool {
        let Some(version) = self.version_of(&meta.metadata) else {
            return false;
        };
        self.known()
            .secrets
            .get(&self.key_of(meta))
            .is_some_and(|versions| {
                versions.seen == Some(version)
                    && versions.held.is_some_and(|(held, _)| held == version)
            })
    }

    /// The Secret's resourceVersion, as the watch last showed it.
    pub(crate) fn seen(&self, namespace: &str, name: &str) -> Option<SecretVersion> {
        self.known().secrets.get(&self.key(namespace, name))?.seen
    }

    /// A keyed hash of everything `desired` sets: data, type, immutability, labels,
    /// annotations and controller. Keyed per process, so it reveals nothing of the values.
    pub(super) fn fingerprint(&self, desired: &Secret) -> u64 {
        let data: Vec<(&str, &[u8])> = desired
            .data
            .iter()
            .flatten()
            .map(|(k, v)| (k.as_str(), v.0.as_slice()))
            .collect();
        let meta = &desired.metadata;
        let owners: Vec<(&str, Option<bool>)> = meta
            .owner_references
            .iter()
            .flatten()
            .map(|r| (r.uid.as_str(), r.controller))
            .collect();
        self.hasher.hash_one((
            data,
            desired.type_.as_deref(),
            desired.immutable,
            &meta.labels,
            &meta.annotations,
            owners,
        ))
    }

    /// The Secret's resourceVersion if the watch shows it unchanged since it held the
    /// content with `fingerprint`.
    pub(super) fn holds(
        &self,
        namespace: &str,
        name: &str,
        fingerprint: u64,
    ) -> Option<SecretVersion> {
        let known = self.known();
        let versions = known.secrets.get(&self.key(namespace, name))?;
        match (versions.seen, versions.held) {
            (Some(seen), Some((held, held_fingerprint)))
                if seen == held && held_fingerprint == fingerprint =>
            {
                Some(seen)
            }
            _ => None,
        }
    }

    pub(super) fn remember(
        &self,
        namespace: &str,
        name: &str,
        version: Option<SecretVersion>,
        fingerprint: u64,
    ) {
        let key = self.key(namespace, name);
        let mut known = self.known();
        match version {
            Some(version) => {
                known.secrets.entry(key).or_default().held = Some((version, fingerprint));
            }
            None => {
                if let Some(versions) = known.secrets.get_mut(&key) {
                    versions.held = None;
                }
            }
        }
    }

    pub(super) fn forget(&self, namespace: &str, name: &str) {
        self.remember(namespace, name, None, 0);
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use std::collections::BTreeMap;

    pub(in crate::common) fn secret(data: &[(&str, &str)]) -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("db".into()),
                namespace: Some("prod".into()),
                ..ObjectMeta::default()
            },
            data: Some(
                data.iter()
                    .map(|(k, v)| ((*k).to_owned(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        }
    }

    fn at_version(secret: &Secret, version: &str) -> PartialObjectMeta<Secret> {
        let mut metadata = secret.metadata.clone();
        metadata.resource_version = Some(version.into());
        PartialObjectMeta {
            types: None,
            metadata,
            _phantom: std::marker::PhantomData,
        }
    }

    #[test]
    fn a_secret_holds_what_was_written_until_its_version_or_the_content_changes() {
        let owned = OwnedSecrets::default();
        let desired = secret(&[("password", "hunter2")]);
        let fingerprint = owned.fingerprint(&desired);
        owned.observe(&watcher::Event::Apply(at_version(&desired, "5")));
        assert_eq!(owned.seen("prod", "db"), Some(owned.version("5")));
        assert_eq!(
            owned.holds("prod", "db", fingerprint),
            None,
            "nothing written yet"
        );

        owned.remember("prod", "db", Some(owned.version("5")), fingerprint);
        assert_eq!(
            owned.holds("prod", "db", fingerprint),
            Some(owned.version("5"))
        );
        let other = owned.fingerprint(&secret(&[("password", "hunter3")]));
        assert_ne!(other, fingerprint);
        assert_eq!(owned.holds("prod", "db", other), None, "other content");
        let mut typed = desired.clone();
        typed.type_ = Some("kubernetes.io/basic-auth".into());
        assert_ne!(owned.fingerprint(&typed), fingerprint, "the type counts");
        let mut labelled = desired.clone();
        labelled.metadata.labels = Some(BTreeMap::from([("app".into(), "db".into())]));
        assert_ne!(owned.fingerprint(&labelled), fingerprint, "labels count");

        // Edited by anyone: a new version, which nothing vouches for.
        owned.observe(&watcher::Event::Apply(at_version(&desired, "6")));
        assert_eq!(owned.holds("prod", "db", fingerprint), None);

        // Deleted: nothing is left of it.
        owned.remember("prod", "db", Some(owned.version("6")), fingerprint);
        owned.observe(&watcher::Event::Delete(at_version(&desired, "6")));
        assert_eq!(owned.seen("prod", "db"), None);
        assert_eq!(owned.holds("prod", "db", fingerprint), None);
    }

    #[test]
    fn a_relist_forgets_what_is_gone_and_keeps_what_is_unchanged() {
        let owned = OwnedSecrets::default();
        let kept = secret(&[("password", "hunter2")]);
        let mut gone = kept.clone();
        gone.metadata.name = Some("old".into());
        let fingerprint = owned.fingerprint(&kept);
        for (secret, version) in [(&kept, "5"), (&gone, "7")] {
            owned.observe(&watcher::Event::Apply(at_version(secret, version)));
            owned.remember(
                "prod",
                &secret.name_any(),
                Some(owned.version(version)),
                fingerprint,
            );
        }
        // The watch reconnects after "old" was deleted while it was away.
        owned.observe(&watcher::Event::Init);
        owned.observe(&watcher::Event::InitApply(at_version(&kept, "5")));
        assert_eq!(
            owned.seen("prod", "old"),
            Some(owned.version("7")),
            "until done"
        );
        owned.observe(&watcher::Event::InitDone);
        assert_eq!(owned.seen("prod", "old"), None);
        assert_eq!(owned.holds("prod", "old", fingerprint), None);
        assert_eq!(
            owned.holds("prod", "db", fingerprint),
            Some(owned.version("5"))
        );
    }

    #[test]
    fn a_follower_sees_only_its_label_and_a_lost_label_as_a_deletion() {
        let owned = OwnedSecrets::default();
        let mut mine = secret(&[("password", "hunter2")]);
        mine.metadata.labels = Some(BTreeMap::from([("mine".into(), "true".into())]));
        let changed = |event| owned.follow("mine", &event).map(|m| m.name_any());

        assert_eq!(
            changed(watcher::Event::Apply(at_version(&secret(&[]), "4"))),
            None,
            "a Secret without the label is not followed"
        );
        assert_eq!(owned.seen("prod", "db"), None);
        assert_eq!(
            changed(watcher::Event::Apply(at_version(&mine, "5"))),
            Some("db".into())
        );
        assert_eq!(owned.seen("prod", "db"), Some(owned.version("5")));

        // The echo of the controller's own write starts no reconcile.
        let fingerprint = owned.fingerprint(&mine);
        owned.remember("prod", "db", Some(owned.version("6")), fingerprint);
        assert_eq!(changed(watcher::Event::Apply(at_version(&mine, "6"))), None);

        // Someone removes the label: to the follower it is gone.
        let mut unlabelled = mine.clone();
        unlabelled.metadata.labels = None;
        assert_eq!(
            changed(watcher::Event::Apply(at_version(&unlabelled, "7"))),
            Some("db".into())
        );
        assert_eq!(owned.seen("prod", "db"), None);
        assert_eq!(owned.holds("prod", "db", fingerprint), None);
        assert_eq!(
            changed(watcher::Event::Apply(at_version(&unlabelled, "8"))),
            None,
            "and stays out of view"
        );
    }
}

//! Rolling the workloads that consume a Secret: which Deployments, StatefulSets and
//! DaemonSets consume it ([`Restarter::consumers`]), a rollout by setting the pod-template
//! annotation [`RESTARTED_FOR_ANNOTATION`] (idempotent: a value the template already has
//! rolls nothing), at most `--max-concurrent-restarts` rollouts at once
//! ([`Restarter::roll`]), and the reload opt-in ([`reload`]): a workload annotated
//! [`RELOAD_ANNOTATION`]` = "true"` is rolled when the data of a Secret it consumes
//! changes, whatever changed it. Nothing here formats or keeps a Secret's data: reload
//! keeps a keyed hash of it, and only of Secrets an opted-in workload consumes.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::BoxStream;
use futures::{Stream, StreamExt};
use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec, Secret};
use kube::api::{ListParams, PartialObjectMeta, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sigil_types::{RELOAD_ANNOTATION, RESTARTED_FOR_ANNOTATION};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::common::error::{Error, KubeContext, Result};
use crate::common::metrics::{Metrics, RolloutLabel};

/// The field manager of the restarted-for annotation, apart from the controller's own so
/// that `managedFields` tells who set it.
pub const RESTART_MANAGER: &str = "sigil-controller/restart";

/// A Secret that keeps changing still rolls its consumers once every this many debounce
/// periods, instead of never.
const MAX_WAIT_DEBOUNCES: u32 = 6;

/// The kinds of workload that are rolled.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub enum WorkloadKind {
    /// `apps/v1` Deployment.
    Deployment,
    /// `apps/v1` StatefulSet.
    StatefulSet,
    /// `apps/v1` DaemonSet.
    DaemonSet,
}

impl WorkloadKind {
    /// The kind's name, as in `kind:`.
    pub fn as_str(self) -> &'static str {
        match self {
            WorkloadKind::Deployment => "Deployment",
            WorkloadKind::StatefulSet => "StatefulSet",
            WorkloadKind::DaemonSet => "DaemonSet",
        }
    }
}

/// A Deployment, StatefulSet or DaemonSet.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct Workload {
    /// Its kind.
    pub kind: WorkloadKind,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

impl fmt::Display for Workload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{}", self.kind.as_str(), self.namespace, self.name)
    }
}

/// What became of a rollout asked of [`Restarter::roll`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Rolled {
    /// The annotation was set: the workload rolls out.
    Rolled,
    /// The pod template already carried that value; nothing was written.
    AlreadyRolled,
    /// The workload does not exist (any more).
    Gone,
}

impl Rolled {
    /// A metric label value.
    pub fn as_str(self) -> &'static str {
        match self {
            Rolled::Rolled => "rolled",
            Rolled::AlreadyRolled => "already_rolled",
            Rolled::Gone => "gone",
        }
    }
}

/// What asked for a rollout (a metric label).
#[derive(Clone, Copy, Debug)]
enum Trigger {
    Rotation,
    Reload,
}

impl Trigger {
    fn as_str(self) -> &'static str {
        match self {
            Trigger::Rotation => "rotation",
            Trigger::Reload => "reload",
        }
    }
}

/// The names of the Secrets a pod spec consumes: `env[].valueFrom.secretKeyRef`,
/// `envFrom[].secretRef` of every container (init and ephemeral ones too),
/// `volumes[].secret` and `volumes[].projected.sources[].secret`. Optional references
/// count: the pods read the Secret whenever it exists.
pub fn secrets_of(spec: &PodSpec) -> BTreeSet<&str> {
    let containers = spec
        .containers
        .iter()
        .chain(spec.init_containers.iter().flatten())
        .map(|c| (c.env.as_deref(), c.env_from.as_deref()));
    let ephemeral = spec
        .ephemeral_containers
        .iter()
        .flatten()
        .map(|c| (c.env.as_deref(), c.env_from.as_deref()));
    let mut names = BTreeSet::new();
    for (env, env_from) in containers.chain(ephemeral) {
        names.extend(env.into_iter().flatten().filter_map(|var| {
            Some(
                var.value_from
                    .as_ref()?
                    .secret_key_ref
                    .as_ref()?
                    .name
                    .as_str(),
            )
        }));
        names.extend(
            env_from
                .into_iter()
                .flatten()
                .filter_map(|source| Some(source.secret_ref.as_ref()?.name.as_str())),
        );
    }
    for volume in spec.volumes.iter().flatten() {
        names.extend(
            volume
                .secret
                .as_ref()
                .and_then(|s| s.secret_name.as_deref()),
        );
        names.extend(
            volume
                .projected
                .iter()
                .flat_map(|p| p.sources.iter().flatten())
                .filter_map(|source| Some(source.secret.as_ref()?.name.as_str())),
        );
    }
    names.remove("");
    names
}

/// How far a rollout is, as `kubectl rollout status` judges it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Progress {
    Waiting,
    Complete,
    /// It will not complete by itself (a Deployment past its progress deadline).
    Failed,
}

/// What the three workload kinds have in common here.
trait Kind:
    Resource<DynamicType = (), Scope = NamespaceResourceScope>
    + Clone
    + DeserializeOwned
    + fmt::Debug
    + Send
    + Sync
    + 'static
{
    const KIND: WorkloadKind;

    fn template(&self) -> Option<&PodTemplateSpec>;

    /// The rollout of the current generation (`kubectl rollout status` semantics; the
    /// generation is at least the one a patch produced, so a rollout counts as complete
    /// only once the controller has observed the patch).
    fn progress(&self) -> Progress;
}

fn generations<K: Resource>(obj: &K, observed: Option<i64>) -> (i64, i64) {
    (obj.meta().generation.unwrap_or(0), observed.unwrap_or(0))
}

/// `OnDelete` workloads replace no pod when their template changes: there is nothing to
/// wait for.
fn rolls_on_update(strategy: Option<&str>) -> bool {
    strategy.is_none_or(|s| s == "RollingUpdate")
}

impl Kind for Deployment {
    const KIND: WorkloadKind = WorkloadKind::Deployment;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }

    fn progress(&self) -> Progress {
        let (Some(spec), Some(status)) = (&self.spec, &self.status) else {
            return Progress::Waiting;
        };
        let (generation, observed) = generations(self, status.observed_generation);
        if observed < generation {
            return Progress::Waiting;
        }
        let timed_out = status.conditions.iter().flatten().any(|c| {
            c.type_ == "Progressing" && c.reason.as_deref() == Some("ProgressDeadlineExceeded")
        });
        if timed_out {
            return Progress::Failed;
        }
        let updated = status.updated_replicas.unwrap_or(0);
        if spec.replicas.is_some_and(|wanted| updated < wanted)
            || status.replicas.unwrap_or(0) > updated
            || status.available_replicas.unwrap_or(0) < updated
        {
            return Progress::Waiting;
        }
        Progress::Complete
    }
}

impl Kind for StatefulSet {
    const KIND: WorkloadKind = WorkloadKind::StatefulSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }

    fn progress(&self) -> Progress {
        let Some(spec) = &self.spec else {
            return Progress::Waiting;
        };
        let strategy = spec.update_strategy.as_ref();
        if !rolls_on_update(strategy.and_then(|s| s.type_.as_deref())) {
            return Progress::Complete;
        }
        let Some(status) = &self.status else {
            return Progress::Waiting;
        };
        let (generation, observed) = generations(self, status.observed_generation);
        if observed == 0 || observed < generation {
            return Progress::Waiting;
        }
        if spec
            .replicas
            .is_some_and(|wanted| status.ready_replicas.unwrap_or(0) < wanted)
        {
            return Progress::Waiting;
        }
        if let Some(rolling) = strategy.and_then(|s| s.rolling_update.as_ref()) {
            if let (Some(wanted), Some(partition)) = (spec.replicas, rolling.partition)
                && status.updated_replicas.unwrap_or(0) < wanted - partition
            {
                return Progress::Waiting;
            }
            return Progress::Complete;
        }
        if status.update_revision != status.current_revision {
            return Progress::Waiting;
        }
        Progress::Complete
    }
}

impl Kind for DaemonSet {
    const KIND: WorkloadKind = WorkloadKind::DaemonSet;

    fn template(&self) -> Option<&PodTemplateSpec> {
        self.spec.as_ref().map(|s| &s.template)
    }

    fn progress(&self) -> Progress {
        let strategy = self.spec.as_ref().and_then(|s| s.update_strategy.as_ref());
        if !rolls_on_update(strategy.and_then(|s| s.type_.as_deref())) {
            return Progress::Complete;
        }
        let Some(status) = &self.status else {
            return Progress::Waiting;
        };
        let (generation, observed) = generations(self, status.observed_generation);
        let desired = status.desired_number_scheduled;
        if observed < generation
            || status.updated_number_scheduled.unwrap_or(0) < desired
            || status.number_available.unwrap_or(0) < desired
        {
            return Progress::Waiting;
        }
        Progress::Complete
    }
}

fn workload_of<K: Kind>(obj: &K) -> Workload {
    Workload {
        kind: K::KIND,
        namespace: obj.namespace().unwrap_or_default(),
        name: obj.name_any(),
    }
}

fn restarted_for_of<K: Kind>(obj: &K) -> Option<&str> {
    obj.template()?
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(RESTARTED_FOR_ANNOTATION)
        .map(String::as_str)
}

/// Rolls workloads, at most `max_concurrent` at once: one per controller process, shared
/// by Rotations and reload.
pub struct Restarter {
    client: Client,
    permits: Arc<Semaphore>,
    deadline: Duration,
    metrics: Arc<Metrics>,
    /// When a Rotation last rolled each workload: a reload of the Secret change that
    /// Rotation made would roll it a second time for nothing.
    rotated: std::sync::Mutex<HashMap<Workload, Instant>>,
}

impl Restarter {
    /// `max_concurrent` rollouts at once (at least one); a rollout holds its slot until it
    /// is complete or `deadline` has passed.
    pub fn new(
        client: Client,
        max_concurrent: usize,
        deadline: Duration,
        metrics: Arc<Metrics>,
    ) -> Arc<Self> {
        Arc::new(Self {
            client,
            permits: Arc::new(Semaphore::new(max_concurrent.max(1))),
            deadline,
            metrics,
            rotated: std::sync::Mutex::default(),
        })
    }

    /// The workloads in `namespace` whose pod template consumes any Secret in `secrets`
    /// (see [`secrets_of`]), sorted.
    pub async fn consumers(
        &self,
        namespace: &str,
        secrets: &BTreeSet<String>,
    ) -> Result<Vec<Workload>> {
        let mut found = self.consumers_of::<Deployment>(namespace, secrets).await?;
        found.extend(self.consumers_of::<StatefulSet>(namespace, secrets).await?);
        found.extend(self.consumers_of::<DaemonSet>(namespace, secrets).await?);
        found.sort();
        Ok(found)
    }

    async fn consumers_of<K: Kind>(
        &self,
        namespace: &str,
        secrets: &BTreeSet<String>,
    ) -> Result<Vec<Workload>> {
        let api: Api<K> = Api::namespaced(self.client.clone(), namespace);
        let list = api
            .list(&ListParams::default())
            .await
            .during(|| format!("list {}s in namespace {namespace}", K::KIND.as_str()))?;
        Ok(list
            .items
            .iter()
            .filter(|obj| {
                obj.template()
                    .and_then(|t| t.spec.as_ref())
                    .is_some_and(|spec| secrets_of(spec).iter().any(|s| secrets.contains(*s)))
            })
            .map(workload_of)
            .collect())
    }

    /// Sets the pod-template annotation [`RESTARTED_FOR_ANNOTATION`] to `restarted_for`,
    /// unless it already has that value ([`Rolled::AlreadyRolled`], no slot used): a
    /// retried step never rolls twice. Waits for a free slot first; the slot is released
    /// in the background when the rollout is complete (`kubectl rollout status` semantics,
    /// the patched generation observed) or after the deadline, whichever comes first. A
    /// workload that does not exist, or is deleted meanwhile, is [`Rolled::Gone`].
    pub async fn roll(
        self: &Arc<Self>,
        workload: &Workload,
        restarted_for: &str,
    ) -> Result<Rolled> {
        let rolled = self
            .roll_for(Trigger::Rotation, workload, restarted_for)
            .await?;
        if rolled != Rolled::Gone {
            let mut rotated = self.rotated.lock().unwrap_or_else(|e| e.into_inner());
            rotated.retain(|_, at| at.elapsed() < Duration::from_secs(3600));
            rotated.insert(workload.clone(), Instant::now());
        }
        Ok(rolled)
    }

    /// Whether a Rotation rolled `workload` after `since`.
    fn rotated_since(&self, workload: &Workload, since: Instant) -> bool {
        self.rotated
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(workload)
            .is_some_and(|at| *at >= since)
    }

    async fn roll_for(
        self: &Arc<Self>,
        trigger: Trigger,
        workload: &Workload,
        restarted_for: &str,
    ) -> Result<Rolled> {
        let result = match workload.kind {
            WorkloadKind::Deployment => self.roll_kind::<Deployment>(workload, restarted_for).await,
            WorkloadKind::StatefulSet => {
                self.roll_kind::<StatefulSet>(workload, restarted_for).await
            }
            WorkloadKind::DaemonSet => self.roll_kind::<DaemonSet>(workload, restarted_for).await,
        };
        self.metrics
            .rollouts
            .get_or_create(&RolloutLabel {
                trigger: trigger.as_str(),
                result: result.as_ref().map_or("error", |rolled| rolled.as_str()),
            })
            .inc();
        result
    }

    async fn roll_kind<K: Kind>(&self, workload: &Workload, restarted_for: &str) -> Result<Rolled> {
        let api: Api<K> = Api::namespaced(self.client.clone(), &workload.namespace);
        if let Some(done) = already(&api, workload, restarted_for).await? {
            return Ok(done);
        }
        let permit = match self.permits.clone().try_acquire_owned() {
            Ok(permit) => permit,
            Err(_) => {
                let permit = self
                    .permits
                    .clone()
                    .acquire_owned()
                    .await
                    .expect("the restart semaphore is never closed");
                // The wait for a slot may have been long: look again.
                if let Some(done) = already(&api, workload, restarted_for).await? {
                    return Ok(done);
                }
                permit
            }
        };
        // A JSON merge patch of the one annotation, under a field manager of its own,
        // rather than server-side apply: a patch never creates, so a workload deleted
        // meanwhile answers 404 (an apply would try to create a Deployment holding only
        // this annotation); and like `kubectl rollout restart` it writes nothing but that
        // key, which GitOps tools leave alone since their manifests do not set it
        // (server-side apply only removes fields its own manager set; client-side apply's
        // three-way merge only those in its last-applied configuration).
        let patch = serde_json::json!({
            "spec": {"template": {"metadata": {"annotations": {
                RESTARTED_FOR_ANNOTATION: restarted_for,
            }}}}
        });
        let params = PatchParams {
            field_manager: Some(RESTART_MANAGER.to_owned()),
            ..PatchParams::default()
        };
        let patched = match api
            .patch(&workload.name, &params, &Patch::Merge(&patch))
            .await
        {
            Ok(patched) => patched,
            Err(kube::Error::Api(status)) if status.code == 404 => return Ok(Rolled::Gone),
            Err(source) => {
                return Err(Error::Kube {
                    action: format!("roll {workload} (set {RESTARTED_FOR_ANNOTATION})"),
                    source,
                });
            }
        };
        tracing::info!(%workload, restarted_for, "rolling out");
        tokio::spawn(release_when_rolled_out(
            api,
            patched,
            permit,
            self.deadline,
            workload.clone(),
        ));
        Ok(Rolled::Rolled)
    }
}

/// `Gone` or `AlreadyRolled` when there is nothing to do.
async fn already<K: Kind>(
    api: &Api<K>,
    workload: &Workload,
    restarted_for: &str,
) -> Result<Option<Rolled>> {
    let current = api
        .get_opt(&workload.name)
        .await
        .during(|| format!("read {workload}"))?;
    Ok(match current {
        None => Some(Rolled::Gone),
        Some(obj) if restarted_for_of(&obj) == Some(restarted_for) => Some(Rolled::AlreadyRolled),
        Some(_) => None,
    })
}

/// Holds `permit` until the rollout `patched` started is over or `deadline` has passed.
async fn release_when_rolled_out<K: Kind>(
    api: Api<K>,
    patched: K,
    permit: OwnedSemaphorePermit,
    deadline: Duration,
    workload: Workload,
) {
    let _permit = permit;
    let started = Instant::now();
    let uid = patched.uid();
    let generation = patched.meta().generation.unwrap_or(0);
    // Deleted or replaced (another UID) counts as over.
    let over = move |obj: Option<&K>| match obj {
        Some(obj) if obj.uid() == uid => {
            obj.meta().generation.unwrap_or(0) >= generation && obj.progress() != Progress::Waiting
        }
        _ => true,
    };
    match tokio::time::timeout(deadline, await_condition(api, &workload.name, over)).await {
        Ok(Ok(Some(obj))) if obj.progress() == Progress::Failed => {
            tracing::warn!(%workload, "rollout exceeded its progress deadline; starting the next");
        }
        Ok(Ok(_)) => {
            tracing::debug!(%workload, elapsed = ?started.elapsed(), "rollout over");
        }
        Ok(Err(err)) => {
            tracing::warn!(%workload, error = %err, "cannot watch the rollout; holding its slot until the deadline");
            tokio::time::sleep_until(started + deadline).await;
        }
        Err(_) => {
            tracing::info!(%workload, ?deadline, "rollout not complete by the deadline; starting the next");
        }
    }
}

// ---------------------------------------------------------------------------
// reload

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
    use k8s_openapi::api::apps::v1::{
        DaemonSetSpec, DaemonSetStatus, DaemonSetUpdateStrategy, DeploymentCondition,
        DeploymentSpec, DeploymentStatus, RollingUpdateStatefulSetStrategy, StatefulSetSpec,
        StatefulSetStatus, StatefulSetUpdateStrategy,
    };
    use k8s_openapi::api::core::v1::{
        Container, EnvFromSource, EnvVar, EnvVarSource, EphemeralContainer, ProjectedVolumeSource,
        SecretEnvSource, SecretKeySelector, SecretProjection, SecretVolumeSource, Volume,
        VolumeProjection,
    };
    use kube::api::ObjectMeta;

    use super::*;

    fn container(name: &str) -> Container {
        Container {
            name: name.to_owned(),
            ..Container::default()
        }
    }

    fn env_secret(secret: &str, optional: Option<bool>) -> EnvVar {
        EnvVar {
            name: "V".to_owned(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: secret.to_owned(),
                    key: "k".to_owned(),
                    optional,
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        }
    }

    fn env_from(secret: &str) -> EnvFromSource {
        EnvFromSource {
            secret_ref: Some(SecretEnvSource {
                name: secret.to_owned(),
                optional: Some(true),
            }),
            ..EnvFromSource::default()
        }
    }

    fn names(spec: &PodSpec) -> Vec<&str> {
        secrets_of(spec).into_iter().collect()
    }

    #[test]
    fn finds_every_reference_form() {
        let mut app = container("app");
        app.env = Some(vec![
            env_secret("by-env", None),
            EnvVar {
                name: "PLAIN".to_owned(),
                value: Some("by-value".to_owned()),
                ..EnvVar::default()
            },
        ]);
        app.env_from = Some(vec![env_from("by-env-from")]);
        let spec = PodSpec {
            containers: vec![app],
            volumes: Some(vec![
                Volume {
                    name: "v".to_owned(),
                    secret: Some(SecretVolumeSource {
                        secret_name: Some("by-volume".to_owned()),
                        ..SecretVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "p".to_owned(),
                    projected: Some(ProjectedVolumeSource {
                        sources: Some(vec![
                            VolumeProjection {
                                secret: Some(SecretProjection {
                                    name: "by-projection".to_owned(),
                                    ..SecretProjection::default()
                                }),
                                ..VolumeProjection::default()
                            },
                            VolumeProjection::default(),
                        ]),
                        ..ProjectedVolumeSource::default()
                    }),
                    ..Volume::default()
                },
                Volume {
                    name: "empty".to_owned(),
                    ..Volume::default()
                },
            ]),
            ..PodSpec::default()
        };
        assert_eq!(
            names(&spec),
            ["by-env", "by-env-from", "by-projection", "by-volume"]
        );
    }

    #[test]
    fn init_and_ephemeral_containers_and_optional_references_count() {
        let mut init = container("init");
        init.env = Some(vec![env_secret("init-env", Some(true))]);
        let spec = PodSpec {
            containers: vec![container("app")],
            init_containers: Some(vec![init]),
            ephemeral_containers: Some(vec![EphemeralContainer {
                name: "debug".to_owned(),
                env_from: Some(vec![env_from("debug-env-from")]),
                ..EphemeralContainer::default()
            }]),
            ..PodSpec::default()
        };
        assert_eq!(names(&spec), ["debug-env-from", "init-env"]);
    }

    #[test]
    fn other_sources_and_empty_names_are_not_secrets() {
        let mut app = container("app");
        app.env = Some(vec![EnvVar {
            name: "FROM_CONFIG".to_owned(),
            value_from: Some(EnvVarSource::default()),
            ..EnvVar::default()
        }]);
        app.env_from = Some(vec![EnvFromSource::default(), env_from("")]);
        let spec = PodSpec {
            containers: vec![app],
            volumes: Some(vec![Volume {
                name: "unnamed".to_owned(),
                secret: Some(SecretVolumeSource::default()),
                ..Volume::default()
            }]),
            ..PodSpec::default()
        };
        assert!(secrets_of(&spec).is_empty());
        assert!(secrets_of(&PodSpec::default()).is_empty());
    }

    fn deployment(generation: i64, status: DeploymentStatus) -> Deployment {
        Deployment {
            metadata: ObjectMeta {
                generation: Some(generation),
                ..ObjectMeta::default()
            },
            spec: Some(DeploymentSpec {
                replicas: Some(2),
                ..DeploymentSpec::default()
            }),
            status: Some(status),
        }
    }

    #[test]
    fn deployment_progress_follows_kubectl() {
        let done = DeploymentStatus {
            observed_generation: Some(3),
            replicas: Some(2),
            updated_replicas: Some(2),
            available_replicas: Some(2),
            ..DeploymentStatus::default()
        };
        assert_eq!(deployment(3, done.clone()).progress(), Progress::Complete);
        // The patch not yet observed.
        assert_eq!(deployment(4, done.clone()).progress(), Progress::Waiting);
        // Old pods still around, new ones not available.
        let old_left = DeploymentStatus {
            replicas: Some(3),
            ..done.clone()
        };
        assert_eq!(deployment(3, old_left).progress(), Progress::Waiting);
        let unavailable = DeploymentStatus {
            available_replicas: Some(1),
            ..done.clone()
        };
        assert_eq!(deployment(3, unavailable).progress(), Progress::Waiting);
        let stuck = DeploymentStatus {
            updated_replicas: Some(1),
            conditions: Some(vec![DeploymentCondition {
                type_: "Progressing".to_owned(),
                status: "False".to_owned(),
                reason: Some("ProgressDeadlineExceeded".to_owned()),
                ..DeploymentCondition::default()
            }]),
            ..done
        };
        assert_eq!(deployment(3, stuck).progress(), Progress::Failed);
        let mut fresh = deployment(1, DeploymentStatus::default());
        fresh.status = None;
        assert_eq!(fresh.progress(), Progress::Waiting);
    }

    #[test]
    fn statefulset_progress_follows_kubectl() {
        let set = |strategy: StatefulSetUpdateStrategy, status: StatefulSetStatus| StatefulSet {
            metadata: ObjectMeta {
                generation: Some(2),
                ..ObjectMeta::default()
            },
            spec: Some(StatefulSetSpec {
                replicas: Some(3),
                update_strategy: Some(strategy),
                ..StatefulSetSpec::default()
            }),
            status: Some(status),
        };
        let rolling = |partition| StatefulSetUpdateStrategy {
            type_: Some("RollingUpdate".to_owned()),
            rolling_update: Some(RollingUpdateStatefulSetStrategy {
                partition: Some(partition),
                ..RollingUpdateStatefulSetStrategy::default()
            }),
        };
        let status = |observed, ready, updated| StatefulSetStatus {
            observed_generation: Some(observed),
            replicas: 3,
            ready_replicas: Some(ready),
            updated_replicas: Some(updated),
            ..StatefulSetStatus::default()
        };
        assert_eq!(
            set(rolling(0), status(2, 3, 3)).progress(),
            Progress::Complete
        );
        assert_eq!(
            set(rolling(0), status(1, 3, 3)).progress(),
            Progress::Waiting
        );
        assert_eq!(
            set(rolling(0), status(2, 2, 3)).progress(),
            Progress::Waiting
        );
        assert_eq!(
            set(rolling(0), status(2, 3, 2)).progress(),
            Progress::Waiting
        );
        // A partition holds back the first ordinals on purpose.
        assert_eq!(
            set(rolling(1), status(2, 3, 2)).progress(),
            Progress::Complete
        );
        let on_delete = StatefulSetUpdateStrategy {
            type_: Some("OnDelete".to_owned()),
            rolling_update: None,
        };
        assert_eq!(
            set(on_delete, status(0, 0, 0)).progress(),
            Progress::Complete
        );
        let revisions = |current: &str| StatefulSetStatus {
            current_revision: Some(current.to_owned()),
            update_revision: Some("b".to_owned()),
            ..status(2, 3, 3)
        };
        let bare = StatefulSetUpdateStrategy::default();
        assert_eq!(
            set(bare.clone(), revisions("a")).progress(),
            Progress::Waiting
        );
        assert_eq!(set(bare, revisions("b")).progress(), Progress::Complete);
    }

    #[test]
    fn daemonset_progress_follows_kubectl() {
        let set = |strategy: &str, observed, updated, available| DaemonSet {
            metadata: ObjectMeta {
                generation: Some(5),
                ..ObjectMeta::default()
            },
            spec: Some(DaemonSetSpec {
                update_strategy: Some(DaemonSetUpdateStrategy {
                    type_: Some(strategy.to_owned()),
                    rolling_update: None,
                }),
                ..DaemonSetSpec::default()
            }),
            status: Some(DaemonSetStatus {
                observed_generation: Some(observed),
                desired_number_scheduled: 4,
                updated_number_scheduled: Some(updated),
                number_available: Some(available),
                ..DaemonSetStatus::default()
            }),
        };
        assert_eq!(set("RollingUpdate", 5, 4, 4).progress(), Progress::Complete);
        assert_eq!(set("RollingUpdate", 4, 4, 4).progress(), Progress::Waiting);
        assert_eq!(set("RollingUpdate", 5, 3, 4).progress(), Progress::Waiting);
        assert_eq!(set("RollingUpdate", 5, 4, 3).progress(), Progress::Waiting);
        assert_eq!(set("OnDelete", 4, 0, 0).progress(), Progress::Complete);
    }

    fn workload(name: &str) -> Workload {
        Workload {
            kind: WorkloadKind::Deployment,
            namespace: "ns".to_owned(),
            name: name.to_owned(),
        }
    }

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

    #[test]
    fn workloads_serialize_with_kind_names() {
        let w = Workload {
            kind: WorkloadKind::StatefulSet,
            ..workload("db")
        };
        assert_eq!(
            serde_json::to_value(&w).unwrap(),
            serde_json::json!({"kind": "StatefulSet", "namespace": "ns", "name": "db"})
        );
        assert_eq!(w.to_string(), "StatefulSet ns/db");
    }
}

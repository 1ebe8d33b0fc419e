//! Rolling the workloads that consume a Secret: which Deployments, StatefulSets and
//! DaemonSets consume it ([`Restarter::consumers`]), a rollout by setting the pod-template
//! annotation [`RESTARTED_FOR_ANNOTATION`] (idempotent: a value the template already has
//! rolls nothing) and at most `--max-concurrent-restarts` rollouts at once
//! ([`Restarter::roll`]). A Rotation rolls the consumers of the Secrets it refreshed
//! through it, and so does the reload opt-in ([`reload`]). Nothing here formats or
//! keeps a Secret's data.

use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{PodSpec, PodTemplateSpec};
use kube::api::{ListParams, Patch, PatchParams};
use kube::runtime::wait::await_condition;
use kube::{Api, Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sigil_types::RESTARTED_FOR_ANNOTATION;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::common::error::{Error, KubeContext, Result};
use crate::common::metrics::{Metrics, RolloutLabel};

mod reload;

pub use reload::reload;

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
pub enum Progress {
    /// Pods of the current template are still being replaced or becoming available.
    Waiting,
    /// Every replica runs the current template and is available.
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

    /// How far `workload`'s current rollout is; `None` when it is gone.
    pub async fn progress(&self, workload: &Workload) -> Result<Option<Progress>> {
        match workload.kind {
            WorkloadKind::Deployment => self.progress_of::<Deployment>(workload).await,
            WorkloadKind::StatefulSet => self.progress_of::<StatefulSet>(workload).await,
            WorkloadKind::DaemonSet => self.progress_of::<DaemonSet>(workload).await,
        }
    }

    async fn progress_of<K: Kind>(&self, workload: &Workload) -> Result<Option<Progress>> {
        let api: Api<K> = Api::namespaced(self.client.clone(), &workload.namespace);
        let found = api
            .get_opt(&workload.name)
            .await
            .during(|| format!("read {workload}"))?;
        Ok(found.map(|obj| obj.progress()))
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

    pub(super) fn workload(name: &str) -> Workload {
        Workload {
            kind: WorkloadKind::Deployment,
            namespace: "ns".to_owned(),
            name: name.to_owned(),
        }
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

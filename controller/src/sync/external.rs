//! ExternalSecret → Secret: read every remote key through the shared cache, assemble the
//! data (properties, `dataFrom.extract`, template), write the target Secret under its
//! creation policy, and report in status and Events. A failed read never changes the
//! Secret; only "not found" for every key, with `deletionPolicy: Delete`, removes it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;
use kube::{Resource, ResourceExt};
use sigil_providers::{Error as ProviderError, ErrorKind};
use sigil_types::{
    CreationPolicy, DeletionPolicy, ExternalSecret, ExternalSecretStatus, RefreshPolicy,
    SecretBinding, StoreKind, TemplateMergePolicy, TemplateScope, TemplateTarget,
};
use tokio::time::Instant;

use super::cache::{CacheKey, Fetch};
use super::find::{FindError, FindKey};
use super::stores::{StoreObject, StoreProblem, StoreRef};
use super::values::{self, Data, ValueError};
use super::{Held, Scheduled, SyncContext};
use crate::common::backoff::ObjectKey;
use crate::common::error::{Error, KubeContext as _, Result};
use crate::common::metrics::SyncLabel;
use crate::common::secret_watch::SecretVersion;
use crate::common::secret_writer::{Claim, Mode, Refusal, Written};
use crate::common::status::{self, Health};

use sigil_types::{EXTERNAL_SECRET_LABEL, FORCE_SYNC_ANNOTATION, OWNED_BY_ANNOTATION};
/// The field manager prefix of `Merge` writes; the ExternalSecret's UID follows.
const MERGE_MANAGER_PREFIX: &str = "sigil-controller/es/";
/// How often a Secret that is in the way is looked at again.
const NOT_OWNED_POLL: Duration = Duration::from_secs(10);
/// How long failures of a sync-once ExternalSecret wait at most between retries.
const ONCE_RETRY_CAP: Duration = Duration::from_secs(3600);

/// Why an ExternalSecret is or is not synced: the `Ready` condition's reason, the Event
/// reason and the `sigil_sync_total` label, from one fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SyncReason {
    /// The Secret holds the remote values.
    SecretSynced,
    /// The provider did not answer, timed out or throttled.
    ProviderUnavailable,
    /// The provider refused the store's credentials.
    AuthFailed,
    /// A remote key (or the version asked for) does not exist.
    RemoteKeyNotFound,
    /// A `property`, or a key a template uses, does not exist.
    PropertyNotFound,
    /// The store is missing or misconfigured, or its credentials are missing.
    StoreNotReady,
    /// The ClusterSecretStore's `conditions` exclude this namespace.
    StoreNotAllowed,
    /// The target Secret exists and does not belong to this ExternalSecret.
    SecretNotOwned,
    /// Another ExternalSecret claims the target Secret (or the keys to merge).
    Conflict,
    /// The spec cannot be carried out as written (template syntax, a version that is
    /// not a version, a Secret the API server refuses).
    InvalidSpec,
}

impl SyncReason {
    /// The CamelCase name.
    pub fn as_str(self) -> &'static str {
        match self {
            SyncReason::SecretSynced => "SecretSynced",
            SyncReason::ProviderUnavailable => "ProviderUnavailable",
            SyncReason::AuthFailed => "AuthFailed",
            SyncReason::RemoteKeyNotFound => "RemoteKeyNotFound",
            SyncReason::PropertyNotFound => "PropertyNotFound",
            SyncReason::StoreNotReady => "StoreNotReady",
            SyncReason::StoreNotAllowed => "StoreNotAllowed",
            SyncReason::SecretNotOwned => "SecretNotOwned",
            SyncReason::Conflict => "Conflict",
            SyncReason::InvalidSpec => "InvalidSpec",
        }
    }

    /// Every reason, for gauges that report each of them.
    pub const ALL: [SyncReason; 10] = [
        SyncReason::SecretSynced,
        SyncReason::ProviderUnavailable,
        SyncReason::AuthFailed,
        SyncReason::RemoteKeyNotFound,
        SyncReason::PropertyNotFound,
        SyncReason::StoreNotReady,
        SyncReason::StoreNotAllowed,
        SyncReason::SecretNotOwned,
        SyncReason::Conflict,
        SyncReason::InvalidSpec,
    ];

    fn of_provider(err: &ProviderError) -> Self {
        match err.kind() {
            // A read meets a conflict only if it raced a write; it is worth retrying.
            ErrorKind::Unavailable | ErrorKind::Throttled | ErrorKind::Conflict => {
                SyncReason::ProviderUnavailable
            }
            ErrorKind::AuthFailed => SyncReason::AuthFailed,
            ErrorKind::NotFound => SyncReason::RemoteKeyNotFound,
            ErrorKind::InvalidConfig => SyncReason::InvalidSpec,
        }
    }

    fn of_store(problem: &StoreProblem) -> Self {
        match problem {
            StoreProblem::Config(_) => SyncReason::StoreNotReady,
            StoreProblem::Auth(_) => SyncReason::AuthFailed,
            StoreProblem::Unavailable(_) => SyncReason::ProviderUnavailable,
        }
    }
}

/// A failed sync: why, and what to do about it.
pub(crate) struct Failure {
    reason: SyncReason,
    pub(crate) message: String,
    /// [`Health::Failed`], but [`Health::Progressing`] while the sync waits for an object
    /// that GitOps may apply a moment later (its store).
    health: Health,
}

impl Failure {
    fn new(reason: SyncReason, message: impl Into<String>) -> Self {
        Self {
            reason,
            message: message.into(),
            health: Health::Failed,
        }
    }

    /// A sync that waits for something not there yet (`Reconciling`, not `Stalled`).
    fn waiting(reason: SyncReason, message: impl Into<String>) -> Self {
        Self {
            health: Health::Progressing,
            ..Self::new(reason, message)
        }
    }
}

impl From<ValueError> for Failure {
    fn from(err: ValueError) -> Self {
        match err {
            ValueError::PropertyNotFound(m) => Failure::new(SyncReason::PropertyNotFound, m),
            ValueError::Template(m) | ValueError::Keys(m) => {
                Failure::new(SyncReason::InvalidSpec, m)
            }
        }
    }
}

/// A successful sync.
struct Synced {
    wrote: bool,
    deleted: bool,
    /// A `CreatedOnce` first sync took over an earlier ExternalSecret's Secret as it was.
    adopted: bool,
    versions: BTreeMap<String, String>,
    /// The Secret's resourceVersion once it held what was written.
    secret_version: Option<SecretVersion>,
    /// When each remote value used was read.
    held: Held,
}

/// Everything about one ExternalSecret that the reconcile needs.
struct Job<'a> {
    obj: &'a ExternalSecret,
    namespace: String,
    target: String,
    interval: Option<Duration>,
}

/// Reconciles one ExternalSecret.
#[tracing::instrument(skip(obj, ctx), fields(namespace = obj.namespace().as_deref().unwrap_or(""), name = %obj.name_any()))]
pub async fn reconcile(obj: Arc<ExternalSecret>, ctx: Arc<SyncContext>) -> Result<Action> {
    let key = object_key(&obj);
    let _refreshing = ctx.refreshing(&key).await;
    let force = obj.annotations().get(FORCE_SYNC_ANNOTATION).cloned();
    let policy = obj.spec.refresh_policy_or_default();
    let interval = match obj.spec.refresh_interval_duration() {
        // Only Periodic reads again on its own.
        Ok(interval) if policy == RefreshPolicy::Periodic => interval,
        Ok(_) => None,
        Err(message) => {
            let failure = Failure::new(SyncReason::InvalidSpec, message);
            return finish_failed(&obj, &ctx, key, None, failure).await;
        }
    };
    let job = Job {
        obj: &obj,
        namespace: obj.namespace().unwrap_or_default(),
        target: obj.target_name(),
        interval,
    };
    let forced = ctx.take_forced(&key);
    if forced.is_none()
        && let Some(wait) = ctx.not_due(&key, &obj, force.as_deref(), &job)
    {
        return Ok(Action::requeue(wait));
    }
    // A Rotation's refresh (`forced`) reaches every mirror, whatever its policy.
    if forced.is_none() && ctx.synced_for_good(&obj, policy, force.as_deref(), &job) {
        return Ok(Action::await_change());
    }
    let previous = ctx.schedule_of(&key);
    let bypass = previous.as_ref().is_some_and(|s| s.force != force);
    let held = previous.as_ref().map(|s| &s.held);
    let refreshed_at = Instant::now();
    match sync(&job, &ctx, held, forced, bypass).await? {
        Ok(synced) => {
            let next = next_refresh(refreshed_at, interval);
            ctx.schedule(
                key.clone(),
                Scheduled {
                    generation: obj.metadata.generation,
                    force,
                    held: synced.held.clone(),
                    next_due: next,
                    secret_version: synced.secret_version,
                    deleted: synced.deleted,
                },
            );
            record_synced(&obj, &ctx, &job, &synced).await?;
            ctx.backoff.succeeded(&key);
            count(&ctx, SyncReason::SecretSynced);
            Ok(match next {
                Some(at) => Action::requeue(at.saturating_duration_since(Instant::now())),
                None => Action::await_change(),
            })
        }
        Err(failure) => finish_failed(&obj, &ctx, key, interval, failure).await,
    }
}

async fn finish_failed(
    obj: &ExternalSecret,
    ctx: &SyncContext,
    key: ObjectKey,
    interval: Option<Duration>,
    failure: Failure,
) -> Result<Action> {
    ctx.forget_schedule(&key);
    record_failed(obj, ctx, &failure).await?;
    count(ctx, failure.reason);
    tracing::warn!(reason = failure.reason.as_str(), message = %failure.message, "not synced");
    let mut delay = ctx.backoff.failed(key, interval.unwrap_or(ONCE_RETRY_CAP));
    if failure.reason == SyncReason::SecretNotOwned {
        // The Secret in the way carries no label the controller watches, so its opt-in
        // (or creation, for Merge) is polled for.
        delay = delay.min(NOT_OWNED_POLL);
    }
    Ok(Action::requeue(delay))
}

fn count(ctx: &SyncContext, reason: SyncReason) {
    ctx.metrics
        .sync_total
        .get_or_create(&SyncLabel {
            result: reason.as_str(),
        })
        .inc();
}

/// When to refresh next: the interval ±10% after this refresh, so that objects created
/// together drift apart instead of firing together forever.
fn next_refresh(refreshed_at: Instant, interval: Option<Duration>) -> Option<Instant> {
    let interval = interval?;
    let jitter = rand::random_range(0.9..=1.1);
    Some(refreshed_at + interval.mul_f64(jitter))
}

pub(crate) fn object_key(obj: &ExternalSecret) -> ObjectKey {
    (
        "ExternalSecret",
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
    )
}

impl SyncContext {
    fn api_of(&self, obj: &ExternalSecret) -> kube::Api<ExternalSecret> {
        kube::Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default())
    }

    /// Whether an `OnChange` or `CreatedOnce` ExternalSecret has nothing to read: its
    /// status says it synced this generation and force-sync value (OnChange; and the
    /// Secret is there, as after a restart), or that it ever synced (CreatedOnce: later
    /// changes, hand edits of the Secret included, are left as they are).
    fn synced_for_good(
        &self,
        obj: &ExternalSecret,
        policy: RefreshPolicy,
        force: Option<&str>,
        job: &Job<'_>,
    ) -> bool {
        let synced = obj
            .status
            .as_ref()
            .and_then(|s| s.synced_resource_version.as_deref());
        match policy {
            RefreshPolicy::Periodic => false,
            RefreshPolicy::CreatedOnce => synced.is_some(),
            RefreshPolicy::OnChange => {
                synced == Some(synced_resource_version(obj, force).as_str())
                    && self.secrets.seen(&job.namespace, &job.target).is_some()
            }
        }
    }

    /// How long to wait when nothing asks for a refresh yet: same generation, same
    /// force-sync value, not due, and the Secret still holds what was written.
    fn not_due(
        &self,
        key: &ObjectKey,
        obj: &ExternalSecret,
        force: Option<&str>,
        job: &Job<'_>,
    ) -> Option<Duration> {
        let scheduled = self.schedule_of(key)?;
        if scheduled.generation != obj.metadata.generation || scheduled.force.as_deref() != force {
            return None;
        }
        let wait = match scheduled.next_due {
            Some(at) => at.checked_duration_since(Instant::now())?,
            None => Duration::MAX,
        };
        let seen = self.secrets.seen(&job.namespace, &job.target);
        let intact = if scheduled.deleted {
            seen.is_none()
        } else {
            seen.is_some() && seen == scheduled.secret_version
        };
        intact.then(|| wait.min(Duration::from_secs(86_400 * 30)))
    }
}

/// Reads, assembles and writes; `Ok(Err(..))` is a failure to report, `Err` an API
/// error to retry.
async fn sync(
    job: &Job<'_>,
    ctx: &Arc<SyncContext>,
    held: Option<&Held>,
    read_after: Option<Instant>,
    bypass: bool,
) -> Result<Result<Synced, Failure>> {
    if let Some(adopted) = adopt_created_once(job, ctx).await? {
        return Ok(Ok(adopted));
    }
    let store = match resolve_store(job.obj, &job.namespace, ctx).await? {
        Ok(store) => store,
        Err(failure) => return Ok(Err(failure)),
    };
    let (identity, session) = match ctx.stores.session(&store).await {
        Ok(built) => built,
        Err(problem) => {
            return Ok(Err(Failure::new(
                SyncReason::of_store(&problem),
                problem.message().to_owned(),
            )));
        }
    };
    let spec = &job.obj.spec;
    if spec.data.is_empty() && spec.data_from.is_empty() {
        return Ok(Err(Failure::new(
            SyncReason::InvalidSpec,
            "spec.data and spec.dataFrom are both empty: list the remote keys to copy",
        )));
    }
    let found = match find_keys(job, ctx, &store, &identity, &session, read_after, bypass).await {
        Ok(found) => found,
        Err(failure) => return Ok(Err(failure)),
    };
    let named: BTreeSet<(String, Option<String>)> = spec
        .data
        .iter()
        .map(|d| (d.remote_ref.key.clone(), d.remote_ref.version.clone()))
        .chain(
            spec.data_from
                .iter()
                .filter_map(|d| d.extract.as_ref())
                .map(|e| (e.key.clone(), e.version.clone())),
        )
        .collect();
    let wanted: BTreeSet<(String, Option<String>)> = named
        .iter()
        .cloned()
        .chain(
            found
                .values()
                .flat_map(|keys| keys.iter().map(|k| (k.clone(), None))),
        )
        .collect();
    let pinned = ctx.pinned_at_base(&store).await;
    let reads = futures::future::join_all(wanted.iter().map(|(key, version)| {
        let cache_key = CacheKey {
            store: identity.clone(),
            key: key.clone(),
            version: version.clone().or_else(|| pinned.get(key).cloned()),
        };
        let held_at = held
            .and_then(|h| h.get(&(key.clone(), version.clone())).copied())
            .max(read_after);
        ctx.cache
            .read(&session, cache_key, job.interval, held_at, bypass)
    }))
    .await;
    let mut now_held = Held::new();
    let mut results: BTreeMap<(String, Option<String>), Fetch> = BTreeMap::new();
    for (wanted, (result, at)) in wanted.into_iter().zip(reads) {
        now_held.insert(wanted.clone(), at);
        results.insert(wanted, result);
    }

    // A key a find listed that is gone by the time it is read is no longer found.
    results.retain(|wanted, r| {
        named.contains(wanted) || !r.as_ref().is_err_and(|e| e.kind() == ErrorKind::NotFound)
    });
    let errors: Vec<&Arc<ProviderError>> =
        results.values().filter_map(|r| r.as_ref().err()).collect();
    if !errors.is_empty() {
        if errors.iter().any(|e| e.kind() == ErrorKind::AuthFailed) {
            ctx.stores.forget_if(&store.store, &identity);
        }
        let all_missing =
            errors.len() == results.len() && errors.iter().all(|e| e.kind() == ErrorKind::NotFound);
        if all_missing && job.obj.deletion_policy() == DeletionPolicy::Delete {
            let removed = ctx
                .writer()
                .remove(&job.namespace, &job.target, &claim_of(job.obj))
                .await?;
            return Ok(Ok(Synced {
                wrote: removed,
                deleted: true,
                adopted: false,
                versions: BTreeMap::new(),
                secret_version: None,
                held: now_held,
            }));
        }
        // The most actionable failure first: credentials, then outages, then what is missing.
        let worst = errors
            .iter()
            .min_by_key(|e| match e.kind() {
                ErrorKind::AuthFailed => 0,
                ErrorKind::Unavailable | ErrorKind::Throttled => 1,
                ErrorKind::InvalidConfig => 2,
                _ => 3,
            })
            .expect("errors is not empty");
        let message = format!(
            "{} of {} remote reads through {} failed; the Secret was left as it was. {}",
            errors.len(),
            results.len(),
            store.store,
            errors
                .iter()
                .take(3)
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join(" | ")
        );
        return Ok(Err(Failure::new(SyncReason::of_provider(worst), message)));
    }

    let sources = match template_sources(job, ctx).await? {
        Ok(sources) => sources,
        Err(failure) => return Ok(Err(failure)),
    };
    let rendered = match assemble(job, &results, &found, &sources) {
        Ok(data) => data,
        Err(failure) => return Ok(Err(failure)),
    };
    let versions = results
        .iter()
        .filter_map(|((key, version), r)| {
            let value = r.as_ref().ok()?;
            let name = match version {
                Some(v) => format!("{key}@{v}"),
                None => key.clone(),
            };
            Some((name, value.version().to_owned()))
        })
        .collect();
    let desired = desired_secret(job, &rendered);
    let claim = claim_of(job.obj);
    let (wrote, secret_version) = match ctx.writer().write(&desired, &claim).await? {
        Written::Unchanged(version) => (false, version),
        Written::Changed(version) => (true, version),
        Written::Refused(refusal) => {
            let (reason, message) = match refusal {
                Refusal::NotOwned(m) | Refusal::Missing(m) => (SyncReason::SecretNotOwned, m),
                Refusal::Conflict(m) => (SyncReason::Conflict, m),
                Refusal::Rejected(m) => (SyncReason::InvalidSpec, m),
            };
            return Ok(Err(Failure::new(reason, message)));
        }
    };
    Ok(Ok(Synced {
        wrote,
        deleted: false,
        adopted: false,
        versions,
        secret_version,
        held: now_held,
    }))
}

/// A `CreatedOnce` ExternalSecret's first sync, when its target Secret was written by
/// an earlier ExternalSecret of this name that no longer exists (deleted and applied
/// again, e.g. by GitOps): the Secret is adopted as it is, its claim moved to this
/// object, and neither the store is read nor the data written (ESO#6640 overwrote it).
async fn adopt_created_once(job: &Job<'_>, ctx: &SyncContext) -> Result<Option<Synced>> {
    let obj = job.obj;
    let first = obj
        .status
        .as_ref()
        .is_none_or(|s| s.synced_resource_version.is_none());
    if obj.spec.refresh_policy_or_default() != RefreshPolicy::CreatedOnce || !first {
        return Ok(None);
    }
    let api: kube::Api<Secret> = kube::Api::namespaced(ctx.client.clone(), &job.namespace);
    let Some(existing) = api
        .get_opt(&job.target)
        .await
        .during(|| format!("read Secret {}/{}", job.namespace, job.target))?
    else {
        return Ok(None);
    };
    let uid = obj.metadata.uid.clone().unwrap_or_default();
    let Some(earlier) = existing
        .annotations()
        .get(OWNED_BY_ANNOTATION)
        .filter(|_| {
            existing
                .labels()
                .get(EXTERNAL_SECRET_LABEL)
                .is_some_and(|v| v == "true")
        })
        .cloned()
    else {
        return Ok(None);
    };
    let alive = ctx
        .externals
        .state()
        .iter()
        .any(|es| es.metadata.uid.as_deref() == Some(earlier.as_str()));
    if earlier == uid || alive {
        return Ok(None);
    }
    let mut owners: Vec<_> = existing
        .owner_references()
        .iter()
        .filter(|r| r.uid != earlier)
        .cloned()
        .collect();
    if obj.creation_policy() == CreationPolicy::Owner {
        owners.extend(obj.controller_owner_ref(&()));
    }
    let patch = serde_json::json!({"metadata": {
        "annotations": {OWNED_BY_ANNOTATION: uid},
        "ownerReferences": owners,
        "resourceVersion": existing.resource_version(),
    }});
    api.patch(
        &job.target,
        &kube::api::PatchParams::default(),
        &kube::api::Patch::Merge(patch),
    )
    .await
    .during(|| format!("adopt Secret {}/{}", job.namespace, job.target))?;
    Ok(Some(Synced {
        wrote: false,
        deleted: false,
        adopted: true,
        versions: BTreeMap::new(),
        secret_version: None,
        held: Held::new(),
    }))
}

/// The store `obj` (in `namespace`) reads through, if it exists and may serve it.
pub(crate) async fn resolve_store(
    obj: &ExternalSecret,
    namespace: &str,
    ctx: &SyncContext,
) -> Result<Result<StoreObject, Failure>> {
    let reference = &obj.spec.secret_store_ref;
    let kind = reference.kind_or_default();
    let store_ref = StoreRef {
        kind,
        namespace: match kind {
            StoreKind::ClusterSecretStore => String::new(),
            _ => namespace.to_owned(),
        },
        name: reference.name.clone(),
    };
    let found: Option<StoreObject> = match (kind, &ctx.cluster_stores) {
        (StoreKind::ClusterSecretStore, None) => {
            return Ok(Err(Failure::new(
                SyncReason::StoreNotReady,
                format!(
                    "{store_ref}: this controller does not serve ClusterSecretStores (it runs for one namespace, --cluster-secret-stores=false); use a SecretStore in namespace {}",
                    namespace
                ),
            )));
        }
        (StoreKind::ClusterSecretStore, Some(cluster_stores)) => cluster_stores
            .get(&ObjectRef::new(&reference.name))
            .map(|s| s.as_ref().into()),
        (_, _) => ctx
            .secret_stores
            .get(&ObjectRef::new(&reference.name).within(namespace))
            .map(|s| s.as_ref().into()),
    };
    // A store applied together with its ExternalSecret may reach this cache a moment
    // later (its watch then syncs again): in progress, not failed. A typo in the
    // reference stays in progress until a GitOps tool's timeout, with this message.
    let Some(store) = found else {
        return Ok(Err(Failure::waiting(
            SyncReason::StoreNotReady,
            format!(
                "{store_ref} does not exist; create it, or fix spec.secretStoreRef (kind {})",
                kind.as_str()
            ),
        )));
    };
    if kind == StoreKind::ClusterSecretStore
        && !ctx.stores.allows(&store.spec.conditions, namespace).await?
    {
        return Ok(Err(Failure::new(
            SyncReason::StoreNotAllowed,
            format!(
                "{store_ref} does not serve namespace {} (its spec.conditions exclude it); nothing was read. Ask its owner to add the namespace, or use another store",
                namespace
            ),
        )));
    }
    Ok(Ok(store))
}

/// The keys each `dataFrom[].find` matches, by entry index, listed through the shared
/// find cache (a forced refresh lists again).
async fn find_keys(
    job: &Job<'_>,
    ctx: &SyncContext,
    store: &StoreObject,
    identity: &Arc<str>,
    session: &sigil_providers::Session,
    read_after: Option<Instant>,
    bypass: bool,
) -> Result<BTreeMap<usize, Arc<Vec<String>>>, Failure> {
    let limit = ctx.config.max_keys_per_find;
    let mut found = BTreeMap::new();
    for (i, from) in job.obj.spec.data_from.iter().enumerate() {
        let Some(find) = &from.find else { continue };
        let since = if bypass {
            Instant::now()
        } else {
            read_after.unwrap_or_else(|| {
                let window = job.interval.map_or(Duration::from_secs(10), |i| i / 2);
                Instant::now()
                    .checked_sub(window)
                    .unwrap_or_else(Instant::now)
            })
        };
        let key = FindKey::new(identity.clone(), find);
        match ctx.finds.keys(session, key, since, limit).await {
            Ok(listing) if listing.keys.len() > limit => {
                return Err(Failure::new(
                    SyncReason::InvalidSpec,
                    format!(
                        "dataFrom[{i}].find matches more than {limit} remote keys through {}; nothing was written. Narrow its path, name or tags, or raise the controller's --max-keys-per-find",
                        store.store
                    ),
                ));
            }
            Ok(listing) => {
                found.insert(i, listing.keys);
            }
            Err(FindError::Regexp(message)) => {
                return Err(Failure::new(
                    SyncReason::InvalidSpec,
                    format!("dataFrom[{i}]: {message}"),
                ));
            }
            Err(FindError::Provider(err)) => {
                return Err(Failure::new(
                    SyncReason::of_provider(&err),
                    format!("dataFrom[{i}].find through {}: {err}", store.store),
                ));
            }
        }
    }
    Ok(found)
}

/// One template of `templateFrom`, with where its output goes.
struct TemplateText {
    /// How errors name it, e.g. `templateFrom[0].configMap tpl key url`.
    what: String,
    /// The Secret key (or label, annotation) of a `Values` template.
    key: String,
    text: String,
    scope: TemplateScope,
    target: TemplateTarget,
}

/// The texts of `templateFrom`, each entry's ConfigMap items, then Secret items, then
/// literal, read from the ExternalSecret's own namespace only.
async fn template_sources(
    job: &Job<'_>,
    ctx: &SyncContext,
) -> Result<Result<Vec<TemplateText>, Failure>> {
    use k8s_openapi::api::core::v1::ConfigMap;
    let Some(template) = job
        .obj
        .spec
        .target
        .as_ref()
        .and_then(|t| t.template.as_ref())
    else {
        return Ok(Ok(Vec::new()));
    };
    let mut texts = Vec::new();
    for (i, from) in template.template_from.iter().enumerate() {
        let target = from.target.unwrap_or_default();
        for (kind, source) in [("configMap", &from.config_map), ("secret", &from.secret)] {
            let Some(source) = source else { continue };
            let held: Option<BTreeMap<String, Vec<u8>>> = if kind == "configMap" {
                let api: kube::Api<ConfigMap> =
                    kube::Api::namespaced(ctx.client.clone(), &job.namespace);
                api.get_opt(&source.name)
                    .await
                    .during(|| format!("read ConfigMap {}/{}", job.namespace, source.name))?
                    .map(|cm| {
                        cm.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.into_bytes()))
                            .collect()
                    })
            } else {
                let api: kube::Api<Secret> =
                    kube::Api::namespaced(ctx.client.clone(), &job.namespace);
                api.get_opt(&source.name)
                    .await
                    .during(|| format!("read Secret {}/{}", job.namespace, source.name))?
                    .map(|s| {
                        s.data
                            .unwrap_or_default()
                            .into_iter()
                            .map(|(k, v)| (k, v.0))
                            .collect()
                    })
            };
            let Some(held) = held else {
                return Ok(Err(Failure::new(
                    SyncReason::InvalidSpec,
                    format!(
                        "templateFrom[{i}].{kind} `{}` does not exist in namespace {}; create it there (templates are read from the ExternalSecret's own namespace)",
                        source.name, job.namespace
                    ),
                )));
            };
            for item in &source.items {
                let what = format!("templateFrom[{i}].{kind} {} key {}", source.name, item.key);
                let Some(text) = held.get(&item.key) else {
                    return Ok(Err(Failure::new(
                        SyncReason::InvalidSpec,
                        format!("{what}: no such key; add it, or fix items[].key"),
                    )));
                };
                let Ok(text) = String::from_utf8(text.clone()) else {
                    return Ok(Err(Failure::new(
                        SyncReason::InvalidSpec,
                        format!("{what}: not UTF-8 text"),
                    )));
                };
                texts.push(TemplateText {
                    what,
                    key: item.key.clone(),
                    text,
                    scope: item.template_as.unwrap_or_default(),
                    target,
                });
            }
        }
        if let Some(literal) = &from.literal {
            texts.push(TemplateText {
                what: format!("templateFrom[{i}].literal"),
                key: String::new(),
                text: literal.clone(),
                scope: TemplateScope::KeysAndValues,
                target,
            });
        }
    }
    Ok(Ok(texts))
}

/// What the templates made: the Secret's data, and labels and annotations for it.
#[derive(Default)]
struct Rendered {
    data: Data,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
}

/// The Secret's data: `dataFrom` first, each entry's keys rewritten, converted and
/// decoded, then `data[]` (which wins on equal keys). With templates (`templateFrom`,
/// then `template.data`, which wins), only their keys, unless `mergePolicy: Merge`
/// keeps the values read beside them.
fn assemble(
    job: &Job<'_>,
    results: &BTreeMap<(String, Option<String>), Fetch>,
    found: &BTreeMap<usize, Arc<Vec<String>>>,
    sources: &[TemplateText],
) -> Result<Rendered, Failure> {
    let value_of = |key: &str, version: &Option<String>| {
        results
            .get(&(key.to_owned(), version.clone()))
            .and_then(|r| r.as_ref().ok())
    };
    let read = |key: &str, version: &Option<String>| {
        value_of(key, version).expect("every named remote key was read successfully")
    };
    let spec = &job.obj.spec;
    let mut data = Data::new();
    for (i, from) in spec.data_from.iter().enumerate() {
        let (raw, conversion, decoding) = if let Some(extract) = &from.extract {
            let value = read(&extract.key, &extract.version);
            let raw = values::extract(&extract.key, value.bytes(), extract.property.as_deref())?;
            (raw, extract.conversion_strategy, extract.decoding_strategy)
        } else if let Some(find) = &from.find {
            let raw: Data = found
                .get(&i)
                .iter()
                .flat_map(|keys| keys.iter())
                .filter_map(|key| {
                    let value = value_of(key, &None)?;
                    Some((key.clone(), zeroize::Zeroizing::new(value.bytes().to_vec())))
                })
                .collect();
            (raw, find.conversion_strategy, find.decoding_strategy)
        } else {
            continue;
        };
        let entry = format!("dataFrom[{i}]");
        data.extend(values::shape_keys(
            &entry,
            raw,
            &from.rewrite,
            conversion,
            decoding,
        )?);
    }
    for entry in &spec.data {
        let remote = &entry.remote_ref;
        let value = read(&remote.key, &remote.version);
        let value = values::property(&remote.key, value.bytes(), remote.property.as_deref())?;
        let value = values::decode(
            &format!("data[{}]", entry.secret_key),
            &entry.secret_key,
            value,
            remote.decoding_strategy.unwrap_or_default(),
        )?;
        data.insert(entry.secret_key.clone(), value);
    }
    let template = spec.target.as_ref().and_then(|t| t.template.as_ref());
    let Some(template) = template.filter(|t| !t.data.is_empty() || !sources.is_empty()) else {
        return Ok(Rendered {
            data,
            ..Rendered::default()
        });
    };
    let mut out = Rendered::default();
    if template.merge_policy.unwrap_or_default() == TemplateMergePolicy::Merge {
        out.data = data.clone();
    }
    for source in sources {
        let rendered = values::render_as(&source.what, &source.text, &data)?;
        let pairs = match source.scope {
            TemplateScope::Values => Data::from([(source.key.clone(), rendered)]),
            TemplateScope::KeysAndValues => values::keys_and_values(&source.what, &rendered)?,
        };
        for (key, value) in pairs {
            let text = || {
                String::from_utf8(value.to_vec()).map_err(|_| {
                    Failure::new(
                        SyncReason::InvalidSpec,
                        format!("{}: a label or annotation must be UTF-8 text", source.what),
                    )
                })
            };
            match source.target {
                TemplateTarget::Data => {
                    out.data.insert(key, value);
                }
                TemplateTarget::Labels => {
                    out.labels.insert(key, text()?);
                }
                TemplateTarget::Annotations => {
                    out.annotations.insert(key, text()?);
                }
            }
        }
    }
    for (key, text) in &template.data {
        out.data
            .insert(key.clone(), values::render(key, text, &data)?);
    }
    Ok(out)
}

/// `<generation>/<force-sync value>`: what a sync acted on.
fn synced_resource_version(obj: &ExternalSecret, force: Option<&str>) -> String {
    format!(
        "{}/{}",
        obj.metadata.generation.unwrap_or(0),
        force.unwrap_or("")
    )
}

fn claim_of(obj: &ExternalSecret) -> Claim<'_> {
    let uid = obj.metadata.uid.as_deref().unwrap_or_default();
    Claim {
        kind: "ExternalSecret",
        uid,
        mode: match obj.creation_policy() {
            CreationPolicy::Merge => Mode::Merge {
                manager: format!("{MERGE_MANAGER_PREFIX}{uid}"),
            },
            CreationPolicy::Owner | CreationPolicy::Orphan => Mode::Own,
        },
    }
}

fn desired_secret(job: &Job<'_>, rendered: &Rendered) -> Secret {
    let obj = job.obj;
    let data = &rendered.data;
    let target = obj.spec.target.clone().unwrap_or_default();
    let template = target.template.unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels;
    labels.extend(rendered.labels.clone());
    labels.insert(EXTERNAL_SECRET_LABEL.to_owned(), "true".to_owned());
    let mut annotations = meta.annotations;
    annotations.extend(rendered.annotations.clone());
    let policy = obj.creation_policy();
    if policy != CreationPolicy::Merge {
        annotations.insert(
            OWNED_BY_ANNOTATION.to_owned(),
            obj.metadata.uid.clone().unwrap_or_default(),
        );
    }
    let owner = (policy == CreationPolicy::Owner)
        .then(|| obj.controller_owner_ref(&()))
        .flatten();
    Secret {
        metadata: ObjectMeta {
            name: Some(job.target.clone()),
            namespace: Some(job.namespace.clone()),
            labels: Some(labels),
            annotations: (!annotations.is_empty()).then_some(annotations),
            owner_references: owner.map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: match policy {
            CreationPolicy::Merge => template.type_,
            _ => Some(template.type_.unwrap_or_else(|| "Opaque".to_owned())),
        },
        immutable: target.immutable,
        data: Some(
            data.iter()
                .map(|(k, v)| (k.clone(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// The conditions of `obj` after a sync that ended in `health` for `reason`.
fn conditions_of(
    obj: &ExternalSecret,
    health: Health,
    reason: SyncReason,
    message: &str,
) -> Vec<k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition> {
    let previous = obj
        .status
        .as_ref()
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    status::conditions(
        previous,
        obj.metadata.generation,
        health,
        reason.as_str(),
        message,
        &[],
    )
}

async fn record_synced(
    obj: &ExternalSecret,
    ctx: &SyncContext,
    job: &Job<'_>,
    synced: &Synced,
) -> Result<()> {
    let message = if synced.adopted {
        format!(
            "Secret {}/{} was written by an earlier ExternalSecret of this name; refreshPolicy CreatedOnce took it over as it is, without reading the store",
            job.namespace, job.target
        )
    } else if synced.deleted {
        format!(
            "every remote key is gone and deletionPolicy is Delete: Secret {}/{} {}",
            job.namespace,
            job.target,
            if synced.wrote {
                "was deleted"
            } else {
                "does not exist"
            }
        )
    } else {
        format!(
            "Secret {}/{} {} the remote values",
            job.namespace,
            job.target,
            if synced.wrote {
                "was written with"
            } else {
                "holds"
            }
        )
    };
    let previous = obj.status.as_ref();
    let status = ExternalSecretStatus {
        observed_generation: obj.metadata.generation,
        refresh_time: Some(Time(Timestamp::now())),
        synced_versions: synced.versions.clone(),
        binding: (!synced.deleted).then(|| SecretBinding {
            name: job.target.clone(),
        }),
        synced_resource_version: Some(synced_resource_version(
            obj,
            obj.annotations()
                .get(FORCE_SYNC_ANNOTATION)
                .map(String::as_str),
        )),
        conditions: conditions_of(obj, Health::Ready, SyncReason::SecretSynced, &message),
    };
    status::patch_status(ctx.api_of(obj), obj, previous, &status).await?;
    if synced.wrote {
        let reason = if synced.deleted {
            "SecretDeleted"
        } else {
            SyncReason::SecretSynced.as_str()
        };
        status::publish(&ctx.events, obj, false, reason, "Sync", &message);
    }
    Ok(())
}

async fn record_failed(obj: &ExternalSecret, ctx: &SyncContext, failure: &Failure) -> Result<()> {
    let previous = obj.status.as_ref();
    let conditions = previous
        .map(|s| s.conditions.as_slice())
        .unwrap_or_default();
    let status = ExternalSecretStatus {
        observed_generation: obj.metadata.generation,
        conditions: conditions_of(obj, failure.health, failure.reason, &failure.message),
        // What was last synced stays on record.
        ..previous.cloned().unwrap_or_default()
    };
    status::patch_status(ctx.api_of(obj), obj, previous, &status).await?;
    if status::reason_of(conditions, status::READY) != Some(failure.reason.as_str()) {
        status::publish(
            &ctx.events,
            obj,
            true,
            failure.reason.as_str(),
            "Sync",
            &failure.message,
        );
    }
    Ok(())
}

/// Transient failures (API errors) back off like failed reads.
pub fn error_policy(obj: Arc<ExternalSecret>, err: &Error, ctx: Arc<SyncContext>) -> Action {
    let cap = obj
        .spec
        .refresh_interval_duration()
        .ok()
        .flatten()
        .unwrap_or(ONCE_RETRY_CAP);
    let delay = ctx.backoff.failed(object_key(&obj), cap);
    tracing::warn!(error = %err, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

/// The ExternalSecrets whose target is `secret` (for the Secret watch).
pub(crate) fn targets_of(
    store: &kube::runtime::reflector::Store<ExternalSecret>,
    secret: &kube::api::PartialObjectMeta<Secret>,
) -> Vec<ObjectRef<ExternalSecret>> {
    let namespace = secret.namespace().unwrap_or_default();
    let name = secret.name_any();
    store
        .state()
        .iter()
        .filter(|es| {
            es.namespace().as_deref() == Some(namespace.as_str()) && es.target_name() == name
        })
        .map(|es| ObjectRef::from_obj(es.as_ref()))
        .collect()
}

/// Whether `obj` reads `key` at its current version (pinned versions never change):
/// named in `data[]` or `extract`, or among the keys its last `find` returned (its
/// status lists every key it synced).
pub(crate) fn reads_current(obj: &ExternalSecret, key: &str) -> bool {
    let same = |k: &str| k.trim_matches('/') == key.trim_matches('/');
    let finds = obj.spec.data_from.iter().any(|d| d.find.is_some());
    obj.spec
        .data
        .iter()
        .any(|d| d.remote_ref.version.is_none() && same(&d.remote_ref.key))
        || obj
            .spec
            .data_from
            .iter()
            .filter_map(|d| d.extract.as_ref())
            .any(|e| e.version.is_none() && same(&e.key))
        || (finds
            && obj
                .status
                .as_ref()
                .is_some_and(|s| s.synced_versions.keys().any(|k| same(k))))
}

/// Every ExternalSecret that reads `key` at its current version through a store on
/// `server` (see [`crate::sync::stores::Stores::server_of`]): the Secrets that mirror that remote key.
pub(crate) async fn mirrors(
    ctx: &SyncContext,
    server: &str,
    key: &str,
) -> Result<Vec<Arc<ExternalSecret>>> {
    let mut found = Vec::new();
    for es in ctx.externals.state() {
        if !reads_current(&es, key) {
            continue;
        }
        let namespace = es.namespace().unwrap_or_default();
        // The account (a session's STS call) is asked only of stores whose region and
        // endpoint already match: a propagate polls this.
        if let Ok(store) = resolve_store(&es, &namespace, ctx).await?
            && store
                .server()
                .is_ok_and(|base| server.starts_with(base.as_str()))
            && ctx.stores.server_of(&store).await.ok().as_deref() == Some(server)
        {
            found.push(es);
        }
    }
    found.sort_by_key(|es| (es.namespace(), es.name_any()));
    Ok(found)
}

/// The ExternalSecrets that use a store (for the store watches).
pub(crate) fn users_of(
    store: &kube::runtime::reflector::Store<ExternalSecret>,
    kind: StoreKind,
    namespace: Option<&str>,
    name: &str,
) -> Vec<ObjectRef<ExternalSecret>> {
    store
        .state()
        .iter()
        .filter(|es| {
            let reference = &es.spec.secret_store_ref;
            reference.kind_or_default() == kind
                && reference.name == name
                && (kind == StoreKind::ClusterSecretStore || es.namespace().as_deref() == namespace)
        })
        .map(|es| ObjectRef::from_obj(es.as_ref()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refreshes_fall_within_ten_percent_of_the_interval_and_spread_out() {
        let now = Instant::now();
        let interval = Duration::from_secs(100);
        let due: Vec<Duration> = (0..200)
            .map(|_| next_refresh(now, Some(interval)).unwrap() - now)
            .collect();
        assert!(
            due.iter().all(|d| (90..=110).contains(&d.as_secs())),
            "{due:?}"
        );
        let earliest = due.iter().min().unwrap();
        let latest = due.iter().max().unwrap();
        assert!(
            *latest - *earliest > Duration::from_secs(10),
            "objects created together drift apart"
        );
        assert_eq!(
            next_refresh(now, None),
            None,
            "refreshInterval 0 syncs once"
        );
    }
}

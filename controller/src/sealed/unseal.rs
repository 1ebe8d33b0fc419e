//! SealedSecret → Secret: open every value with the cluster's keys, write the Secret by
//! server-side apply, and report honestly in status and Events. Bad input never changes
//! a Secret, and nothing here ever formats a secret value.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::hash::{BuildHasher, RandomState};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant};

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use kube::runtime::controller::Action;
use kube::{Api, Resource, ResourceExt};
use sigil_core::{Binding, Envelope, Error as SealError, KeyId};
use sigil_types::SealedSecretStatus;
use zeroize::Zeroizing;

use crate::common::Context;
use crate::common::MANAGER;
use crate::common::backoff::{Backoff, ObjectKey};
use crate::common::error::{Error, Result};
use crate::common::metrics::ResultLabel;
use crate::common::secret_watch::{OwnedSecrets, SecretVersion};
use crate::common::secret_writer::{Claim, Mode, Refusal, SecretWriter, Written};
use crate::common::status::{self, Health};
use crate::sealed::cached::{CachedSealedSecret, SealedValues};
use crate::sealed::keys::{KeyState, Keys};

use sigil_types::SEALED_SECRET_LABEL;
/// The condition SealedSecrets wrote before `Ready`, kept beside it (same status, reason
/// and message) for the tools and scripts that read it.
pub const SYNCED: &str = "Synced";
/// The most plaintext one Secret may hold (the API server's limit).
const MAX_SECRET_BYTES: usize = 1024 * 1024;

/// Why a SealedSecret is or is not synced: the reason of its `Ready` and `Synced`
/// conditions, the Event reason and the metric label, from one fixed set.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Every value opened and the Secret matches.
    Unsealed,
    /// No value was sealed to a key this cluster holds.
    UnknownKey,
    /// Sealed to a key that was revoked.
    RevokedKey,
    /// Sealed under another scope than `spec.scope` says.
    ScopeMismatch,
    /// Sealed for another namespace, name or data key (or a stanza was altered).
    WrongBinding,
    /// The payload was altered after sealing.
    Tampered,
    /// Not a sealed value at all (garbage, truncated, unknown version).
    Malformed,
    /// The opened Secret would exceed the API server's 1 MiB limit.
    TooLarge,
    /// A Secret of that name exists and does not belong to this SealedSecret.
    SecretNotOwned,
    /// The API server refused the Secret.
    SecretRejected,
}

impl Reason {
    /// The CamelCase name.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::Unsealed => "Unsealed",
            Reason::UnknownKey => "UnknownKey",
            Reason::RevokedKey => "RevokedKey",
            Reason::ScopeMismatch => "ScopeMismatch",
            Reason::WrongBinding => "WrongBinding",
            Reason::Tampered => "Tampered",
            Reason::Malformed => "Malformed",
            Reason::TooLarge => "TooLarge",
            Reason::SecretNotOwned => "SecretNotOwned",
            Reason::SecretRejected => "SecretRejected",
        }
    }

    fn of(err: &SealError, keys: &KeyState) -> Self {
        match err {
            SealError::UnknownKey { sealed_for }
                if sealed_for.iter().any(|id| keys.revoked.contains(id)) =>
            {
                Reason::RevokedKey
            }
            SealError::UnknownKey { .. } => Reason::UnknownKey,
            SealError::ScopeMismatch { .. } => Reason::ScopeMismatch,
            SealError::WrongBinding { .. } | SealError::InvalidBinding { .. } => {
                Reason::WrongBinding
            }
            SealError::Tampered => Reason::Tampered,
            _ => Reason::Malformed,
        }
    }
}

/// What a reconcile found.
struct Outcome {
    reason: Reason,
    message: String,
    key_ids: Vec<String>,
    wrote: bool,
    /// The Secret's resourceVersion once it held the values.
    secret_version: Option<SecretVersion>,
}

impl Outcome {
    fn failed(reason: Reason, message: String) -> Self {
        Self {
            reason,
            message,
            key_ids: Vec::new(),
            wrote: false,
            secret_version: None,
        }
    }
}

/// What the last reconcile of a SealedSecret settled: while its generation, the keys
/// and its Secret's resourceVersion stay the same, there is nothing to open or write.
/// The watch echoes each write back (the Secret created, the status set); without this,
/// every echo would open every value again.
struct Settled {
    generation: Option<i64>,
    /// Weak, so that replaced keys are dropped (and wiped) all the same.
    keys: Weak<KeyState>,
    secret_version: SecretVersion,
}

/// What was settled, per SealedSecret: kept by a keyed hash of its UID (a re-created
/// object has another), in 40 bytes, since there is one per SealedSecret for as long as
/// the controller runs.
#[derive(Default)]
pub(crate) struct SettledObjects {
    by_uid: Mutex<HashMap<u64, Settled>>,
    hasher: RandomState,
}

/// Every value opened; plaintext is wiped when this is dropped.
struct Opened {
    data: BTreeMap<String, Zeroizing<Vec<u8>>>,
    key_ids: BTreeSet<KeyId>,
}

/// Shared by every SealedSecret reconcile; the client, metrics and Events through
/// [`Context`].
pub struct UnsealContext {
    pub(crate) shared: Arc<Context>,
    /// The sealing keys.
    pub keys: Arc<Keys>,
    /// Consecutive failures per object, for exponential backoff.
    pub backoff: Backoff,
    /// The Secrets this controller wrote: a reconcile whose Secret already matches needs
    /// no request at all.
    pub(crate) secrets: Arc<OwnedSecrets>,
    /// Per SealedSecret, what its last reconcile settled.
    pub(crate) settled: SettledObjects,
}

crate::common::context::shares_context!(UnsealContext);

/// Why one value did not open: a reason from the fixed set, and the error with its fix
/// in words that never hold the value.
#[derive(Debug)]
pub(crate) struct Failure {
    /// The reason.
    pub reason: Reason,
    /// What went wrong and how to fix it, without the data key.
    pub detail: String,
}

impl Failure {
    fn of(err: &SealError, keys: &KeyState) -> Self {
        let reason = Reason::of(err, keys);
        let mut detail = err.to_string();
        if reason == Reason::RevokedKey {
            detail.push_str(" (that key was revoked)");
        }
        if let Some(hint) = err.hint() {
            detail.push_str("; ");
            detail.push_str(&hint);
        }
        Self { reason, detail }
    }

    /// The words for data key `key`, as status, Events and verify give them.
    pub(crate) fn message(&self, key: &str) -> String {
        format!("key `{key}`: {}", self.detail)
    }
}

/// One value opened; its plaintext is wiped when this is dropped, and it has no `Debug`.
pub(crate) struct OpenedValue {
    /// The plaintext.
    pub value: Zeroizing<Vec<u8>>,
    /// The place it opened for, which is where a re-seal binds it again.
    pub binding: Binding,
    /// The cluster key that opened it.
    pub key_id: Option<KeyId>,
}

/// Opens each value of `obj` for `namespace`, `name` and its data key, in key order:
/// the one judgement behind the unseal reconcile, verify and re-seal, so that they can
/// never disagree about a value.
pub(crate) fn open_each<'a>(
    obj: &'a impl SealedValues,
    namespace: &'a str,
    name: &'a str,
    keys: &'a KeyState,
) -> impl Iterator<Item = (&'a str, Result<OpenedValue, Failure>)> + 'a {
    let scope = obj.scope().into();
    obj.values().map(move |(key, text)| {
        let opened = Binding::new(scope, namespace, name, key).and_then(|binding| {
            let envelope = Envelope::decode(text)?;
            let value = envelope.open(&binding, &keys.keyring)?;
            let key_id = envelope
                .key_ids()
                .into_iter()
                .find(|id| keys.keyring.get(id).is_some());
            Ok(OpenedValue {
                value,
                binding,
                key_id,
            })
        });
        (key, opened.map_err(|err| Failure::of(&err, keys)))
    })
}

fn open_all(
    obj: &CachedSealedSecret,
    namespace: &str,
    name: &str,
    keys: &KeyState,
) -> Result<Opened, Outcome> {
    let mut data = BTreeMap::new();
    let mut key_ids = BTreeSet::new();
    let mut failures: Vec<(Reason, String)> = Vec::new();
    for (key, opened) in open_each(obj, namespace, name, keys) {
        match opened {
            Ok(opened) => {
                key_ids.extend(opened.key_id);
                data.insert(key.to_owned(), opened.value);
            }
            Err(failure) => failures.push((failure.reason, failure.message(key))),
        }
    }
    if let Some((reason, _)) = failures.first() {
        let count = failures.len();
        let mut message = failures
            .iter()
            .take(3)
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
            .join(" | ");
        if count > 3 {
            message.push_str(&format!(" (and {} more keys)", count - 3));
        }
        return Err(Outcome::failed(
            *reason,
            format!(
                "{count} of {} values did not open; the Secret was left as it was. {message}",
                obj.value_count()
            ),
        ));
    }
    let total: usize = data.values().map(|v| v.len()).sum();
    if total > MAX_SECRET_BYTES {
        return Err(Outcome::failed(
            Reason::TooLarge,
            format!(
                "the values add up to {total} bytes; a Secret holds at most {MAX_SECRET_BYTES}: split it into several SealedSecrets"
            ),
        ));
    }
    Ok(Opened { data, key_ids })
}

fn desired_secret(
    obj: &CachedSealedSecret,
    namespace: &str,
    name: &str,
    opened: &Opened,
    owner: OwnerReference,
) -> Secret {
    let template = obj.template().cloned().unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut labels = meta.labels;
    labels.insert(SEALED_SECRET_LABEL.to_owned(), "true".to_owned());
    Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(namespace.to_owned()),
            labels: Some(labels),
            annotations: (!meta.annotations.is_empty()).then_some(meta.annotations),
            owner_references: Some(vec![owner]),
            ..ObjectMeta::default()
        },
        type_: Some(template.type_.unwrap_or_else(|| "Opaque".to_owned())),
        immutable: template.immutable,
        data: Some(
            opened
                .data
                .iter()
                .map(|(k, v)| (k.clone(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Secret::default()
    }
}

impl SettledObjects {
    fn by_uid(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Settled>> {
        self.by_uid.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn key(&self, obj: &CachedSealedSecret) -> u64 {
        self.hasher.hash_one(obj.metadata.uid.as_deref())
    }

    /// Forgets what was settled for SealedSecrets not in `present`.
    pub(crate) fn forget_all_but<'a>(&self, present: impl Iterator<Item = &'a CachedSealedSecret>) {
        let present: HashSet<u64> = present.map(|obj| self.key(obj)).collect();
        self.by_uid().retain(|key, _| present.contains(key));
    }
}

impl UnsealContext {
    fn is_settled(&self, obj: &CachedSealedSecret, keys: &Arc<KeyState>) -> bool {
        let settled = self.settled.by_uid();
        let Some(settled) = settled.get(&self.settled.key(obj)) else {
            return false;
        };
        let namespace = obj.metadata.namespace.as_deref().unwrap_or_default();
        let name = obj.metadata.name.as_deref().unwrap_or_default();
        settled.generation == obj.metadata.generation
            && Weak::ptr_eq(&settled.keys, &Arc::downgrade(keys))
            && self.secrets.seen(namespace, name) == Some(settled.secret_version)
    }

    fn settle(&self, obj: &CachedSealedSecret, keys: &Arc<KeyState>, outcome: &Outcome) {
        let key = self.settled.key(obj);
        let mut settled = self.settled.by_uid();
        match (outcome.secret_version, outcome.reason) {
            (Some(secret_version), Reason::Unsealed) => {
                settled.insert(
                    key,
                    Settled {
                        generation: obj.metadata.generation,
                        keys: Arc::downgrade(keys),
                        secret_version,
                    },
                );
            }
            _ => {
                settled.remove(&key);
            }
        }
    }

    fn writer(&self) -> SecretWriter<'_> {
        SecretWriter {
            client: &self.client,
            secrets: &self.secrets,
            manager: MANAGER,
        }
    }

    async fn write_secret(
        &self,
        obj: &CachedSealedSecret,
        namespace: &str,
        name: &str,
        opened: Opened,
    ) -> Result<Outcome> {
        let owner = obj
            .controller_owner_ref(&())
            .expect("a SealedSecret read from the API server has a name and uid");
        let key_ids: Vec<String> = opened.key_ids.iter().map(KeyId::to_string).collect();
        let desired = desired_secret(obj, namespace, name, &opened, owner.clone());
        let claim = Claim {
            kind: "SealedSecret",
            uid: &owner.uid,
            mode: Mode::Own,
        };
        let synced = |wrote: bool, secret_version: Option<SecretVersion>| Outcome {
            reason: Reason::Unsealed,
            message: format!(
                "Secret {namespace}/{name} {} the {} unsealed keys",
                if wrote { "was written with" } else { "holds" },
                opened.data.len()
            ),
            key_ids: key_ids.clone(),
            wrote,
            secret_version,
        };
        Ok(match self.writer().write(&desired, &claim).await? {
            Written::Unchanged(version) => synced(false, version),
            Written::Changed(version) => synced(true, version),
            Written::Refused(Refusal::Rejected(message)) => {
                Outcome::failed(Reason::SecretRejected, message)
            }
            // A SealedSecret never merges, and a rival SealedSecret of the same name
            // cannot exist in one namespace: whatever else holds the Secret, it is not ours.
            Written::Refused(
                Refusal::NotOwned(message) | Refusal::Conflict(message) | Refusal::Missing(message),
            ) => Outcome::failed(Reason::SecretNotOwned, message),
        })
    }

    async fn record(&self, obj: &CachedSealedSecret, outcome: &Outcome) -> Result<()> {
        let synced = outcome.reason == Reason::Unsealed;
        let previous = obj.status().map(|s| s.conditions()).unwrap_or_default();
        // Every failure here is input a person must fix (re-seal, import a key, free the
        // Secret's name): `Stalled`, which GitOps tools report as failed.
        let health = if synced {
            Health::Ready
        } else {
            Health::Failed
        };
        let status = SealedSecretStatus {
            observed_generation: obj.metadata.generation,
            key_ids: outcome.key_ids.clone(),
            conditions: status::conditions(
                &previous,
                obj.metadata.generation,
                health,
                outcome.reason.as_str(),
                &outcome.message,
                &[SYNCED],
            ),
        };
        status::patch_status(
            Api::namespaced(self.client.clone(), &obj.namespace().unwrap_or_default()),
            obj,
            obj.status(),
            &status,
        )
        .await?;
        let reason_changed =
            status::reason_of(&previous, SYNCED).is_none_or(|r| r != outcome.reason.as_str());
        if outcome.wrote || (!synced && reason_changed) {
            status::publish(
                &self.events,
                obj,
                !synced,
                outcome.reason.as_str(),
                "Unseal",
                &outcome.message,
            );
        }
        Ok(())
    }
}

/// Reconciles one SealedSecret.
// No span per reconcile: on a cold start of many objects their bookkeeping is a
// measurable share of the time; the one line logged here names the object itself.
pub async fn reconcile(obj: Arc<CachedSealedSecret>, ctx: Arc<UnsealContext>) -> Result<Action> {
    let started = Instant::now();
    let namespace = obj.namespace().unwrap_or_default();
    let name = obj.name_any();
    let keys = ctx.keys.current();
    if ctx.is_settled(&obj, &keys) {
        return Ok(Action::await_change());
    }
    let result = match open_all(&obj, &namespace, &name, &keys) {
        Ok(opened) => ctx.write_secret(&obj, &namespace, &name, opened).await,
        Err(outcome) => Ok(outcome),
    };
    let result = match result {
        Ok(outcome) => ctx.record(&obj, &outcome).await.map(|()| outcome),
        Err(err) => Err(err),
    };
    ctx.metrics
        .reconcile_duration
        .observe(started.elapsed().as_secs_f64());
    let outcome = result?;
    ctx.metrics
        .unseal_total
        .get_or_create(&ResultLabel {
            result: outcome.reason.as_str(),
        })
        .inc();
    if outcome.reason != Reason::Unsealed {
        tracing::warn!(%namespace, %name, reason = outcome.reason.as_str(), message = %outcome.message, "not unsealed");
    }
    ctx.settle(&obj, &keys, &outcome);
    ctx.backoff.succeeded(&object_key(&obj));
    Ok(match outcome.reason {
        // The Secret in the way carries no label we watch, so its opt-in is polled for.
        Reason::SecretNotOwned => Action::requeue(Duration::from_secs(10)),
        // Other failures that input causes wait for a change (of the object, its
        // Secret, or the keys); nothing is gained by retrying them on a timer.
        _ => Action::await_change(),
    })
}

/// Transient failures (API errors) back off exponentially per object, from 1 s to 5 min.
pub fn error_policy(obj: Arc<CachedSealedSecret>, err: &Error, ctx: Arc<UnsealContext>) -> Action {
    let delay = ctx
        .backoff
        .failed(object_key(&obj), Duration::from_secs(300));
    tracing::warn!(namespace = obj.namespace().as_deref().unwrap_or(""), name = %obj.name_any(), error = %err, ?delay, "reconcile failed; retrying");
    Action::requeue(delay)
}

pub(crate) fn object_key(obj: &CachedSealedSecret) -> ObjectKey {
    (
        "SealedSecret",
        obj.namespace().unwrap_or_default(),
        obj.name_any(),
    )
}

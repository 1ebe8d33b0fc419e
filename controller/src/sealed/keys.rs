//! Sealing keys: made on first start, renewed on a period, stored as labelled Secrets in
//! the controller's namespace, watched so that keys added, changed, revoked or removed
//! take effect without a restart, and published as the `sigil-public-keys` ConfigMap.

use std::collections::BTreeSet;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Patch, PatchParams, PostParams};
use kube::{Api, Client, ResourceExt};
use sigil_core::keyfile::{self, KeyAttributes, PrivateKeyEntry, PublicKeyEntry};
use sigil_core::{KeyId, Keyring, PrivateKey};

use crate::common::MANAGER;
use crate::common::error::{Error, KubeContext, Result};

pub use sigil_types::keys::{
    KEY_DATA, KEY_LABEL, PUBLIC_KEYS_CONFIGMAP, PUBLIC_KEYS_DATA, REVOKED_LABEL, key_secret,
};

/// The keys as last read from the cluster.
#[derive(Default, Debug)]
pub struct KeyState {
    /// Every usable (not revoked) private key.
    pub keyring: Keyring,
    /// Keys labelled revoked.
    pub revoked: BTreeSet<KeyId>,
    /// The newest usable key, and when it was made.
    pub active: Option<(KeyId, Timestamp)>,
    /// The public key file: active key first, then the other usable keys, newest first.
    pub public_keys: String,
}

impl KeyState {
    /// Builds the state from the key Secrets; a Secret that does not hold a valid key is
    /// skipped with a warning that names it (never its content).
    pub fn from_secrets<'a>(
        secrets: impl IntoIterator<Item = &'a Secret>,
        cluster: Option<&str>,
    ) -> Self {
        let mut usable: Vec<(Timestamp, PrivateKeyEntry)> = Vec::new();
        let mut revoked = BTreeSet::new();
        for secret in secrets {
            let name = secret.name_any();
            let Some(entry) = read_key(secret) else {
                tracing::warn!(secret = %name, "key Secret holds no valid `{KEY_DATA}` line; skipped");
                continue;
            };
            if secret
                .labels()
                .get(REVOKED_LABEL)
                .is_some_and(|v| v == "true")
            {
                revoked.insert(entry.key.id());
                continue;
            }
            let created = entry
                .attributes
                .created
                .as_deref()
                .and_then(|c| c.parse::<Timestamp>().ok())
                .or_else(|| secret.metadata.creation_timestamp.as_ref().map(|t| t.0))
                .unwrap_or(Timestamp::UNIX_EPOCH);
            usable.push((created, entry));
        }
        // Newest first; the key ID breaks ties so every replica picks the same key.
        usable.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.key.id().cmp(&b.1.key.id())));
        let active = usable.first().map(|(created, e)| (e.key.id(), *created));
        let public_keys = usable
            .iter()
            .map(|(created, entry)| {
                let line = PublicKeyEntry {
                    key: *entry.key.public_key(),
                    attributes: KeyAttributes {
                        cluster: cluster
                            .map(str::to_owned)
                            .or(entry.attributes.cluster.clone()),
                        created: Some(created.to_string()),
                    },
                }
                .to_line();
                line + "\n"
            })
            .collect();
        Self {
            keyring: usable.into_iter().map(|(_, e)| e.key).collect(),
            revoked,
            active,
            public_keys,
        }
    }

    /// Whether a new key is due: there is none, or the active one is older than `period`.
    pub fn needs_renewal(&self, period: Duration, now: Timestamp) -> bool {
        match self.active {
            None => true,
            Some((_, created)) => {
                let age = now.duration_since(created);
                age.is_positive() && age.unsigned_abs() >= period
            }
        }
    }
}

fn read_key(secret: &Secret) -> Option<PrivateKeyEntry> {
    let bytes = secret.data.as_ref()?.get(KEY_DATA)?;
    let text = std::str::from_utf8(&bytes.0).ok()?;
    keyfile::parse_private(text).ok()?.into_iter().next()
}

/// The current keys, replaced whole whenever the key Secrets change.
#[derive(Default)]
pub struct Keys {
    state: RwLock<Arc<KeyState>>,
}

impl Keys {
    /// The keys now.
    pub fn current(&self) -> Arc<KeyState> {
        self.state.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Replaces the keys whole (the key watch does; so do tests and fuzz targets).
    pub fn replace(&self, state: KeyState) {
        *self.state.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(state);
    }
}

/// Makes a new sealing key and stores it, with `label` (e.g. the Rotation that asked)
/// on its Secret; the key watch then makes it active.
pub async fn generate(
    client: &Client,
    namespace: &str,
    cluster: Option<&str>,
    label: Option<(&str, &str)>,
) -> Result<KeyId> {
    let key = PrivateKey::generate().map_err(Error::KeyGeneration)?;
    let id = key.id();
    let entry = PrivateKeyEntry {
        key,
        attributes: KeyAttributes {
            cluster: cluster.map(str::to_owned),
            created: Some(
                Timestamp::now()
                    .round(jiff::Unit::Second)
                    .unwrap_or(Timestamp::now())
                    .to_string(),
            ),
        },
    };
    let api: Api<Secret> = Api::namespaced(client.clone(), namespace);
    let mut secret = key_secret(&entry, namespace);
    if let Some((name, value)) = label {
        secret
            .labels_mut()
            .insert(name.to_owned(), value.to_owned());
    }
    api.create(&PostParams::default(), &secret)
        .await
        .during(|| format!("create sealing key Secret in namespace {namespace}"))?;
    tracing::info!(key_id = %id, "generated a new sealing key");
    Ok(id)
}

/// Writes the public key file into the `sigil-public-keys` ConfigMap.
pub async fn publish(client: &Client, namespace: &str, state: &KeyState) -> Result<()> {
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), namespace);
    let active = state
        .active
        .map(|(id, _)| id.to_string())
        .unwrap_or_default();
    let config_map = serde_json::json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": PUBLIC_KEYS_CONFIGMAP,
            "namespace": namespace,
            "labels": { "app.kubernetes.io/managed-by": "sigil-controller" },
            "annotations": { sigil_types::ACTIVE_KEY_ANNOTATION: active },
        },
        "data": { PUBLIC_KEYS_DATA: state.public_keys },
    });
    api.patch(
        PUBLIC_KEYS_CONFIGMAP,
        &PatchParams::apply(MANAGER).force(),
        &Patch::Apply(&config_map),
    )
    .await
    .during(|| format!("publish ConfigMap {namespace}/{PUBLIC_KEYS_CONFIGMAP}"))?;
    Ok(())
}

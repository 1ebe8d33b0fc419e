//! How sealing keys live in the cluster: Secrets in the controller's namespace, and the
//! public keys in a ConfigMap every authenticated user may read. Shared by the
//! controller (which makes and reads them) and the CLI (`sigil cert`, `sigil keys
//! backup|import`).

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use sigil_core::PrivateKeyEntry;

pub use crate::names::{KEY_LABEL, REVOKED_LABEL};
/// Data key of the private key line inside a key Secret.
pub const KEY_DATA: &str = "sigil.key";
/// The ConfigMap every authenticated user may read to seal.
pub const PUBLIC_KEYS_CONFIGMAP: &str = "sigil-public-keys";
/// Data key of the public key lines inside the ConfigMap.
pub const PUBLIC_KEYS_DATA: &str = "sigil.pub";

/// The Secret that stores a new key.
pub fn key_secret(entry: &PrivateKeyEntry, namespace: &str) -> Secret {
    let line = entry.to_line();
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("sigil-sealing-key-{}", entry.key.id())),
            namespace: Some(namespace.to_owned()),
            labels: Some(BTreeMap::from([(KEY_LABEL.to_owned(), "true".to_owned())])),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([(
            KEY_DATA.to_owned(),
            ByteString(line.as_bytes().to_vec()),
        )])),
        ..Secret::default()
    }
}

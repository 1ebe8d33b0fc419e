//! Verify and re-seal, for the internal HTTP endpoints that `sigil-api` calls because it
//! holds no private key. Both judge each value exactly as the unseal reconcile does
//! ([`open_each`]) and write nothing to the cluster; neither ever answers with a value:
//! verify says only whether each value opens, re-seal answers with ciphertext or with
//! the reasons.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use sigil_core::{Envelope, KeyId, seal};
use sigil_types::api::{KeyVerdict, VerifyReport};
use sigil_types::{SealedSecret, SealedSecretSpec};

use crate::sealed::keys::KeyState;
use crate::sealed::unseal::{Failure, open_each};

/// Why a re-seal gave nothing back.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ResealError {
    /// Some values do not open here, so none was sealed again.
    #[error("{}", not_opened_message(.failed, *.total))]
    NotOpened {
        /// Each value that did not open: its data key and why.
        failed: Vec<(String, Failure)>,
        /// How many values the SealedSecret holds.
        total: usize,
    },
    /// Some values are also sealed to keys this cluster does not hold; re-sealing here
    /// would drop those recipients.
    #[error("{}", other_recipients_message(.values))]
    OtherRecipients {
        /// Each such value: its data key and the key IDs this cluster does not hold.
        values: Vec<(String, Vec<KeyId>)>,
    },
    /// No sealing key is loaded yet (a standby replica).
    #[error("this replica holds no active sealing key yet")]
    NoActiveKey,
    /// A value could not be sealed again.
    #[error("cannot seal a value again")]
    Seal(#[source] sigil_core::Error),
}

fn not_opened_message(failed: &[(String, Failure)], total: usize) -> String {
    let each = failed
        .iter()
        .map(|(key, f)| format!("key `{key}` ({}): {}", f.reason.as_str(), f.detail))
        .collect::<Vec<_>>()
        .join(" | ");
    format!(
        "{} of {total} values did not open, so nothing was re-sealed: {each}",
        failed.len()
    )
}

fn other_recipients_message(values: &[(String, Vec<KeyId>)]) -> String {
    let each = values
        .iter()
        .map(|(key, ids)| {
            let ids = ids
                .iter()
                .map(KeyId::to_string)
                .collect::<Vec<_>>()
                .join(", ");
            format!("key `{key}` (also sealed to {ids})")
        })
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "{each}: those keys belong to another cluster or an offline key, and this cluster \
         cannot seal to them, so re-sealing here would drop them; nothing was re-sealed. \
         Re-seal with `sigil seal --merge-into FILE` and a --cert for every recipient"
    )
}

/// The key IDs a sealed value names that `keys` does not hold.
fn foreign_recipients(text: &str, keys: &KeyState) -> Vec<KeyId> {
    Envelope::decode(text)
        .map(|envelope| envelope.key_ids())
        .unwrap_or_default()
        .into_iter()
        .filter(|id| keys.keyring.get(id).is_none() && !keys.revoked.contains(id))
        .collect()
}

/// Whether each value of `obj` opens here for `namespace`/`name`, and why not.
pub(crate) fn verify(
    obj: &SealedSecret,
    namespace: &str,
    name: &str,
    keys: &KeyState,
) -> VerifyReport {
    VerifyReport {
        namespace: namespace.to_owned(),
        name: name.to_owned(),
        keys: open_each(obj, namespace, name, keys)
            // `err()` drops (and wipes) an opened value unread.
            .map(|(key, opened)| match opened.err() {
                None => KeyVerdict {
                    key: key.to_owned(),
                    opens: true,
                    reason: None,
                    message: None,
                },
                Some(failure) => KeyVerdict {
                    key: key.to_owned(),
                    opens: false,
                    reason: Some(failure.reason.as_str().to_owned()),
                    message: Some(failure.message(key)),
                },
            })
            .collect(),
    }
}

/// `obj` with every value opened and sealed again, for the same place and scope, to the
/// active key; all or nothing. A value already sealed to the active key alone is kept
/// byte for byte, so a re-seal changes in Git only what it had to.
///
/// A value also sealed to keys this cluster does not hold (another cluster, an offline
/// break-glass key) is refused rather than silently losing those recipients: this
/// cluster has only its own public keys.
pub(crate) fn reseal(
    obj: &SealedSecret,
    namespace: &str,
    name: &str,
    keys: &KeyState,
) -> Result<SealedSecret, ResealError> {
    let active = keys
        .active
        .and_then(|(id, _)| keys.keyring.get(&id))
        .map(|key| *key.public_key())
        .ok_or(ResealError::NoActiveKey)?;
    let mut opened = Vec::new();
    let mut failed = Vec::new();
    for (key, result) in open_each(obj, namespace, name, keys) {
        match result {
            Ok(value) => opened.push((key, value)),
            Err(failure) => failed.push((key.to_owned(), failure)),
        }
    }
    if !failed.is_empty() {
        return Err(ResealError::NotOpened {
            failed,
            total: obj.spec.encrypted_data.len(),
        });
    }
    let texts = &obj.spec.encrypted_data;
    let foreign: Vec<(String, Vec<KeyId>)> = texts
        .iter()
        .map(|(key, text)| (key.clone(), foreign_recipients(text, keys)))
        .filter(|(_, ids)| !ids.is_empty())
        .collect();
    if !foreign.is_empty() {
        return Err(ResealError::OtherRecipients { values: foreign });
    }
    let active_id = active.id();
    let encrypted_data = opened
        .iter()
        .map(|(key, v)| {
            let text = &texts[*key];
            let current = Envelope::decode(text)
                .map(|e| e.key_ids())
                .unwrap_or_default();
            let resealed = if current == [active_id] {
                text.clone()
            } else {
                seal(&[active], &v.binding, &v.value)?
            };
            Ok(((*key).to_owned(), resealed))
        })
        .collect::<Result<BTreeMap<_, _>, sigil_core::Error>>()
        .map_err(ResealError::Seal)?;
    Ok(SealedSecret {
        metadata: without_server_fields(obj.metadata.clone()),
        spec: SealedSecretSpec {
            encrypted_data,
            ..obj.spec.clone()
        },
        status: None,
    })
}

/// The metadata as its author wrote it: what the API server set describes the old object
/// and would make the answer unfit to commit or apply.
fn without_server_fields(meta: ObjectMeta) -> ObjectMeta {
    ObjectMeta {
        uid: None,
        resource_version: None,
        generation: None,
        creation_timestamp: None,
        deletion_timestamp: None,
        deletion_grace_period_seconds: None,
        managed_fields: None,
        self_link: None,
        ..meta
    }
}

//! Verify and re-seal, for the internal HTTP endpoints that `sigil-api` calls because it
//! holds no private key. Both judge each value exactly as the unseal reconcile does
//! ([`open_each`]) and write nothing to the cluster; neither ever answers with a value:
//! verify says only whether each value opens, re-seal answers with ciphertext or with
//! the reasons.

use std::collections::BTreeMap;

use kube::api::ObjectMeta;
use sigil_core::seal;
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
/// active key alone; all or nothing.
///
/// Recipients besides the active key (another cluster, an offline break-glass key) are
/// not kept: this cluster holds only its own public keys.
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
    let encrypted_data = opened
        .iter()
        .map(|(key, v)| Ok(((*key).to_owned(), seal(&[active], &v.binding, &v.value)?)))
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

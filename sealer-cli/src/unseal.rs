//! `sigil unseal --recovery-key`: break-glass, offline.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Value, json};
use sigil_core::{Binding, Keyring, Scope, keyfile};
use sigil_types::SealedSecret;
use zeroize::Zeroizing;

use crate::cli::UnsealArgs;
use crate::document::{self, Document};
use crate::failure::{Failure, fail};
use crate::output;

fn load_keyring(args: &UnsealArgs) -> anyhow::Result<Keyring> {
    let path = &args.recovery_key;
    let text = Zeroizing::new(std::fs::read_to_string(path).map_err(|err| {
        Failure::new(format!("cannot read key file {}: {err}", path.display())).with_hint(
            "pass the private key file from `sigil keys generate` or `sigil keys backup`",
        )
    })?);
    let entries = keyfile::parse_private(&text).map_err(|err| {
        Failure::new(format!("key file {}: {err}", path.display()))
            .with_hint("a private key file has lines `sigil.key.v1 <key-id> <base64 key>`; restore it from your backup")
    })?;
    Ok(entries.into_iter().map(|entry| entry.key).collect())
}

fn open_document(doc: &Document, args: &UnsealArgs, keyring: &Keyring) -> anyhow::Result<Value> {
    let origin = &doc.origin;
    let kind = doc
        .value
        .get("kind")
        .and_then(Value::as_str)
        .unwrap_or_default();
    if kind != "SealedSecret" {
        return fail(
            format!("{origin}: is not a SealedSecret (kind `{kind}`)"),
            "sigil unseal opens SealedSecret manifests written by `sigil seal`",
        );
    }
    let sealed: SealedSecret = serde_json::from_value(doc.value.clone()).map_err(|err| {
        Failure::new(format!("{origin}: invalid SealedSecret: {err}"))
            .with_hint("check spec.scope (strict, namespace or cluster) and spec.encryptedData (key: sealed value)")
    })?;
    let scope: Scope = sealed.spec.scope.into();
    let name = sealed.metadata.name.clone().unwrap_or_default();
    let namespace = sealed
        .metadata
        .namespace
        .clone()
        .or_else(|| args.namespace.clone())
        .unwrap_or_default();
    if namespace.is_empty() && scope != Scope::Cluster {
        return fail(
            format!("{origin}: no namespace, and scope {scope} needs one to open the values"),
            "pass -n NAMESPACE (the namespace it was sealed for)",
        );
    }
    let mut data = BTreeMap::new();
    for (key, value) in &sealed.spec.encrypted_data {
        let opened = Binding::new(scope, &namespace, &name, key)
            .and_then(|binding| sigil_core::open(value, &binding, keyring))
            .map_err(|err| {
                let failure = Failure::new(format!("{origin}: spec.encryptedData.{key}: {err}"));
                match err.hint() {
                    Some(hint) => failure.with_hint(hint),
                    None => failure,
                }
            })?;
        data.insert(
            key.clone(),
            Value::String(STANDARD.encode(opened.as_slice())),
        );
    }
    let template = sealed.spec.template.unwrap_or_default();
    let meta = template.metadata.unwrap_or_default();
    let mut metadata = json!({ "name": name });
    if !namespace.is_empty() {
        metadata["namespace"] = json!(namespace);
    }
    if !meta.labels.is_empty() {
        metadata["labels"] = json!(meta.labels);
    }
    if !meta.annotations.is_empty() {
        metadata["annotations"] = json!(meta.annotations);
    }
    let mut secret = json!({
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": metadata,
        "type": template.type_.unwrap_or_else(|| "Opaque".to_owned()),
        "data": data,
    });
    if let Some(immutable) = template.immutable {
        secret["immutable"] = json!(immutable);
    }
    Ok(secret)
}

pub(crate) fn run(args: &UnsealArgs) -> anyhow::Result<()> {
    let keyring = load_keyring(args)?;
    let document::SealedManifests { documents, .. } = document::read_sealed_manifests(&args.input)?;
    let secrets = documents
        .iter()
        .map(|doc| open_document(doc, args, &keyring))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let secrets = document::Wiped(secrets);
    eprintln!("warning: printing plaintext Secrets; do not commit, paste or log this output");
    output::emit(None, &output::render(&secrets.0, args.format)?)
}

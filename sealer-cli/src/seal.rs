//! `sigil seal`: Secrets in, SealedSecrets out.

use std::collections::BTreeMap;
use std::io::{IsTerminal as _, Read};
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde_json::Value;
use sigil_core::{Binding, Envelope, KeyId, PublicKey, Scope, keyfile};
use sigil_types::{SealedSecret, SealedSecretSpec, SecretTemplate, TemplateMetadata};
use zeroize::Zeroizing;

use crate::cli::{Format, SealArgs};
use crate::document::{self, Document, Origin, PlainSecret, check_data_key};
use crate::failure::{Failure, fail, io_failure};
use crate::output::{self, Destination};
use crate::parallel;

/// The public keys to seal to, and for each the IDs of every key listed for its cluster
/// (older keys still open values sealed to them).
pub(crate) struct Recipients {
    pub(crate) keys: Vec<PublicKey>,
    families: Vec<Vec<KeyId>>,
}

/// The public keys to seal to: those of the `--cert` key files or, without any, the
/// cluster's published keys.
fn load_recipients(args: &SealArgs) -> anyhow::Result<Recipients> {
    if !args.certs.is_empty() {
        return recipients_from_files(&args.certs);
    }
    let text =
        crate::cluster::block_on(crate::cluster::public_keys(&args.cluster)).map_err(|err| {
            const OFFLINE: &str = "seal offline with `--cert FILE`: a key file from `sigil cert` (run where the cluster is reachable) or `sigil keys generate`";
            let hint = match err.downcast_ref::<Failure>().and_then(Failure::hint) {
                Some(hint) => format!("{hint}; or {OFFLINE}"),
                None => format!(
                    "no --cert was given, so the keys were fetched from the cluster: check that it is reachable, or {OFFLINE}"
                ),
            };
            Failure::new(format!("{err:#}")).with_hint(hint)
        })?;
    recipients_in(vec![(
        format!(
            "ConfigMap {}/{}",
            args.cluster.controller_namespace,
            sigil_types::keys::PUBLIC_KEYS_CONFIGMAP
        ),
        text,
    )])
}

/// The public keys to seal to, from `--cert` key files (see [`recipients_in`]).
pub(crate) fn recipients_from_files(certs: &[PathBuf]) -> anyhow::Result<Recipients> {
    let mut sources = Vec::with_capacity(certs.len());
    for path in certs {
        let text = std::fs::read_to_string(path).map_err(|err| {
            Failure::new(format!("cannot read key file {}: {err}", path.display())).with_hint(
                "pass the public key file written by `sigil keys generate` or `sigil cert`",
            )
        })?;
        sources.push((format!("key file {}", path.display()), text));
    }
    recipients_in(sources)
}

/// The public keys of key files, each given as (name for messages, text): for each
/// `cluster=` name, the first key listed (the cluster's active key); every key without
/// a cluster name.
pub(crate) fn recipients_in(sources: Vec<(String, String)>) -> anyhow::Result<Recipients> {
    let mut recipients = Vec::new();
    let mut families: Vec<Vec<KeyId>> = Vec::new();
    for (source, text) in sources {
        let entries = keyfile::parse_public(&text).map_err(|err| {
            Failure::new(format!("{source}: {err}")).with_hint(
                "a public key file has lines `sigil.pub.v1 <key-id> <base64 key> [cluster=NAME]`; fetch a fresh copy",
            )
        })?;
        // A file may list several keys of one cluster (the active one first, then older
        // ones that still open); lines without a cluster name count as one cluster.
        let mut clusters_seen: Vec<Option<String>> = Vec::new();
        for entry in entries {
            match clusters_seen
                .iter()
                .position(|c| *c == entry.attributes.cluster)
            {
                Some(seen) => {
                    // This file's families are the last `clusters_seen.len()` ones.
                    let family = families.len() - clusters_seen.len() + seen;
                    families[family].push(entry.key.id());
                }
                None => {
                    clusters_seen.push(entry.attributes.cluster.clone());
                    families.push(vec![entry.key.id()]);
                    recipients.push(entry.key);
                }
            }
        }
    }
    if recipients.len() > sigil_core::sealed::MAX_RECIPIENTS {
        return fail(
            format!(
                "the key files name {} clusters; a value is sealed to at most {}",
                recipients.len(),
                sigil_core::sealed::MAX_RECIPIENTS
            ),
            "seal for fewer clusters at a time",
        );
    }
    Ok(Recipients {
        keys: recipients,
        families,
    })
}

/// One field from a document and one from the command line: either may be missing,
/// but they must agree.
fn resolve(
    from_document: Option<String>,
    from_flag: Option<&String>,
    field: &str,
    flag: &str,
    origin: &Origin,
) -> anyhow::Result<Option<String>> {
    match (from_document, from_flag) {
        (Some(doc), Some(flag_value)) if &doc != flag_value => fail(
            format!("{origin}: {field} is `{doc}` but {flag} says `{flag_value}`"),
            format!("drop {flag}, or change {field} to match it"),
        ),
        (doc, flag_value) => Ok(doc.or_else(|| flag_value.cloned())),
    }
}

fn require_namespace(
    namespace: Option<String>,
    scope: Scope,
    origin: &dyn std::fmt::Display,
    hint: &str,
) -> anyhow::Result<String> {
    match namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) if !sigil_types::is_dns_label(&ns) => fail(
            format!("{origin}: namespace `{ns}` is not a namespace name Kubernetes accepts"),
            "namespace names are lowercase letters, digits and `-` (at most 63), starting and ending with a letter or digit, e.g. `prod`",
        ),
        Some(ns) => Ok(ns),
        None if scope == Scope::Cluster => Ok(String::new()),
        None => fail(
            format!(
                "{origin}: no namespace given, and scope {scope} binds each value to its namespace"
            ),
            hint,
        ),
    }
}

/// The identity the values of one SealedSecret are bound to.
pub(crate) struct Target {
    pub(crate) name: String,
    /// Empty only for scope cluster.
    pub(crate) namespace: String,
    pub(crate) scope: Scope,
}

impl Target {
    fn of(
        secret: &PlainSecret,
        name_flag: Option<&String>,
        namespace_flag: Option<&String>,
        scope: Scope,
    ) -> anyhow::Result<Self> {
        let origin = &secret.origin;
        let name = resolve(
            secret.name.clone(),
            name_flag,
            "metadata.name",
            "--name",
            origin,
        )?
        .filter(|n| !n.is_empty());
        let Some(name) = name else {
            return fail(
                format!("{origin}: the Secret has no metadata.name"),
                "set metadata.name, or pass --name NAME",
            );
        };
        if !sigil_types::is_object_name(&name) {
            return fail(
                format!("{origin}: Secret name `{name}` is not a name Kubernetes accepts"),
                "Secret names are lowercase letters, digits, `-` and `.` (at most 253), starting and ending with a letter or digit, e.g. `db-credentials`",
            );
        }
        let namespace = resolve(
            secret.namespace.clone(),
            namespace_flag,
            "metadata.namespace",
            "-n",
            origin,
        )?;
        Ok(Self {
            namespace: require_namespace(
                namespace,
                scope,
                origin,
                "set metadata.namespace, pass -n NAMESPACE, or seal with --scope cluster",
            )?,
            name,
            scope,
        })
    }

    /// Seals the value of data key `key` to `recipients`, bound to this identity.
    pub(crate) fn seal_value(
        &self,
        key: &str,
        value: &[u8],
        recipients: &[PublicKey],
    ) -> sigil_core::Result<String> {
        let binding = Binding::new(self.scope, &self.namespace, &self.name, key)?;
        sigil_core::seal(recipients, &binding, value)
    }

    fn seal_data(
        &self,
        secret: &PlainSecret,
        recipients: &[PublicKey],
    ) -> anyhow::Result<BTreeMap<String, String>> {
        secret
            .data
            .iter()
            .map(|(key, value)| {
                let sealed = self
                    .seal_value(key, value, recipients)
                    .with_context(|| format!("{}: cannot seal key `{key}`", secret.origin))?;
                Ok((key.clone(), sealed))
            })
            .collect()
    }

    /// The SealedSecret of values sealed for this identity, in its namespace (none for
    /// an empty one).
    pub(crate) fn sealed_secret(
        &self,
        encrypted_data: BTreeMap<String, String>,
        template: Option<SecretTemplate>,
    ) -> SealedSecret {
        let mut sealed = SealedSecret::new(
            &self.name,
            SealedSecretSpec {
                scope: self.scope.into(),
                encrypted_data,
                template,
            },
        );
        sealed.metadata.namespace = Some(self.namespace.clone()).filter(|ns| !ns.is_empty());
        sealed
    }
}

/// The template of the Secret a SealedSecret becomes; `None` when it sets nothing.
pub(crate) fn secret_template(
    type_: Option<String>,
    immutable: Option<bool>,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
) -> Option<SecretTemplate> {
    let template = SecretTemplate {
        type_,
        immutable,
        metadata: (!labels.is_empty() || !annotations.is_empty()).then_some(TemplateMetadata {
            labels,
            annotations,
        }),
    };
    (template != SecretTemplate::default()).then_some(template)
}

fn sealed_secret(
    secret: &PlainSecret,
    args: &SealArgs,
    recipients: &[PublicKey],
) -> anyhow::Result<Value> {
    let scope = args.scope.map_or(Scope::Strict, Scope::from);
    let target = Target::of(secret, args.name.as_ref(), args.namespace.as_ref(), scope)?;
    let template = secret_template(
        secret.type_.clone(),
        secret.immutable,
        secret.labels.clone(),
        secret.annotations.clone(),
    );
    let sealed = target.sealed_secret(target.seal_data(secret, recipients)?, template);
    Ok(serde_json::to_value(&sealed)?)
}

fn seal_text(
    text: &str,
    source: &str,
    args: &SealArgs,
    recipients: &[PublicKey],
) -> anyhow::Result<Vec<Value>> {
    let documents = document::parse_documents(text, source)?;
    if documents.is_empty() {
        return fail(
            format!("{source}: holds no document"),
            "give a Secret manifest (apiVersion: v1, kind: Secret)",
        );
    }
    documents
        .iter()
        .map(|doc| sealed_secret(&PlainSecret::from_document(doc)?, args, recipients))
        .collect()
}

pub(crate) fn run(args: &SealArgs) -> anyhow::Result<()> {
    let loaded = load_recipients(args)?;
    if let Some(target) = &args.merge_into {
        return merge_into(target, args, &loaded);
    }
    let recipients = loaded.keys;
    if args.raw {
        return seal_raw(args, &recipients);
    }
    let out =
        match output::destination(&args.input, args.out.as_deref(), "sealed", "SealedSecrets")? {
            Destination::Directory(out_dir) => return seal_directory(args, out_dir, &recipients),
            Destination::File(out) => out,
        };
    let text = document::read_input(&args.input)?;
    let sealed = seal_text(
        &text,
        &document::source_name(&args.input),
        args,
        &recipients,
    )?;
    output::emit(
        out,
        &output::render(&sealed, args.format.unwrap_or_default())?,
    )
}

fn seal_directory(args: &SealArgs, out_dir: &Path, recipients: &[PublicKey]) -> anyhow::Result<()> {
    let files = document::manifest_files_in(&args.input, "Secret")?;
    // Seal everything before writing anything, so a bad file leaves no partial tree,
    // and every bad file is reported, not only the first. Files are read and sealed on
    // every core; writing stays in order on this thread: parallel renames into one
    // directory only contend for its lock (more system time, no less wall time).
    let results = parallel::try_map_in_order(&files, |relative| {
        let path = args.input.join(relative);
        let sealed = document::read_input(&path).and_then(|text| {
            let sealed = seal_text(&text, &path.display().to_string(), args, recipients)?;
            // A JSON file gives JSON, a YAML file YAML, unless -o says otherwise.
            let format = args.format.unwrap_or(if document::looks_like_json(&text) {
                Format::Json
            } else {
                Format::Yaml
            });
            output::render(&sealed, format)
        });
        Ok::<_, std::convert::Infallible>(sealed.map(|text| (out_dir.join(relative), text)))
    })
    .unwrap_or_else(|never| match never {});
    let (outputs, failures): (Vec<_>, Vec<_>) = results.into_iter().partition(Result::is_ok);
    if !failures.is_empty() {
        let errors: Vec<anyhow::Error> = failures.into_iter().filter_map(Result::err).collect();
        let hint = errors
            .iter()
            .find_map(|err| err.downcast_ref::<Failure>().and_then(Failure::hint))
            .unwrap_or("fix the files named above")
            .to_owned();
        let listed: Vec<String> = errors.iter().map(|err| format!("  {err:#}")).collect();
        return fail(
            format!(
                "{} of {} files could not be sealed, so nothing was written:\n{}",
                errors.len(),
                files.len(),
                listed.join("\n")
            ),
            hint,
        );
    }
    let outputs: Vec<(PathBuf, Zeroizing<String>)> =
        outputs.into_iter().filter_map(Result::ok).collect();
    for (path, text) in &outputs {
        output::write_atomic(path, text)?;
    }
    eprintln!("sealed {} files into {}", outputs.len(), out_dir.display());
    if args.prune {
        prune(out_dir, &files)?;
    }
    Ok(())
}

/// Removes the SealedSecret files under `out_dir` whose source under the input
/// directory is gone, and says which; files that are not SealedSecrets are left alone.
fn prune(out_dir: &Path, sources: &[PathBuf]) -> anyhow::Result<()> {
    let mut removed = Vec::new();
    for relative in document::manifest_files(out_dir)?.files {
        if sources.contains(&relative) {
            continue;
        }
        let path = out_dir.join(&relative);
        let Ok(text) = document::read_input(&path) else {
            continue;
        };
        let only_sealed_secrets = document::parse_documents(&text, &path.display().to_string())
            .is_ok_and(|docs| {
                !docs.is_empty()
                    && docs.iter().all(|doc| {
                        doc.value.get("apiVersion") == Some(&Value::from(sigil_types::API_VERSION))
                            && doc.value.get("kind") == Some(&Value::from("SealedSecret"))
                    })
            });
        if only_sealed_secrets {
            std::fs::remove_file(&path).map_err(|err| io_failure("remove", &path, &err))?;
            removed.push(relative.display().to_string());
        }
    }
    if removed.is_empty() {
        eprintln!(
            "--prune: every SealedSecret file under {} has its source",
            out_dir.display()
        );
    } else {
        eprintln!(
            "--prune: removed {} SealedSecret files whose source is gone: {}",
            removed.len(),
            removed.join(", ")
        );
    }
    Ok(())
}

fn seal_raw(args: &SealArgs, recipients: &[PublicKey]) -> anyhow::Result<()> {
    let scope = args.scope.map_or(Scope::Strict, Scope::from);
    let key = args.key.clone().unwrap_or_default();
    let origin = "--raw";
    let namespace = require_namespace(
        args.namespace.clone(),
        scope,
        &origin,
        "pass -n NAMESPACE, or seal with --scope cluster",
    )?;
    let name = args.name.clone().unwrap_or_default();
    if !name.is_empty() && !sigil_types::is_object_name(&name) {
        return fail(
            format!("--name `{name}` is not a Secret name Kubernetes accepts"),
            "Secret names are lowercase letters, digits, `-` and `.` (at most 253), starting and ending with a letter or digit, e.g. `db-credentials`",
        );
    }
    if scope == Scope::Strict && name.is_empty() {
        return fail(
            "--raw: no --name given, and scope strict binds the value to the Secret name",
            "pass --name NAME, or seal with --scope namespace",
        );
    }
    check_data_key(&key, "--key", &origin)?;
    if std::io::stdin().is_terminal() {
        return fail(
            "--raw reads the value from stdin, and stdin is a terminal",
            "pipe the value in: `printf %s \"$VALUE\" | sigil seal --raw ...`, or `sigil seal --raw ... < FILE`",
        );
    }
    let mut value = Zeroizing::new(Vec::new());
    std::io::stdin()
        .read_to_end(&mut value)
        .map_err(|err| io_failure("read", Path::new("stdin"), &err))?;
    if value.is_empty() && !args.allow_empty {
        return fail(
            "--raw: stdin was empty, so the sealed value would be empty",
            "pipe the value in (`printf %s \"$VALUE\" | sigil seal --raw ...`), or pass --allow-empty if an empty value is meant",
        );
    }
    if value.ends_with(b"\n") {
        eprintln!(
            "note: the value ends with a newline, which is sealed too; use `printf %s` or `echo -n` if that is not intended"
        );
    }
    let target = Target {
        name,
        namespace,
        scope,
    };
    let sealed = target.seal_value(&key, &value, recipients)?;
    output::emit(args.out.as_deref(), &format!("{sealed}\n"))
}

fn merge_into(target: &Path, args: &SealArgs, loaded: &Recipients) -> anyhow::Result<()> {
    let recipients = loaded.keys.as_slice();
    let existing_text = std::fs::read_to_string(target).map_err(|err| {
        Failure::new(format!(
            "cannot read --merge-into file {}: {err}",
            target.display()
        ))
        .with_hint(
            "--merge-into takes an existing SealedSecret file; seal without it to create one",
        )
    })?;
    let source = target.display().to_string();
    let mut existing = document::parse_documents(&existing_text, &source)?;
    let mut existing = match existing.len() {
        1 => existing.remove(0),
        n => {
            return fail(
                format!("--merge-into file {source} holds {n} documents"),
                "merge into a file that holds exactly one SealedSecret",
            );
        }
    };
    let current: SealedSecret = serde_json::from_value(existing.value.clone()).map_err(|err| {
        Failure::new(format!("{}: not a SealedSecret: {err}", existing.origin)).with_hint(
            "--merge-into takes a SealedSecret written by `sigil seal` (apiVersion: sigil.dev/v1)",
        )
    })?;
    if existing.value.get("apiVersion") != Some(&Value::from(sigil_types::API_VERSION)) {
        return fail(
            format!(
                "{}: apiVersion is not {}",
                existing.origin,
                sigil_types::API_VERSION
            ),
            "--merge-into takes a SealedSecret written by `sigil seal`",
        );
    }
    let scope: Scope = current.spec.scope.into();
    if let Some(flag) = args.scope
        && Scope::from(flag) != scope
    {
        return fail(
            format!(
                "{}: spec.scope is {scope} but --scope says {}",
                existing.origin,
                Scope::from(flag)
            ),
            "a SealedSecret has one scope: drop --scope, or seal a new file",
        );
    }
    let text = document::read_input(&args.input)?;
    let source_name = document::source_name(&args.input);
    let documents = document::parse_documents(&text, &source_name)?;
    let [doc]: [Document; 1] = documents.try_into().map_err(|docs: Vec<Document>| {
        Failure::new(format!(
            "{source_name}: holds {} documents; --merge-into takes one Secret",
            docs.len()
        ))
        .with_hint("merge one Secret at a time")
    })?;
    let mut secret = PlainSecret::from_document(&doc)?;
    // A Secret that names neither itself nor its namespace belongs to the file it merges into.
    if secret.name.is_none() && args.name.is_none() {
        secret.name.clone_from(&current.metadata.name);
    }
    if secret.namespace.is_none() && args.namespace.is_none() {
        secret.namespace.clone_from(&current.metadata.namespace);
    }
    let target_identity = Target::of(&secret, args.name.as_ref(), args.namespace.as_ref(), scope)?;
    for (field, theirs, ours) in [
        (
            "metadata.name",
            current.metadata.name.as_deref(),
            Some(target_identity.name.as_str()),
        ),
        (
            "metadata.namespace",
            current.metadata.namespace.as_deref(),
            Some(target_identity.namespace.as_str()).filter(|ns| !ns.is_empty()),
        ),
    ] {
        if theirs != ours {
            return fail(
                format!(
                    "{}: {field} is `{}` but the Secret's is `{}`",
                    existing.origin,
                    theirs.unwrap_or_default(),
                    ours.unwrap_or_default()
                ),
                "merge a Secret into the SealedSecret of the same name and namespace",
            );
        }
    }
    let dropped = check_recipients(&current, &existing.origin, loaded, args.drop_recipients)?;
    let sealed = target_identity.seal_data(&secret, recipients)?;
    let encrypted = existing
        .value
        .pointer_mut("/spec/encryptedData")
        .and_then(Value::as_object_mut)
        .context("spec.encryptedData is missing")?;
    let merged: Vec<String> = sealed.keys().cloned().collect();
    for (key, value) in sealed {
        encrypted.insert(key, Value::String(value));
    }
    let format = if document::looks_like_json(&existing_text) {
        Format::Json
    } else {
        Format::Yaml
    };
    output::write_atomic(target, &output::render(&[existing.value.take()], format)?)?;
    eprintln!("re-sealed {} into {}", merged.join(", "), target.display());
    if !dropped.is_empty() {
        eprintln!(
            "note: {} no longer open with {} (--drop-recipients); the file's other keys still do",
            merged.join(", "),
            join_ids(&dropped)
        );
    }
    Ok(())
}

/// Refuses a merge that would change who can open the file's values: a key the file
/// is sealed to that no `--cert` lists (another cluster, a break-glass key) would not
/// open the merged values, and a `--cert` cluster the file is not sealed to would leave
/// it sealed to different keys per value. With `drop` the first is allowed; returns the
/// key IDs so dropped.
fn check_recipients(
    current: &SealedSecret,
    origin: &Origin,
    given: &Recipients,
    drop: bool,
) -> anyhow::Result<Vec<KeyId>> {
    let mut sealed_to: Vec<KeyId> = Vec::new();
    for text in current.spec.encrypted_data.values() {
        // A value that does not decode is refused by the controller; it names no key.
        for id in Envelope::decode(text)
            .map(|e| e.key_ids())
            .unwrap_or_default()
        {
            if !sealed_to.contains(&id) {
                sealed_to.push(id);
            }
        }
    }
    if sealed_to.is_empty() {
        return Ok(Vec::new());
    }
    let listed: Vec<KeyId> = given.families.iter().flatten().copied().collect();
    let given_ids: Vec<KeyId> = given.keys.iter().map(PublicKey::id).collect();
    let added: Vec<KeyId> = given
        .keys
        .iter()
        .zip(&given.families)
        .filter(|(_, family)| !family.iter().any(|id| sealed_to.contains(id)))
        .map(|(key, _)| key.id())
        .collect();
    if !added.is_empty() {
        return fail(
            format!(
                "{origin}: its values are sealed to {}, and --cert adds {}, to which none is: the file would be sealed to different keys per value",
                join_ids(&sealed_to),
                join_ids(&added)
            ),
            "to seal the file for another cluster too, seal the whole Secret again without --merge-into, with a --cert for every cluster",
        );
    }
    let missing: Vec<KeyId> = sealed_to
        .iter()
        .filter(|id| !listed.contains(id))
        .copied()
        .collect();
    if !missing.is_empty() && !drop {
        return fail(
            format!(
                "{origin}: its values are sealed to {}, but the --cert files list {}: the merged values would not open with {}",
                join_ids(&sealed_to),
                join_ids(&given_ids),
                join_ids(&missing)
            ),
            "pass a --cert for each of those keys (another cluster, a break-glass key), or --drop-recipients to seal the merged values without them",
        );
    }
    Ok(missing)
}

fn join_ids(ids: &[KeyId]) -> String {
    ids.iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

//! `sigil migrate bitnami`: Bitnami SealedSecrets opened offline with Bitnami's private
//! keys and sealed again, value by value, as Sigil SealedSecrets of the same namespace,
//! name, keys, scope and template, file by file.
//!
//! Everything is opened and sealed in memory before anything is written, so one value
//! that does not open leaves no output at all; plaintext is never written or printed.
//! Documents that are not Bitnami SealedSecrets pass through, and files without one are
//! copied byte for byte, so a kustomize directory comes out whole.

mod bitnami;

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use sigil_core::PublicKey;
use sigil_types::SecretTemplate;
use zeroize::Zeroizing;

use crate::cli::{Format, MigrateBitnamiArgs};
use crate::document::{
    self, Document, Origin, Wiped, check_data_key, optional_bool, optional_string, string_map,
};
use crate::failure::{Failure, fail};
use crate::output::{self, Destination};
use crate::seal::{self, Target};

/// The only Bitnami API version there is (kubeseal up to v0.36 at least).
const BITNAMI_API_VERSION: &str = "bitnami.com/v1alpha1";
/// Prefix of the annotations Bitnami's controller reads.
const BITNAMI_ANNOTATIONS: &str = "sealedsecrets.bitnami.com/";
/// Annotations that record an object's history on a server; dropped, as `sigil seal`
/// and kubeseal drop them.
const LAST_APPLIED: [&str; 2] = [
    "kubectl.kubernetes.io/last-applied-configuration",
    "kubecfg.ksonnet.io/last-applied-configuration",
];
/// Metadata the API server writes: the Bitnami object's state, not part of a manifest.
const SERVER_FIELDS: [&str; 8] = [
    "creationTimestamp",
    "deletionGracePeriodSeconds",
    "deletionTimestamp",
    "generation",
    "managedFields",
    "resourceVersion",
    "selfLink",
    "uid",
];

const KEY_HINT: &str = "pass Bitnami's private keys as `kubectl get secret -n kube-system -l sealedsecrets.bitnami.com/sealed-secrets-key -o yaml` prints them (name the controller's namespace), or a tls.key PEM file";

/// What every value is opened with and sealed to.
struct Keys {
    bitnami: Vec<bitnami::PrivateKey>,
    recipients: Vec<PublicKey>,
    /// `-n`: the namespace of SealedSecrets that do not name one.
    namespace: Option<String>,
}

pub(crate) fn bitnami(args: &MigrateBitnamiArgs) -> anyhow::Result<()> {
    let inputs = inputs(args)?;
    let keys = Keys {
        bitnami: load_bitnami_keys(&args.bitnami_keys)?,
        recipients: seal::recipients_from_files(&args.certs)?.keys,
        namespace: args.namespace.clone().filter(|ns| !ns.is_empty()),
    };
    let lenient = args.input.is_dir();
    let mut notes = Vec::new();
    let mut outputs = Vec::with_capacity(inputs.len());
    for input in &inputs {
        outputs.push(migrate_file(input, &keys, lenient, &mut notes)?);
    }
    let objects: usize = outputs.iter().map(|o| o.objects).sum();
    if objects == 0 {
        let what = if args.input.is_dir() {
            format!(
                "none of the {} files under {} holds a",
                inputs.len(),
                args.input.display()
            )
        } else {
            format!("{} holds no", document::source_name(&args.input))
        };
        return fail(
            format!("{what} Bitnami SealedSecret (apiVersion: {BITNAMI_API_VERSION})"),
            "point -f at the SealedSecret manifests kubeseal wrote",
        );
    }
    for note in &notes {
        eprintln!("warning: {note}");
    }
    for (input, migrated) in inputs.iter().zip(&outputs) {
        output::emit(input.out.as_deref(), &migrated.text)?;
    }
    if let Some(out) = &args.out {
        let values: usize = outputs.iter().map(|o| o.values).sum();
        let copied = outputs.iter().filter(|o| o.objects == 0).count();
        let copied_note = match copied {
            0 => String::new(),
            n => format!(
                "; {} without one copied unchanged",
                count(n, "file", "files")
            ),
        };
        eprintln!(
            "migrated {} ({}) in {} into {}{copied_note}",
            count(objects, "SealedSecret", "SealedSecrets"),
            count(values, "value", "values"),
            count(outputs.len() - copied, "file", "files"),
            out.display()
        );
    }
    Ok(())
}

fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// One input file and where its migration goes (`None`: stdout).
struct Input {
    path: PathBuf,
    out: Option<PathBuf>,
}

/// Every file to migrate, with where it goes; refuses any output that is an input.
fn inputs(args: &MigrateBitnamiArgs) -> anyhow::Result<Vec<Input>> {
    let out_dir = match output::destination(
        &args.input,
        args.out.as_deref(),
        "migrated",
        "Sigil SealedSecrets",
    )? {
        Destination::File(out) => {
            return Ok(vec![Input {
                path: args.input.clone(),
                out: out.map(PathBuf::from),
            }]);
        }
        Destination::Directory(out_dir) => out_dir,
    };
    let inputs: Vec<Input> = document::manifest_files_in(&args.input, "Bitnami SealedSecret")?
        .into_iter()
        .map(|relative| Input {
            path: args.input.join(&relative),
            out: Some(out_dir.join(relative)),
        })
        .collect();
    let originals: BTreeSet<PathBuf> = inputs
        .iter()
        .filter_map(|input| input.path.canonicalize().ok())
        .collect();
    for input in &inputs {
        if let Some(out) = &input.out
            && out.canonicalize().is_ok_and(|out| originals.contains(&out))
        {
            return fail(
                format!(
                    "-w {}: {} would overwrite an input file",
                    out_dir.display(),
                    out.display()
                ),
                "write the Sigil SealedSecrets to a directory outside the input directory",
            );
        }
    }
    Ok(inputs)
}

/// Every Bitnami private key in the `--bitnami-key` files.
fn load_bitnami_keys(paths: &[PathBuf]) -> anyhow::Result<Vec<bitnami::PrivateKey>> {
    let mut keys = Vec::new();
    for path in paths {
        let text = Zeroizing::new(std::fs::read(path).map_err(|err| {
            Failure::new(format!(
                "cannot read --bitnami-key {}: {err}",
                path.display()
            ))
            .with_hint(KEY_HINT)
        })?);
        keys.extend(keys_in(&text, &path.display().to_string())?);
    }
    Ok(keys)
}

/// The keys of one file: PEM, or the key Secrets as YAML or JSON (`data.tls.key`).
fn keys_in(text: &[u8], source: &str) -> anyhow::Result<Vec<bitnami::PrivateKey>> {
    let source = format!("--bitnami-key {source}");
    // Base64 under `data` never holds a PEM boundary, so this tells the two apart.
    if text.windows(10).any(|w| w == b"-----BEGIN") {
        return bitnami::keys_from_pem(text).map_err(|err| {
            Failure::new(format!("{source}: {err}"))
                .with_hint(KEY_HINT)
                .into()
        });
    }
    let text = std::str::from_utf8(text).map_err(|_| {
        Failure::new(format!("{source}: neither PEM nor YAML or JSON text")).with_hint(KEY_HINT)
    })?;
    let documents = document::parse_documents(text, &source)?;
    if documents.is_empty() {
        return fail(format!("{source}: holds no key"), KEY_HINT);
    }
    let mut keys = Vec::new();
    for doc in &documents {
        let origin = &doc.origin;
        let field = |path: &str| doc.value.pointer(path).and_then(Value::as_str);
        if field("/kind") != Some("Secret") {
            return fail(
                format!("{origin}: is not a Secret with a private key in data.tls.key"),
                KEY_HINT,
            );
        }
        let secret = match (field("/metadata/namespace"), field("/metadata/name")) {
            (Some(ns), Some(name)) => format!("Secret {ns}/{name}"),
            (None, Some(name)) => format!("Secret {name}"),
            _ => "Secret".to_owned(),
        };
        let pem = field("/data/tls.key")
            .and_then(|b64| STANDARD.decode(b64.trim()).ok())
            .map(Zeroizing::new);
        let Some(pem) = pem else {
            return fail(
                format!("{origin}: {secret} has no base64 private key in data.tls.key"),
                KEY_HINT,
            );
        };
        keys.extend(bitnami::keys_from_pem(&pem).map_err(|err| {
            Failure::new(format!("{origin}: {secret}: data.tls.key {err}")).with_hint(KEY_HINT)
        })?);
    }
    Ok(keys)
}

/// One file, migrated in memory.
struct Migrated {
    text: Zeroizing<String>,
    /// Bitnami SealedSecrets migrated; 0 for a file copied unchanged.
    objects: usize,
    /// Values opened and sealed again.
    values: usize,
}

fn is_bitnami(doc: &Document) -> bool {
    let field = |name: &str| doc.value.get(name).and_then(Value::as_str).unwrap_or("");
    field("kind") == "SealedSecret" && field("apiVersion").starts_with("bitnami.com/")
}

/// Migrates one file: its Bitnami SealedSecrets become Sigil's, other documents pass
/// through; a file without one is copied unchanged. In a directory (`lenient`), a file
/// that does not parse and never names Bitnami is copied unchanged too.
fn migrate_file(
    input: &Input,
    keys: &Keys,
    lenient: bool,
    notes: &mut Vec<String>,
) -> anyhow::Result<Migrated> {
    let text = document::read_input(&input.path)?;
    let source = document::source_name(&input.path);
    let unchanged = |text| Migrated {
        text,
        objects: 0,
        values: 0,
    };
    let documents = match document::parse_documents(&text, &source) {
        Ok(documents) => documents,
        Err(err) if lenient && !text.contains("bitnami.com/") => {
            notes.push(format!("{err:#}; copied unchanged"));
            return Ok(unchanged(text));
        }
        Err(err) => return Err(err),
    };
    if !documents.iter().any(is_bitnami) {
        return Ok(unchanged(text));
    }
    let mut migrated = Wiped(Vec::with_capacity(documents.len()));
    let (mut objects, mut values) = (0, 0);
    for doc in &documents {
        if is_bitnami(doc) {
            let (object, count) = migrate_object(doc, keys, notes)?;
            migrated.0.push(object);
            objects += 1;
            values += count;
        } else {
            migrated.0.push(doc.value.clone());
        }
    }
    let format = if document::looks_like_json(&text) {
        Format::Json
    } else {
        Format::Yaml
    };
    Ok(Migrated {
        text: output::render(&migrated.0, format)?,
        objects,
        values,
    })
}

/// A map field of an object: absent and null are empty.
fn object_field<'a>(
    object: &'a Map<String, Value>,
    field: &str,
    path: &str,
    origin: &Origin,
) -> anyhow::Result<Option<&'a Map<String, Value>>> {
    match object.get(field) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Object(map)) => Ok(Some(map)),
        Some(_) => fail(
            format!("{origin}: field `{path}` is not a map"),
            "restore the file as kubeseal wrote it",
        ),
    }
}

/// Annotations Sigil keeps: Bitnami's scope annotations become `spec.scope`, the
/// last-applied copies go, and any other Bitnami annotation goes with a note on what
/// Sigil does instead.
fn kept_annotations(
    mut annotations: BTreeMap<String, String>,
    path: &str,
    at: &str,
    notes: &mut Vec<String>,
) -> BTreeMap<String, String> {
    for key in LAST_APPLIED {
        annotations.remove(key);
    }
    annotations.retain(|key, _| {
        let Some(name) = key.strip_prefix(BITNAMI_ANNOTATIONS) else {
            return true;
        };
        let instead = match name {
            "namespace-wide" | "cluster-wide" => return false,
            "managed" => {
                "Sigil takes over an existing Secret annotated `sigil.dev/managed: \"true\"`"
            }
            "patch" => "Sigil writes the whole Secret: it holds exactly the SealedSecret's keys",
            "skip-set-owner-references" => {
                "Sigil owns the Secret it writes: deleting the SealedSecret deletes the Secret"
            }
            _ => "Sigil has no equivalent",
        };
        notes.push(format!("{at}: {path}.{key} is dropped: {instead}"));
        false
    });
    annotations
}

/// Notes each field of `map` that is neither `known` nor written by the server.
fn note_unknown(
    map: &Map<String, Value>,
    known: &[&str],
    path: &str,
    at: &str,
    notes: &mut Vec<String>,
) {
    for (field, value) in map {
        if !value.is_null()
            && !known.contains(&field.as_str())
            && !SERVER_FIELDS.contains(&field.as_str())
        {
            notes.push(format!(
                "{at}: {path}.{field} is not carried over: Sigil has no such field"
            ));
        }
    }
}

/// One Bitnami SealedSecret as a Sigil SealedSecret, and how many values it holds.
fn migrate_object(
    doc: &Document,
    keys: &Keys,
    notes: &mut Vec<String>,
) -> anyhow::Result<(Value, usize)> {
    let origin = &doc.origin;
    let Value::Object(object) = &doc.value else {
        unreachable!("is_bitnami checked that it is an object");
    };
    let api_version = object
        .get("apiVersion")
        .and_then(Value::as_str)
        .unwrap_or("");
    if api_version != BITNAMI_API_VERSION {
        return fail(
            format!(
                "{origin}: Bitnami SealedSecret of apiVersion {api_version}, which sigil does not read"
            ),
            format!("sigil migrate bitnami reads {BITNAMI_API_VERSION}, as kubeseal writes it"),
        );
    }
    let empty = Map::new();
    let metadata = object_field(object, "metadata", "metadata", origin)?.unwrap_or(&empty);
    let Some(name) = optional_string(metadata, "metadata.name", origin)?.filter(|n| !n.is_empty())
    else {
        return fail(
            format!("{origin}: the Bitnami SealedSecret has no metadata.name"),
            "restore metadata.name: a strict value is bound to it",
        );
    };
    let namespace =
        optional_string(metadata, "metadata.namespace", origin)?.filter(|n| !n.is_empty());
    let object_name = match &namespace {
        Some(ns) => format!("Bitnami SealedSecret {ns}/{name}"),
        None => format!("Bitnami SealedSecret {name}"),
    };
    let at = format!("{origin}: {object_name}");
    let annotations = string_map(metadata, "metadata.annotations", origin)?;
    // Bitnami's controller takes the scope from the SealedSecret's own annotations.
    let scope = bitnami::Scope::from_annotations(&annotations);
    let bound_namespace = namespace
        .clone()
        .or_else(|| keys.namespace.clone())
        .unwrap_or_default();
    if bound_namespace.is_empty() && scope != bitnami::Scope::ClusterWide {
        return fail(
            format!(
                "{at}: no metadata.namespace, and scope {scope} binds each value to its namespace"
            ),
            "pass -n NAMESPACE, the namespace it is applied to (e.g. by kustomize)",
        );
    }
    note_unknown(
        metadata,
        &["name", "namespace", "labels", "annotations"],
        "metadata",
        &at,
        notes,
    );
    let labels = string_map(metadata, "metadata.labels", origin)?;
    let annotations = kept_annotations(annotations, "metadata.annotations", &at, notes);

    let Some(spec) = object_field(object, "spec", "spec", origin)? else {
        return fail(
            format!("{at}: has no spec"),
            "restore the file as kubeseal wrote it",
        );
    };
    if spec.get("data").is_some_and(|d| !d.is_null()) {
        return fail(
            format!(
                "{at}: uses spec.data, Bitnami's deprecated single-blob format, which sigil does not open"
            ),
            "re-seal it with a kubeseal of v0.5 or later, which writes spec.encryptedData, then migrate that",
        );
    }
    note_unknown(spec, &["encryptedData", "template"], "spec", &at, notes);
    let template = migrate_template(spec, &name, namespace.as_deref(), &at, origin, notes)?;
    let encrypted = object_field(spec, "encryptedData", "spec.encryptedData", origin)?
        .filter(|map| !map.is_empty());
    let Some(encrypted) = encrypted else {
        return fail(
            format!(
                "{at}: spec.encryptedData is empty, and a Sigil SealedSecret holds at least one key"
            ),
            "add the keys with kubeseal --merge-into, or leave this object out of the migration",
        );
    };
    let label = scope.label(&bound_namespace, &name);
    let target = Target {
        name,
        namespace: bound_namespace,
        scope: scope.to_sigil(),
    };
    let mut encrypted_data = BTreeMap::new();
    // Sorted, so the first value that fails is the same on every run.
    let sorted: BTreeMap<&String, &Value> = encrypted.iter().collect();
    for (key, value) in sorted {
        check_data_key(key, "spec.encryptedData", origin)?;
        let bad_value = |what: String| -> anyhow::Error {
            Failure::new(format!("{at}, key `{key}`: {what}"))
                .with_hint(
                    "restore the value from version control, or seal it again from its source",
                )
                .into()
        };
        let raw = value
            .as_str()
            .map(|text| text.split_ascii_whitespace().collect::<String>())
            .and_then(|text| STANDARD.decode(text).ok())
            .ok_or_else(|| bad_value("the value is not valid base64".to_owned()))?;
        let plaintext = bitnami::open(&raw, &label, &keys.bitnami).map_err(|err| match err {
            bitnami::OpenError::NoKeyOpens { .. } | bitnami::OpenError::NoKeyOfSize { .. } => {
                Failure::new(format!("{at}, key `{key}`: {err}"))
                    .with_hint(format!(
                        "pass the Bitnami key that sealed it with --bitnami-key (every Secret labelled sealedsecrets.bitnami.com/sealed-secrets-key, old ones included); if the SealedSecret's namespace, name or scope annotations changed after sealing, restore them: the value is bound to them (scope {scope})"
                    ))
                    .into()
            }
            other => bad_value(other.to_string()),
        })?;
        let sealed = target
            .seal_value(key, &plaintext, &keys.recipients)
            .map_err(|err| Failure::new(format!("{at}, key `{key}`: cannot seal: {err}")))?;
        encrypted_data.insert(key.clone(), sealed);
    }
    let count = encrypted_data.len();
    let mut sealed = target.sealed_secret(encrypted_data, template);
    // The manifest names the namespace only if Bitnami's did: `-n` binds the values to
    // the namespace it is applied to, and stays out of the manifest.
    sealed.metadata.namespace = namespace;
    sealed.metadata.labels = (!labels.is_empty()).then_some(labels);
    sealed.metadata.annotations = (!annotations.is_empty()).then_some(annotations);
    Ok((serde_json::to_value(&sealed)?, count))
}

/// Bitnami's `spec.template` as Sigil's: type, immutable, labels and annotations. Data
/// templates cannot be carried over and are refused; other fields are noted.
fn migrate_template(
    spec: &Map<String, Value>,
    name: &str,
    namespace: Option<&str>,
    at: &str,
    origin: &Origin,
    notes: &mut Vec<String>,
) -> anyhow::Result<Option<SecretTemplate>> {
    let Some(template) = object_field(spec, "template", "spec.template", origin)? else {
        return Ok(None);
    };
    if let Some(data) = object_field(template, "data", "spec.template.data", origin)?
        && !data.is_empty()
    {
        let keys: Vec<&str> = data.keys().map(String::as_str).collect();
        return fail(
            format!(
                "{at}: spec.template.data renders key(s) {} from Go templates, which a Sigil SealedSecret cannot express",
                keys.join(", ")
            ),
            "render those values yourself and add them as keys (sigil seal --merge-into), then drop spec.template.data from the Bitnami file and migrate it again",
        );
    }
    note_unknown(
        template,
        &["metadata", "type", "immutable", "data"],
        "spec.template",
        at,
        notes,
    );
    let immutable = optional_bool(template, "spec.template.immutable", origin)?;
    let type_ = optional_string(template, "spec.template.type", origin)?.filter(|t| !t.is_empty());
    let empty = Map::new();
    let metadata =
        object_field(template, "metadata", "spec.template.metadata", origin)?.unwrap_or(&empty);
    // Bitnami's controller names the Secret after the SealedSecret, whatever these say.
    for (field, own) in [("name", Some(name)), ("namespace", namespace)] {
        let path = format!("spec.template.metadata.{field}");
        if let Some(value) = optional_string(metadata, &path, origin)?
            && !value.is_empty()
            && Some(value.as_str()) != own
        {
            notes.push(format!(
                "{at}: {path} `{value}` is dropped: the Secret takes the SealedSecret's, in Bitnami as in Sigil"
            ));
        }
    }
    note_unknown(
        metadata,
        &["name", "namespace", "labels", "annotations"],
        "spec.template.metadata",
        at,
        notes,
    );
    let labels = string_map(metadata, "spec.template.metadata.labels", origin)?;
    let annotations = string_map(metadata, "spec.template.metadata.annotations", origin)?;
    let annotations =
        kept_annotations(annotations, "spec.template.metadata.annotations", at, notes);
    Ok(seal::secret_template(type_, immutable, labels, annotations))
}

#[cfg(test)]
mod tests {
    use sigil_core::{Binding, Keyring, PrivateKey, Scope};
    use sigil_types::SealedSecret;

    use super::*;

    /// Fixtures written by the real kubeseal, at the version `tests/env/versions.env`
    /// pins (see tests/cmd/migrate.md).
    macro_rules! fixture {
        ($name:literal) => {
            include_str!(concat!("../tests/cmd/migrate.in/", $name))
        };
    }

    struct Setup {
        keys: Keys,
        sigil: Keyring,
    }

    fn setup() -> Setup {
        let mut bitnami = keys_in(fixture!("bitnami.key").as_bytes(), "bitnami.key").unwrap();
        bitnami.extend(keys_in(fixture!("old-keys.yaml").as_bytes(), "old-keys.yaml").unwrap());
        let sigil = PrivateKey::generate().unwrap();
        Setup {
            keys: Keys {
                bitnami,
                recipients: vec![*sigil.public_key()],
                namespace: None,
            },
            sigil: [sigil].into_iter().collect(),
        }
    }

    fn documents(text: &str, source: &str) -> Vec<Document> {
        document::parse_documents(text, source).unwrap()
    }

    /// Migrates every document of a fixture: (objects, notes).
    fn migrate(
        setup: &Setup,
        text: &str,
        source: &str,
    ) -> anyhow::Result<(Vec<Value>, Vec<String>)> {
        let mut notes = Vec::new();
        let objects = documents(text, source)
            .iter()
            .filter(|doc| is_bitnami(doc))
            .map(|doc| migrate_object(doc, &setup.keys, &mut notes).map(|(object, _)| object))
            .collect::<anyhow::Result<_>>()?;
        Ok((objects, notes))
    }

    /// The error of a migration that must fail.
    fn refused(setup: &Setup, text: &str, source: &str) -> String {
        migrate(setup, text, source).unwrap_err().to_string()
    }

    /// Opens a migrated value with the Sigil key, bound to the object's own namespace.
    fn open(setup: &Setup, object: &Value, key: &str) -> Vec<u8> {
        let namespace = object["metadata"]["namespace"].as_str().unwrap_or("");
        open_in(setup, object, namespace, key)
    }

    /// Opens a migrated value with the Sigil key, bound to `namespace`.
    fn open_in(setup: &Setup, object: &Value, namespace: &str, key: &str) -> Vec<u8> {
        let sealed: SealedSecret = serde_json::from_value(object.clone()).unwrap();
        let scope: Scope = sealed.spec.scope.into();
        let name = sealed.metadata.name.as_deref().unwrap_or("");
        let binding = Binding::new(scope, namespace, name, key).unwrap();
        sigil_core::open(&sealed.spec.encrypted_data[key], &binding, &setup.sigil)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn kubeseal_values_open_and_are_sealed_again_for_the_same_identity() {
        let setup = setup();
        let (objects, notes) = migrate(&setup, fixture!("db.yaml"), "db.yaml").unwrap();
        assert!(notes.is_empty(), "{notes:?}");
        let [db] = objects.as_slice() else {
            panic!("{objects:?}")
        };
        assert_eq!(open(&setup, db, "username"), b"admin");
        assert_eq!(open(&setup, db, "password"), b"s3cret");
        assert_eq!(db["apiVersion"], "sigil.dev/v1");
        assert_eq!(
            db["metadata"],
            serde_json::json!({"name": "db", "namespace": "prod"})
        );
        assert_eq!(db["spec"].get("scope"), None, "strict is the default");
        assert_eq!(
            db["spec"]["template"],
            serde_json::json!({
                "type": "kubernetes.io/basic-auth",
                "metadata": {"labels": {"app": "db"}, "annotations": {"team": "payments"}},
            })
        );
    }

    #[test]
    fn namespace_wide_and_cluster_wide_keep_their_reach() {
        let setup = setup();
        let (objects, _) = migrate(&setup, fixture!("shared.yaml"), "shared.yaml").unwrap();
        assert_eq!(objects[0]["spec"]["scope"], "namespace");
        assert_eq!(objects[0]["metadata"].get("annotations"), None);
        assert_eq!(open(&setup, &objects[0], "token"), b"t0ken");
        let (objects, _) = migrate(&setup, fixture!("global.yaml"), "global.yaml").unwrap();
        assert_eq!(objects[0]["spec"]["scope"], "cluster");
        assert_eq!(objects[0]["metadata"].get("namespace"), None);
        assert_eq!(
            objects[0]["spec"]["template"],
            serde_json::json!({"immutable": true})
        );
        assert_eq!(open(&setup, &objects[0], "license"), b"ABC-123");
    }

    #[test]
    fn a_value_no_key_opens_names_file_object_and_key() {
        let mut setup = setup();
        setup.keys.bitnami = keys_in(fixture!("other.key").as_bytes(), "other.key").unwrap();
        assert_eq!(
            refused(&setup, fixture!("db.yaml"), "db.yaml"),
            "db.yaml, document 1: Bitnami SealedSecret prod/db, key `password`: the --bitnami-key does not open it"
        );
    }

    #[test]
    fn an_altered_value_is_refused() {
        let setup = setup();
        assert_eq!(
            refused(&setup, fixture!("tampered.yaml"), "tampered.yaml"),
            "tampered.yaml, document 1: Bitnami SealedSecret prod/db, key `password`: the value was altered: its session key opens but its data fails authentication"
        );
    }

    #[test]
    fn a_moved_sealed_secret_does_not_open() {
        let setup = setup();
        let moved = fixture!("db.yaml").replace("namespace: prod", "namespace: staging");
        let err = refused(&setup, &moved, "moved.yaml");
        assert!(
            err.ends_with("key `password`: none of the 2 --bitnami-key keys opens it"),
            "{err}"
        );
    }

    #[test]
    fn data_templates_are_refused() {
        let setup = setup();
        assert_eq!(
            refused(&setup, fixture!("template-data.yaml"), "t.yaml"),
            "t.yaml, document 1: Bitnami SealedSecret prod/db: spec.template.data renders key(s) dsn from Go templates, which a Sigil SealedSecret cannot express"
        );
    }

    #[test]
    fn bitnami_annotations_and_unknown_fields_are_noted() {
        let setup = setup();
        let text = fixture!("db.yaml")
            .replace(
                "      annotations:\n        team: payments\n",
                "      annotations:\n        team: payments\n        sealedsecrets.bitnami.com/skip-set-owner-references: \"true\"\n      finalizers: [example.com/keep]\n",
            )
            .replace("  name: db\n  namespace: prod\nspec:", "  name: db\n  namespace: prod\n  uid: 1234\nspec:");
        let (objects, notes) = migrate(&setup, &text, "db.yaml").unwrap();
        assert_eq!(
            notes,
            [
                "db.yaml, document 1: Bitnami SealedSecret prod/db: spec.template.metadata.finalizers is not carried over: Sigil has no such field",
                "db.yaml, document 1: Bitnami SealedSecret prod/db: spec.template.metadata.annotations.sealedsecrets.bitnami.com/skip-set-owner-references is dropped: Sigil owns the Secret it writes: deleting the SealedSecret deletes the Secret",
            ]
        );
        assert_eq!(
            objects[0]["spec"]["template"]["metadata"]["annotations"],
            serde_json::json!({"team": "payments"})
        );
    }

    #[test]
    fn a_strict_object_without_namespace_needs_one() {
        let mut setup = setup();
        let text = fixture!("db.yaml").replace("  namespace: prod\nspec:", "spec:");
        assert_eq!(
            refused(&setup, &text, "db.yaml"),
            "db.yaml, document 1: Bitnami SealedSecret db: no metadata.namespace, and scope strict binds each value to its namespace"
        );
        setup.keys.namespace = Some("prod".to_owned());
        let (objects, _) = migrate(&setup, &text, "db.yaml").unwrap();
        assert_eq!(objects[0]["metadata"].get("namespace"), None);
        assert_eq!(open_in(&setup, &objects[0], "prod", "password"), b"s3cret");
    }

    #[test]
    fn key_files_are_pem_or_the_key_secrets() {
        assert_eq!(
            keys_in(fixture!("bitnami.key").as_bytes(), "k")
                .unwrap()
                .len(),
            1
        );
        assert_eq!(
            keys_in(fixture!("old-keys.yaml").as_bytes(), "k")
                .unwrap()
                .len(),
            1
        );
        let err = keys_in(fixture!("db.yaml").as_bytes(), "db.yaml").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--bitnami-key db.yaml, document 1: is not a Secret with a private key in data.tls.key"
        );
        let err = keys_in(fixture!("bitnami.crt").as_bytes(), "bitnami.crt").unwrap_err();
        assert_eq!(
            err.to_string(),
            "--bitnami-key bitnami.crt: holds no PEM private key"
        );
    }
}

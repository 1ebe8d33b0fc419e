//! Reading Kubernetes documents (YAML or JSON, several per file, `List`s flattened) and
//! the Secrets among them, with every error naming the file, document and field.

use std::collections::BTreeMap;
use std::fmt;
use std::io::{IsTerminal as _, Read};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};
use zeroize::{Zeroize, Zeroizing};

use crate::failure::{Failure, fail, io_failure};

/// Where a document came from: file (or stdin), document number, and `List` item.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    source: String,
    document: usize,
    item: Option<usize>,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}, document {}", self.source, self.document)?;
        if let Some(item) = self.item {
            write!(f, ", items[{item}]")?;
        }
        Ok(())
    }
}

/// A parsed document whose strings are wiped from memory when it is dropped, since a
/// Secret's `stringData` holds plaintext.
pub(crate) struct Document {
    pub(crate) origin: Origin,
    pub(crate) value: Value,
}

/// A SealedSecret's namespace and name, shown as `SealedSecret NAMESPACE/NAME`.
pub(crate) struct SealedName {
    pub(crate) namespace: Option<String>,
    pub(crate) name: String,
}

impl fmt::Display for SealedName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.namespace {
            Some(namespace) => write!(f, "SealedSecret {namespace}/{}", self.name),
            None => write!(f, "SealedSecret {}", self.name),
        }
    }
}

impl Document {
    /// The SealedSecret's namespace and name, once the document is known to be a valid
    /// SealedSecret; `command` names what wants one, for the hint.
    pub(crate) fn sealed_secret_name(&self, command: &str) -> anyhow::Result<SealedName> {
        let origin = &self.origin;
        let field = |name: &str| self.value.get(name).and_then(Value::as_str).unwrap_or("");
        if field("kind") != "SealedSecret" || field("apiVersion") != sigil_types::API_VERSION {
            let found = match field("kind") {
                "" => "an object without `kind`".to_owned(),
                kind => format!("a {kind} ({})", field("apiVersion")),
            };
            return fail(
                format!("{origin}: is {found}, not a SealedSecret"),
                format!(
                    "{command} takes SealedSecret manifests (apiVersion: {}) written by `sigil seal`",
                    sigil_types::API_VERSION
                ),
            );
        }
        let sealed: sigil_types::SealedSecret = serde_json::from_value(self.value.clone())
            .map_err(|err| {
                Failure::new(format!("{origin}: invalid SealedSecret: {err}"))
                    .with_hint("check spec.scope (strict, namespace or cluster) and spec.encryptedData (key: sealed value)")
            })?;
        Ok(SealedName {
            namespace: sealed.metadata.namespace,
            name: sealed.metadata.name.unwrap_or_default(),
        })
    }
}

impl Drop for Document {
    fn drop(&mut self) {
        wipe(&mut self.value);
    }
}

/// Documents holding plaintext (unsealed Secrets), wiped when dropped.
pub(crate) struct Wiped(pub(crate) Vec<Value>);

impl Drop for Wiped {
    fn drop(&mut self) {
        self.0.iter_mut().for_each(wipe);
    }
}

fn wipe(value: &mut Value) {
    match value {
        Value::String(s) => s.zeroize(),
        Value::Array(items) => items.iter_mut().for_each(wipe),
        Value::Object(map) => map.values_mut().for_each(wipe),
        _ => {}
    }
}

/// The display name of an input path (`<stdin>` for `-`).
pub(crate) fn source_name(path: &Path) -> String {
    if path == Path::new("-") {
        "<stdin>".to_owned()
    } else {
        path.display().to_string()
    }
}

/// Reads a file, or stdin for `-`, into memory that is wiped when dropped.
pub(crate) fn read_input(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    let mut text = Zeroizing::new(String::new());
    if path == Path::new("-") {
        if std::io::stdin().is_terminal() {
            return fail(
                "no input: -f is `-` (stdin), and stdin is a terminal",
                "pass -f FILE (or a directory), or pipe the manifests in, e.g. `kubectl create secret generic db --from-file=password.txt --dry-run=client -o yaml | sigil seal`",
            );
        }
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|err| io_failure("read", Path::new("stdin"), &err))?;
    } else {
        std::fs::File::open(path)
            .and_then(|mut file| file.read_to_string(&mut text))
            .map_err(|err| io_failure("read", path, &err))?;
    }
    Ok(text)
}

/// Whether text is JSON rather than YAML (judged by its first character).
pub(crate) fn looks_like_json(text: &str) -> bool {
    matches!(text.trim_start().chars().next(), Some('{' | '['))
}

/// Parses every document in `text`; empty YAML documents are skipped and `List`s are
/// flattened into their items.
pub(crate) fn parse_documents(text: &str, source: &str) -> anyhow::Result<Vec<Document>> {
    let raw: Vec<Value> = if looks_like_json(text) {
        let mut values = Vec::new();
        for value in serde_json::Deserializer::from_str(text).into_iter::<Value>() {
            // serde_json's messages give line and column, never the text itself.
            values.push(value.map_err(|err| {
                Failure::new(format!("{source}: invalid JSON: {err}"))
                    .with_hint("check the file with `jq . FILE`")
            })?);
        }
        values
    } else {
        // The default budget (1,024 documents, 250,000 nodes) guards against hostile
        // input from the network; a local file the user chose may be one large stream.
        let options = serde_saphyr::options! {
            budget: serde_saphyr::budget! {
                max_documents: usize::MAX,
                max_nodes: usize::MAX,
                max_events: usize::MAX,
            },
        };
        serde_saphyr::from_multiple_with_options::<Value>(text, options).map_err(|err| {
            // Rendered without a source snippet: the snippet could show a secret value.
            let options = serde_saphyr::render_options! {
                snippets: serde_saphyr::SnippetMode::Off,
            };
            Failure::new(format!(
                "{source}: invalid YAML: {}",
                err.render_with_options(options)
            ))
            .with_hint("check indentation and quoting around the position given")
        })?
    };
    let mut documents = Vec::new();
    for (index, value) in raw.into_iter().enumerate() {
        let origin = |item| Origin {
            source: source.to_owned(),
            document: index + 1,
            item,
        };
        match value {
            Value::Null => {}
            Value::Object(mut map) if map.get("kind") == Some(&Value::from("List")) => {
                let items = match map.remove("items") {
                    Some(Value::Array(items)) => items,
                    _ => Vec::new(),
                };
                for (item, value) in items.into_iter().enumerate() {
                    documents.push(Document {
                        origin: origin(Some(item)),
                        value,
                    });
                }
            }
            value => documents.push(Document {
                origin: origin(None),
                value,
            }),
        }
    }
    Ok(documents)
}

/// The parts of a Secret that sealing keeps. Holds plaintext: no `Debug`.
pub(crate) struct PlainSecret {
    pub(crate) origin: Origin,
    pub(crate) name: Option<String>,
    pub(crate) namespace: Option<String>,
    pub(crate) type_: Option<String>,
    pub(crate) immutable: Option<bool>,
    pub(crate) labels: BTreeMap<String, String>,
    pub(crate) annotations: BTreeMap<String, String>,
    pub(crate) data: BTreeMap<String, Zeroizing<Vec<u8>>>,
}

/// Annotations that describe an object's history on a server, not the Secret itself.
const DROPPED_ANNOTATIONS: [&str; 1] = ["kubectl.kubernetes.io/last-applied-configuration"];

/// The last segment of a field's path: its name in the object that holds it.
fn field_name(field: &str) -> &str {
    field.rsplit('.').next().unwrap_or(field)
}

/// A map of strings, such as `metadata.labels`, from the object holding it; `field` is
/// its path, for messages. Absent and null are empty.
pub(crate) fn string_map(
    object: &Map<String, Value>,
    field: &str,
    origin: &Origin,
) -> anyhow::Result<BTreeMap<String, String>> {
    let Some(map) = object.get(field_name(field)).filter(|v| !v.is_null()) else {
        return Ok(BTreeMap::new());
    };
    let Value::Object(map) = map else {
        return fail(
            format!("{origin}: field `{field}` is not a map"),
            format!("write `{field}` as `key: value` lines"),
        );
    };
    map.iter()
        .map(|(key, value)| match value {
            Value::String(s) => Ok((key.clone(), s.clone())),
            _ => fail(
                format!("{origin}: field `{field}.{key}` is not a string"),
                "quote the value, e.g. \"true\" or \"5432\"",
            ),
        })
        .collect()
}

/// A string, such as `metadata.name`, from the object holding it; `field` is its path,
/// for messages. Absent and null are `None`.
pub(crate) fn optional_string(
    object: &Map<String, Value>,
    field: &str,
    origin: &Origin,
) -> anyhow::Result<Option<String>> {
    match object.get(field_name(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(_) => fail(
            format!("{origin}: field `{field}` is not a string"),
            format!("set `{field}` to a quoted string"),
        ),
    }
}

/// A boolean, such as `immutable`, from the object holding it; `field` is its path, for
/// messages. Absent and null are `None`.
pub(crate) fn optional_bool(
    object: &Map<String, Value>,
    field: &str,
    origin: &Origin,
) -> anyhow::Result<Option<bool>> {
    match object.get(field_name(field)) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(_) => fail(
            format!("{origin}: field `{field}` is not true or false"),
            format!("write `{}: true` or remove the field", field_name(field)),
        ),
    }
}

/// Data keys Kubernetes accepts: `[-._a-zA-Z0-9]+`, at most 253 characters.
pub(crate) fn check_data_key(
    key: &str,
    field: &str,
    origin: &dyn fmt::Display,
) -> anyhow::Result<()> {
    let valid = !key.is_empty()
        && key.len() <= 253
        && key
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '.' | '_'));
    if valid {
        Ok(())
    } else {
        fail(
            format!(
                "{origin}: `{field}` has key `{}`, which Kubernetes does not accept",
                key.escape_debug()
            ),
            "data keys are 1 to 253 characters of letters, digits, `-`, `.` and `_`",
        )
    }
}

/// The top-level fields of a Secret manifest.
const SECRET_FIELDS: [&str; 7] = [
    "apiVersion",
    "kind",
    "metadata",
    "type",
    "immutable",
    "data",
    "stringData",
];

impl PlainSecret {
    /// Reads a Secret from a document, keeping only what the sealed form carries.
    pub(crate) fn from_document(doc: &Document) -> anyhow::Result<Self> {
        let origin = &doc.origin;
        let Value::Object(object) = &doc.value else {
            return fail(
                format!("{origin}: not a Kubernetes object"),
                "give a Secret manifest (apiVersion: v1, kind: Secret)",
            );
        };
        let kind = object.get("kind").and_then(Value::as_str).unwrap_or("");
        let api_version = object
            .get("apiVersion")
            .and_then(Value::as_str)
            .unwrap_or("");
        if kind != "Secret" || api_version != "v1" {
            let found = if kind.is_empty() {
                "an object without `kind`".to_owned()
            } else {
                format!("a {kind} ({api_version})")
            };
            return fail(
                format!("{origin}: is {found}, not a Secret"),
                "sigil seal takes Secret manifests (apiVersion: v1, kind: Secret); generate one with `kubectl create secret generic NAME --from-literal=KEY=VALUE --dry-run=client -o yaml`",
            );
        }
        if let Some(unknown) = object.keys().find(|k| !SECRET_FIELDS.contains(&k.as_str())) {
            let near = SECRET_FIELDS
                .iter()
                .find(|known| known.eq_ignore_ascii_case(unknown));
            return fail(
                format!("{origin}: a Secret has no field `{unknown}`"),
                match near {
                    Some(known) => {
                        format!("did you mean `{known}`? Field names are case-sensitive")
                    }
                    None => format!("a Secret's fields are {}", SECRET_FIELDS.join(", ")),
                },
            );
        }
        let empty = Map::new();
        let metadata = match object.get("metadata") {
            None | Some(Value::Null) => &empty,
            Some(Value::Object(m)) => m,
            Some(_) => {
                return fail(
                    format!("{origin}: field `metadata` is not a map"),
                    "write metadata as `name: ...` and `namespace: ...` lines",
                );
            }
        };
        let mut annotations = string_map(metadata, "metadata.annotations", origin)?;
        for dropped in DROPPED_ANNOTATIONS {
            annotations.remove(dropped);
        }
        let immutable = optional_bool(object, "immutable", origin)?;
        let mut data = BTreeMap::new();
        if let Some(encoded) = object.get("data").filter(|v| !v.is_null()) {
            let Value::Object(encoded) = encoded else {
                return fail(
                    format!("{origin}: field `data` is not a map"),
                    "write data as `key: base64-value` lines",
                );
            };
            for (key, value) in encoded {
                check_data_key(key, "data", origin)?;
                let decoded = value.as_str().and_then(|s| STANDARD.decode(s.trim()).ok());
                let Some(decoded) = decoded else {
                    return fail(
                        format!("{origin}: field `data.{key}` is not valid base64"),
                        format!(
                            "encode the value with `base64 -w0`, or move `{key}` under stringData as plain text"
                        ),
                    );
                };
                data.insert(key.clone(), Zeroizing::new(decoded));
            }
        }
        // As in Kubernetes, stringData wins over data for the same key.
        if let Some(plain) = object.get("stringData").filter(|v| !v.is_null()) {
            let Value::Object(plain) = plain else {
                return fail(
                    format!("{origin}: field `stringData` is not a map"),
                    "write stringData as `key: value` lines",
                );
            };
            for (key, value) in plain {
                check_data_key(key, "stringData", origin)?;
                let Value::String(text) = value else {
                    return fail(
                        format!("{origin}: field `stringData.{key}` is not a string"),
                        "quote the value, e.g. \"5432\" or \"true\"",
                    );
                };
                data.insert(key.clone(), Zeroizing::new(text.as_bytes().to_vec()));
            }
        }
        if data.is_empty() {
            return fail(
                format!(
                    "{origin}: the Secret has no data: `data` and `stringData` are empty or missing"
                ),
                "add at least one key under `data` (base64) or `stringData` (plain text)",
            );
        }
        Ok(Self {
            origin: origin.clone(),
            name: optional_string(metadata, "metadata.name", origin)?,
            namespace: optional_string(metadata, "metadata.namespace", origin)?,
            type_: optional_string(object, "type", origin)?,
            immutable,
            labels: string_map(metadata, "metadata.labels", origin)?,
            annotations,
            data,
        })
    }
}

/// The SealedSecret manifests of one file (or stdin).
pub(crate) struct SealedManifests {
    /// The input's name for messages.
    pub(crate) source: String,
    /// The text as read (YAML or JSON).
    pub(crate) text: Zeroizing<String>,
    /// Its documents, at least one.
    pub(crate) documents: Vec<Document>,
}

/// Reads the SealedSecret manifests of one file (or stdin), refusing an input with none.
pub(crate) fn read_sealed_manifests(path: &Path) -> anyhow::Result<SealedManifests> {
    let text = read_input(path)?;
    let source = source_name(path);
    let documents = parse_documents(&text, &source)?;
    if documents.is_empty() {
        return crate::failure::fail(
            format!("{source}: holds no document"),
            "give SealedSecret manifests written by `sigil seal`",
        );
    }
    Ok(SealedManifests {
        source,
        text,
        documents,
    })
}

/// [`manifest_files`], refusing a directory with none; `what` names the manifests it
/// should hold. Files that are not manifests are listed on stderr as skipped.
pub(crate) fn manifest_files_in(dir: &Path, what: &str) -> anyhow::Result<Vec<PathBuf>> {
    let listing = manifest_files(dir)?;
    if !listing.skipped.is_empty() {
        const SHOWN: usize = 10;
        let mut names: Vec<String> = listing
            .skipped
            .iter()
            .take(SHOWN)
            .map(|p| p.display().to_string())
            .collect();
        if listing.skipped.len() > SHOWN {
            names.push(format!("and {} more", listing.skipped.len() - SHOWN));
        }
        eprintln!(
            "note: skipped {} files under {} that are not .yaml, .yml or .json: {}",
            listing.skipped.len(),
            dir.display(),
            names.join(", ")
        );
    }
    if listing.files.is_empty() {
        return crate::failure::fail(
            format!("{} holds no .yaml, .yml or .json file", dir.display()),
            format!("point -f at the directory of {what} manifests"),
        );
    }
    Ok(listing.files)
}

/// The files under a directory, as paths relative to it, sorted.
pub(crate) struct Listing {
    /// `.yaml`, `.yml` and `.json` files.
    pub(crate) files: Vec<PathBuf>,
    /// Every other file (hidden directories such as `.git/` are not entered).
    pub(crate) skipped: Vec<PathBuf>,
}

/// Every file under a directory that holds manifests, and those skipped.
pub(crate) fn manifest_files(dir: &Path) -> anyhow::Result<Listing> {
    let mut found = Vec::new();
    let mut skipped = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(relative) = pending.pop() {
        let full = dir.join(&relative);
        let entries = std::fs::read_dir(&full).map_err(|err| io_failure("list", &full, &err))?;
        for entry in entries {
            let entry = entry.map_err(|err| io_failure("list", &full, &err))?;
            let path = relative.join(entry.file_name());
            let file_type = entry.file_type()?;
            if file_type.is_dir() {
                // `.git` and the like hold no manifests of the user's.
                if !entry.file_name().to_string_lossy().starts_with('.') {
                    pending.push(path);
                }
            } else if matches!(
                path.extension().and_then(|e| e.to_str()),
                Some("yaml" | "yml" | "json")
            ) {
                found.push(path);
            } else {
                skipped.push(path);
            }
        }
    }
    found.sort();
    skipped.sort();
    Ok(Listing {
        files: found,
        skipped,
    })
}

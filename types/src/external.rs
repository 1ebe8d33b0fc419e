//! `ExternalSecret`: a Kubernetes Secret kept in sync with keys of a secret store
//! (a `SecretStore` or `ClusterSecretStore`).
//!
//! Field names and enum spellings are those of External Secrets Operator's
//! `external-secrets.io/v1`, so that an ESO manifest moves over by changing its
//! `apiVersion` to `sigil.dev/v1`. The schema carries no defaults (they would show up as
//! GitOps diffs): the controller applies them through the helpers here.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, ResourceExt};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::TemplateMetadata;

/// How often an ExternalSecret is refreshed when `refreshInterval` is unset.
pub const DEFAULT_REFRESH_INTERVAL: Duration = Duration::from_secs(3600);

/// Go's `time.ParseDuration` syntax without a sign, or `0`: what `refreshInterval` accepts.
pub const GO_DURATION_PATTERN: &str =
    r"^(0|(([0-9]+(\.[0-9]*)?|\.[0-9]+)(ns|us|µs|μs|ms|s|m|h))+)$";

/// Keys of a Secret kept in sync with keys of a secret store.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sigil.dev",
    version = "v1",
    kind = "ExternalSecret",
    namespaced,
    shortname = "ses",
    category = "sigil",
    status = "ExternalSecretStatus",
    printcolumn = r#"{"name":"Store","type":"string","jsonPath":".spec.secretStoreRef.name"}"#,
    printcolumn = r#"{"name":"Store Kind","type":"string","priority":1,"jsonPath":".spec.secretStoreRef.kind"}"#,
    printcolumn = r#"{"name":"Refresh Interval","type":"string","jsonPath":".spec.refreshInterval"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Last Refresh","type":"date","priority":1,"jsonPath":".status.refreshTime"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretSpec {
    /// The store to read from.
    pub secret_store_ref: SecretStoreRef,
    /// How often to read the store again, as a Go duration (`1h`, `15m`, `1h30m`, `10s`);
    /// `0` reads once and never again. `1h` when unset. The annotation
    /// `sigil.dev/force-sync` asks for an immediate refresh.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "refresh_interval_schema")]
    pub refresh_interval: Option<String>,
    /// The Secret to write; a Secret named like the ExternalSecret, owned by it, when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<ExternalSecretTarget>,
    /// Secret keys, each from one remote key (or one property of it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data: Vec<ExternalSecretData>,
    /// Whole remote secrets: every property of each becomes a Secret key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub data_from: Vec<ExternalSecretDataFrom>,
    /// When the store is read again: `Periodic` (every `refreshInterval`, the default),
    /// `OnChange` (when the spec changes or on `sigil.dev/force-sync`) or `CreatedOnce`
    /// (once; later hand edits of the Secret stay).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_policy: Option<RefreshPolicy>,
}

/// When an ExternalSecret reads its store again.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum RefreshPolicy {
    /// Every `refreshInterval`, and whenever the spec or `sigil.dev/force-sync` changes.
    #[default]
    Periodic,
    /// Only when the spec or `sigil.dev/force-sync` changes.
    OnChange,
    /// Once: the Secret written is left as it is afterwards, edits included.
    CreatedOnce,
}

impl ExternalSecretSpec {
    /// The refresh policy; `Periodic` when unset.
    pub fn refresh_policy_or_default(&self) -> RefreshPolicy {
        self.refresh_policy.unwrap_or_default()
    }
}

/// A Secret's name as the API server accepts it, refused at apply time with a message
/// rather than at the first write.
fn secret_name_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 253,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches(r'{DNS_SUBDOMAIN_PATTERN}')"),
            "message": "target.name must be a Secret name: lowercase letters, digits, `-` and `.`, starting and ending with a letter or digit"
        }]
    })
}

/// A DNS-1123 subdomain (see [`crate::is_object_name`]).
const DNS_SUBDOMAIN_PATTERN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?([.][a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

fn refresh_interval_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 64,
        "pattern": GO_DURATION_PATTERN,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches(r'{GO_DURATION_PATTERN}')"),
            "message": "refreshInterval must be a Go duration such as `1h`, `15m` or `1h30m`, or `0` to sync once"
        }]
    })
}

impl ExternalSecretSpec {
    /// How often to refresh: `Ok(None)` means sync once (`refreshInterval: "0"` or any
    /// zero duration); one hour when unset.
    pub fn refresh_interval_duration(&self) -> Result<Option<Duration>, String> {
        let Some(text) = self.refresh_interval.as_deref() else {
            return Ok(Some(DEFAULT_REFRESH_INTERVAL));
        };
        let duration = parse_go_duration(text).map_err(|why| {
            format!(
                "spec.refreshInterval `{text}` is not a duration ({why}); write a Go duration such as `1h`, `15m` or `1h30m`, or `0` to sync once"
            )
        })?;
        Ok((!duration.is_zero()).then_some(duration))
    }

    /// The target's creation policy; `Owner` when unset.
    pub fn creation_policy(&self) -> CreationPolicy {
        self.target
            .as_ref()
            .and_then(|t| t.creation_policy)
            .unwrap_or_default()
    }

    /// The target's deletion policy; `Retain` when unset.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.target
            .as_ref()
            .and_then(|t| t.deletion_policy)
            .unwrap_or_default()
    }
}

impl ExternalSecret {
    /// The name of the Secret to write: `spec.target.name`, or the ExternalSecret's own.
    pub fn target_name(&self) -> String {
        self.spec
            .target
            .as_ref()
            .and_then(|t| t.name.clone())
            .unwrap_or_else(|| self.name_any())
    }

    /// The target's creation policy; `Owner` when unset.
    pub fn creation_policy(&self) -> CreationPolicy {
        self.spec.creation_policy()
    }

    /// The target's deletion policy; `Retain` when unset.
    pub fn deletion_policy(&self) -> DeletionPolicy {
        self.spec.deletion_policy()
    }
}

/// Parses Go's `time.ParseDuration` syntax (without a sign): `0`, or a sequence of
/// decimal numbers each with a unit, `ns`, `us` (or `µs`), `ms`, `s`, `m`, `h`, such as
/// `300ms`, `1.5h` or `2h45m`. The error says what is wrong, not where (the caller knows).
pub fn parse_go_duration(text: &str) -> Result<Duration, String> {
    const MAX_NANOS: u128 = i64::MAX as u128; // Go's limit, about 290 years
    if text == "0" {
        return Ok(Duration::ZERO);
    }
    if text.is_empty() {
        return Err("it is empty".to_owned());
    }
    if text.starts_with(['-', '+']) {
        return Err("it has a sign; an interval is never negative".to_owned());
    }
    let mut rest = text;
    let mut total: u128 = 0;
    while !rest.is_empty() {
        let int_len = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let (int_digits, after) = rest.split_at(int_len);
        let (frac_digits, after) = match after.strip_prefix('.') {
            Some(after) => {
                let len = after
                    .find(|c: char| !c.is_ascii_digit())
                    .unwrap_or(after.len());
                after.split_at(len)
            }
            None => ("", after),
        };
        if int_digits.is_empty() && frac_digits.is_empty() {
            return Err(format!("expected a number at `{rest}`"));
        }
        let unit_len = after
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(after.len());
        let (unit, after) = after.split_at(unit_len);
        let per_unit: u128 = match unit {
            "ns" => 1,
            "us" | "µs" | "μs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" => 60 * 1_000_000_000,
            "h" => 3600 * 1_000_000_000,
            "" => {
                return Err(format!(
                    "`{int_digits}{frac_digits}` has no unit (ns, us, ms, s, m, h)"
                ));
            }
            other => {
                return Err(format!("unknown unit `{other}`; use ns, us, ms, s, m or h"));
            }
        };
        let too_long = || "it is longer than Go's limit of about 290 years".to_owned();
        let whole: u128 = if int_digits.is_empty() {
            0
        } else {
            int_digits.parse().map_err(|_| too_long())?
        };
        let mut nanos = whole.checked_mul(per_unit).ok_or_else(too_long)?;
        // Fractions finer than a nanosecond are dropped, as Go does.
        let mut scale = per_unit;
        for digit in frac_digits.bytes() {
            if scale < 10 {
                break;
            }
            scale /= 10;
            nanos += u128::from(digit - b'0') * scale;
        }
        total = total.checked_add(nanos).ok_or_else(too_long)?;
        if total > MAX_NANOS {
            return Err(too_long());
        }
        rest = after;
    }
    let secs = u64::try_from(total / 1_000_000_000).map_err(|_| "too long".to_owned())?;
    // The remainder is below 1e9, so it fits.
    let nanos = u32::try_from(total % 1_000_000_000).unwrap_or(0);
    Ok(Duration::new(secs, nanos))
}

/// Which store an ExternalSecret reads from.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretStoreRef {
    /// The store's name.
    #[schemars(length(min = 1))]
    pub name: String,
    /// `SecretStore` (in the ExternalSecret's namespace) or `ClusterSecretStore`;
    /// `SecretStore` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<StoreKind>,
}

impl SecretStoreRef {
    /// The store's kind; `SecretStore` when unset.
    pub fn kind_or_default(&self) -> StoreKind {
        self.kind.unwrap_or_default()
    }
}

/// The kinds of store an ExternalSecret may read from.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum StoreKind {
    /// A SecretStore in the ExternalSecret's namespace.
    #[default]
    SecretStore,
    /// A ClusterSecretStore whose conditions allow the ExternalSecret's namespace.
    ClusterSecretStore,
}

impl StoreKind {
    /// The kind's name, as in `secretStoreRef.kind`.
    pub fn as_str(self) -> &'static str {
        match self {
            StoreKind::SecretStore => "SecretStore",
            StoreKind::ClusterSecretStore => "ClusterSecretStore",
        }
    }
}

/// The Secret an ExternalSecret writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTarget {
    /// The Secret's name; the ExternalSecret's name when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "secret_name_schema")]
    pub name: Option<String>,
    /// Who owns the Secret; `Owner` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub creation_policy: Option<CreationPolicy>,
    /// What happens to the Secret's data when the remote secret is gone; `Retain` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_policy: Option<DeletionPolicy>,
    /// Whether the Secret is immutable; `false` when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub immutable: Option<bool>,
    /// The Secret's type, labels, annotations and templated data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template: Option<ExternalSecretTemplate>,
}

/// Who owns the Secret an ExternalSecret writes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum CreationPolicy {
    /// Sigil creates the Secret and owns it: it is deleted with the ExternalSecret.
    #[default]
    Owner,
    /// Sigil writes its keys into an existing Secret (it waits until the Secret exists)
    /// and leaves its other keys alone.
    Merge,
    /// Sigil creates the Secret but does not own it: it outlives the ExternalSecret.
    Orphan,
}

/// What happens to the Secret's data when the remote secret is gone.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum DeletionPolicy {
    /// Keep the last data that was read.
    #[default]
    Retain,
    /// Delete the Secret (or, with creation policy `Merge`, Sigil's keys in it).
    Delete,
}

/// How the Secret looks: its type, labels and annotations, and data built from Go
/// templates over the values read.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretTemplate {
    /// The Secret's `type`; `Opaque` when unset.
    #[serde(default, rename = "type", skip_serializing_if = "Option::is_none")]
    pub type_: Option<String>,
    /// ESO compatibility: the template engine; only `v2` is supported, and it is what an
    /// unset field means.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "engine_version_schema")]
    pub engine_version: Option<String>,
    /// Labels and annotations of the Secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metadata: Option<TemplateMetadata>,
    /// Secret key → Go template over the values read, e.g.
    /// `postgres://{{ .user }}:{{ .password }}@db:5432/app`. When set, only these keys
    /// are written (the values read are the templates' input).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub data: BTreeMap<String, String>,
    /// Templates kept in a ConfigMap or Secret of the ExternalSecret's namespace, or
    /// given literally; `data` wins on equal keys.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub template_from: Vec<TemplateFrom>,
    /// `Replace` (the default): only the templates' keys are written; `Merge`: the values
    /// read are written too, the templates' keys winning.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub merge_policy: Option<TemplateMergePolicy>,
}

/// Whether the values read are written beside the templates' keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum TemplateMergePolicy {
    /// Only the templates' keys.
    #[default]
    Replace,
    /// The values read, then the templates' keys over them.
    Merge,
}

/// Templates from a ConfigMap, a Secret or a literal.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateFrom {
    /// A ConfigMap of the ExternalSecret's namespace and the keys of it that are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub config_map: Option<TemplateSource>,
    /// A Secret of the ExternalSecret's namespace and the keys of it that are templates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<TemplateSource>,
    /// A template whose output is YAML `key: value` lines, each a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub literal: Option<String>,
    /// Where the output goes: `Data` (the default), `Labels` or `Annotations`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<TemplateTarget>,
}

/// An object holding templates.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct TemplateSource {
    /// Its name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The keys that are templates.
    #[schemars(length(min = 1))]
    pub items: Vec<TemplateItem>,
}

/// One template key of a ConfigMap or Secret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TemplateItem {
    /// The key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
    /// `Values` (the default): the output is the value of a Secret key of this name;
    /// `KeysAndValues`: the output is YAML `key: value` lines, each a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_as: Option<TemplateScope>,
}

/// What a template's output is.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum TemplateScope {
    /// One value.
    #[default]
    Values,
    /// YAML `key: value` lines.
    KeysAndValues,
}

/// Where a template's output goes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum TemplateTarget {
    /// The Secret's data.
    #[default]
    Data,
    /// The Secret's labels.
    Labels,
    /// The Secret's annotations.
    Annotations,
}

fn engine_version_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "enum": ["v2"]
    })
}

/// One Secret key, read from one remote key.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretData {
    /// The key in the Secret.
    #[schemars(length(min = 1))]
    pub secret_key: String,
    /// Where its value comes from.
    pub remote_ref: RemoteRef,
}

/// A value in the store: a remote key, optionally one property (JSON field) of it, at
/// an optional version.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RemoteRef {
    /// The remote key: the Vault path below the mount, or the AWS secret name or ARN.
    #[schemars(length(min = 1))]
    pub key: String,
    /// A property of the remote secret (a Vault KV field, or a JSON field of an AWS
    /// secret); the whole value when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// A version: the Vault KV version number, or the AWS VersionId (or a staging label
    /// such as `AWSPREVIOUS`); the current version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// How the value is decoded (unset: as it is).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
}

/// Remote secrets copied whole: one (`extract`), or every one a `find` matches; their
/// keys renamed by `rewrite`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.extract) != has(self.find)",
        "message": "each dataFrom entry needs exactly one of `extract` (one remote key) or `find` (every key a path, name or tags match); ESO's `sourceRef` generators are not supported"
    }
]))]
pub struct ExternalSecretDataFrom {
    /// One remote secret, every property of which becomes a Secret key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extract: Option<ExtractRef>,
    /// Every remote secret whose name (and tags) match: each becomes one Secret key, its
    /// name the remote key's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub find: Option<FindRef>,
    /// Renames of the keys this entry yields, applied in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub rewrite: Vec<Rewrite>,
}

/// Which remote secrets a `find` copies. `name` and `tags` together must both match
/// (ESO v0.20 lets `name` win and ignores `tags`).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.name) || has(self.tags) || has(self.path)",
        "message": "find needs `name.regexp`, `tags` or `path`: a find of everything in the store is refused"
    }
]))]
pub struct FindRef {
    /// Only remote keys under this path (Vault: below the mount; AWS: a name prefix).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 1024))]
    pub path: Option<String>,
    /// A regular expression (RE2 syntax, unanchored) the remote key must match.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<FindName>,
    /// Tags every found secret must carry with these values (Vault: `custom_metadata`).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// How key names become Secret keys: `Default` replaces every character a Secret
    /// key cannot hold with `_`; `Unicode` with `_U<hex>_`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    /// How the values are decoded (`None`, `Base64`, `Base64URL`, `Auto`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
}

/// The regular expression of a `find`.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct FindName {
    /// RE2 syntax; matched anywhere in the remote key unless anchored.
    #[schemars(length(min = 1, max = 1024))]
    pub regexp: String,
}

/// How remote key names become Secret keys.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum ConversionStrategy {
    /// Every character but letters, digits, `-`, `.` and `_` becomes `_`.
    #[default]
    Default,
    /// Every such character becomes `_U<4 lowercase hex digits>_`.
    Unicode,
}

/// How values are decoded before they are written.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum DecodingStrategy {
    /// As they are.
    #[default]
    None,
    /// Standard base64 (padded).
    Base64,
    /// URL-safe base64 (padded).
    #[serde(rename = "Base64URL")]
    Base64Url,
    /// Base64, else URL-safe base64, else as they are.
    Auto,
}

/// One rename of the keys a `dataFrom` entry yields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {
        "rule": "has(self.regexp) != has(self.transform)",
        "message": "each rewrite needs exactly one of `regexp` or `transform` (ESO's `merge` is not supported)"
    }
]))]
pub struct Rewrite {
    /// Replace what `source` matches in each key with `target` (`$1`, `${name}` expand).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub regexp: Option<RewriteRegexp>,
    /// A Go template over `.value`, the key, whose output is the new key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub transform: Option<RewriteTransform>,
}

/// A regular-expression rename.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RewriteRegexp {
    /// RE2 syntax.
    #[schemars(length(min = 1, max = 1024))]
    pub source: String,
    /// The replacement; `$1` or `${name}` stand for groups.
    pub target: String,
}

/// A template rename.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RewriteTransform {
    /// A Go template, e.g. `{{ .value | upper }}`.
    #[schemars(length(min = 1, max = 4096))]
    pub template: String,
}

/// A whole remote secret to copy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExtractRef {
    /// The remote key: the Vault path below the mount, or the AWS secret name or ARN.
    #[schemars(length(min = 1))]
    pub key: String,
    /// A version, as in `remoteRef.version`; the current version when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// A property holding a JSON object to copy instead of the whole secret.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// How the property names become Secret keys (unset: as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub conversion_strategy: Option<ConversionStrategy>,
    /// How the values are decoded (unset: as they are).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub decoding_strategy: Option<DecodingStrategy>,
}

/// What the controller last did with an ExternalSecret.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct ExternalSecretStatus {
    /// The generation the status describes; 0 (filled in by the API server) until the
    /// controller first reports, so that kstatus, Flux and Argo CD see work to be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// When the store was last read successfully.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_time: Option<Time>,
    /// Remote key → the version synced (AWS VersionId, or Vault KV version number).
    /// Never a value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub synced_versions: BTreeMap<String, String>,
    /// ESO compatibility: the Secret written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<SecretBinding>,
    /// What the last sync acted on: `<generation>/<sigil.dev/force-sync value>`. An
    /// `OnChange` or `CreatedOnce` ExternalSecret that finds it current (after a restart)
    /// reads nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub synced_resource_version: Option<String>,
    /// Conditions: `Ready` says whether the Secret holds what the store holds;
    /// `Stalled` is present (True) while syncing fails (a failed read is retried), and
    /// `Reconciling` while the store it names does not exist yet.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The Secret an ExternalSecret wrote.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SecretBinding {
    /// The Secret's name.
    pub name: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn go_durations_parse() {
        for (text, want) in [
            ("0", Duration::ZERO),
            ("0s", Duration::ZERO),
            ("10s", secs(10)),
            ("15m", secs(900)),
            ("1h", secs(3600)),
            ("1h30m", secs(5400)),
            ("1h30m0s", secs(5400)),
            ("1.5h", secs(5400)),
            (".5m", secs(30)),
            ("1.m", secs(60)),
            ("300ms", Duration::from_millis(300)),
            ("1500us", Duration::from_micros(1500)),
            ("2µs", Duration::from_micros(2)),
            ("2μs", Duration::from_micros(2)),
            ("7ns", Duration::from_nanos(7)),
            ("1.000000001s", Duration::new(1, 1)),
            ("1.0000000019s", Duration::new(1, 1)),
            ("2562047h", secs(2_562_047 * 3600)),
        ] {
            assert_eq!(parse_go_duration(text), Ok(want), "{text}");
        }
    }

    #[test]
    fn bad_go_durations_say_why() {
        for (text, why) in [
            ("", "empty"),
            ("soon", "expected a number"),
            ("1", "no unit"),
            ("1h30", "no unit"),
            ("1d", "unknown unit `d`"),
            ("-1h", "sign"),
            ("+1h", "sign"),
            (".", "expected a number"),
            ("1h.m", "expected a number"),
            ("3000000h", "290 years"),
            ("99999999999999999999999999999999999999999h", "290 years"),
        ] {
            let err = parse_go_duration(text).unwrap_err();
            assert!(err.contains(why), "{text}: {err}");
        }
    }

    fn spec(refresh: Option<&str>) -> ExternalSecretSpec {
        ExternalSecretSpec {
            refresh_interval: refresh.map(str::to_owned),
            ..ExternalSecretSpec::default()
        }
    }

    #[test]
    fn refresh_interval_defaults_and_sync_once() {
        assert_eq!(spec(None).refresh_interval_duration(), Ok(Some(secs(3600))));
        assert_eq!(spec(Some("0")).refresh_interval_duration(), Ok(None));
        assert_eq!(spec(Some("0m")).refresh_interval_duration(), Ok(None));
        assert_eq!(
            spec(Some("15m")).refresh_interval_duration(),
            Ok(Some(secs(900)))
        );
        let err = spec(Some("soon")).refresh_interval_duration().unwrap_err();
        assert!(err.contains("spec.refreshInterval `soon`"), "{err}");
        assert!(err.contains("such as `1h`"), "{err}");
    }

    #[test]
    fn target_defaults() {
        let mut es = ExternalSecret::new("db", spec(None));
        assert_eq!(es.target_name(), "db");
        assert_eq!(es.creation_policy(), CreationPolicy::Owner);
        assert_eq!(es.deletion_policy(), DeletionPolicy::Retain);
        es.spec.target = Some(ExternalSecretTarget {
            name: Some("other".to_owned()),
            creation_policy: Some(CreationPolicy::Merge),
            deletion_policy: Some(DeletionPolicy::Delete),
            ..ExternalSecretTarget::default()
        });
        assert_eq!(es.target_name(), "other");
        assert_eq!(es.creation_policy(), CreationPolicy::Merge);
        assert_eq!(es.deletion_policy(), DeletionPolicy::Delete);
        assert_eq!(es.spec.creation_policy(), CreationPolicy::Merge);
    }

    #[test]
    fn store_ref_kind_defaults_to_secret_store() {
        let mut r = SecretStoreRef {
            name: "s".to_owned(),
            kind: None,
        };
        assert_eq!(r.kind_or_default(), StoreKind::SecretStore);
        r.kind = Some(StoreKind::ClusterSecretStore);
        assert_eq!(r.kind_or_default().as_str(), "ClusterSecretStore");
    }

    #[test]
    fn eso_spellings_round_trip() {
        let json = serde_json::json!({
            "secretStoreRef": {"name": "vault", "kind": "ClusterSecretStore"},
            "refreshInterval": "1h",
            "target": {
                "name": "app",
                "creationPolicy": "Orphan",
                "deletionPolicy": "Delete",
                "template": {"engineVersion": "v2", "type": "Opaque",
                             "data": {"URL": "{{ .user }}"}}
            },
            "data": [{"secretKey": "user", "remoteRef": {"key": "app/db", "property": "user", "version": "3"}}],
            "dataFrom": [{"extract": {"key": "app/flags"}}]
        });
        let spec: ExternalSecretSpec = serde_json::from_value(json.clone()).unwrap();
        assert_eq!(serde_json::to_value(&spec).unwrap(), json);
        assert!(serde_json::from_value::<CreationPolicy>(serde_json::json!("None")).is_err());
    }
}

//! `Rotation`: replace a credential now. The controller writes a new value to the
//! store behind an ExternalSecret (or makes a new sealing key), refreshes every Secret
//! that mirrors it and restarts the workloads that read it, recording each step in
//! status before it takes the next, so that a controller killed midway resumes and
//! never writes twice.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Length of a generated value when `generate.length` is unset.
pub const DEFAULT_LENGTH: u32 = 32;
/// Symbols a generated value draws from when `generate.symbolCharacters` is unset: only
/// those a URL (RFC 3986 "unreserved"), a shell word, a connection string and a YAML
/// plain scalar all take as they are, since a rotated password lands in
/// `postgres://user:<password>@host` templates and `.env` files unquoted.
pub const DEFAULT_SYMBOLS: &str = "-_.";

/// A request to rotate one credential now.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sigil.dev",
    version = "v1",
    kind = "Rotation",
    namespaced,
    shortname = "rot",
    category = "sigil",
    status = "RotationStatus",
    printcolumn = r#"{"name":"Target","type":"string","jsonPath":".spec.externalSecretRef.name"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Version","type":"string","jsonPath":".status.newVersion"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Requested By","type":"string","priority":1,"jsonPath":".spec.requestedBy"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "has(self.externalSecretRef) != has(self.sealingKey)",
     "message": "set exactly one target: spec.externalSecretRef (a remote key behind an ExternalSecret) or spec.sealingKey: {}"},
    {"rule": "!has(self.sealingKey) || !has(self.generate)",
     "message": "spec.generate applies to spec.externalSecretRef only: a sealing key is made by the controller"},
    {"rule": "!has(self.value) || !has(self.generate)",
     "message": "set spec.generate or spec.value, not both: spec.value is the new value itself"},
    {"rule": "!has(self.value) || (has(self.externalSecretRef) && has(self.externalSecretRef.secretKey))",
     "message": "spec.value is sealed for one key of an ExternalSecret: set spec.externalSecretRef.secretKey (sigil rotate --key)"},
    {"rule": "self == oldSelf",
     "message": "a Rotation cannot be changed once created: create a new Rotation instead"}
]))]
#[serde(rename_all = "camelCase")]
pub struct RotationSpec {
    /// Rotate the remote key an ExternalSecret in this namespace reads.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_secret_ref: Option<ExternalSecretRef>,
    /// Rotate the cluster's sealing key: a new active key now.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sealing_key: Option<SealingKeyTarget>,
    /// How to make the new value (unset: 32 characters of letters, digits and symbols).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<Generate>,
    /// The new value itself, supplied by a person (a re-issued vendor key), sealed to the
    /// cluster for this namespace, ExternalSecret and `secretKey` as a rotation value
    /// (`sigil rotate --value-from-file`): only the controller opens it, and no
    /// SealedSecret ciphertext opens as one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 12288))]
    pub value: Option<String>,
    /// Whether to restart the Deployments, StatefulSets and DaemonSets that consume the
    /// refreshed Secrets (unset: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restart: Option<bool>,
    /// Why, for the record (e.g. an incident number).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 1024))]
    pub reason: Option<String>,
    /// Who asked: set by sigil-api from the caller's identity (unset: `kubectl`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub requested_by: Option<String>,
    /// Compute and record what would change, and change nothing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dry_run: Option<bool>,
}

/// Which remote key to rotate: the one an ExternalSecret reads.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ExternalSecretRef {
    /// The ExternalSecret's name (same namespace as the Rotation).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Which of its `data[].secretKey` entries; needed when it reads more than one
    /// remote key or property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

/// The cluster's sealing key as a target; no fields.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct SealingKeyTarget {}

/// How a new value is generated: random characters from the chosen classes. Letters
/// are always included.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Generate {
    /// Characters (unset: 32).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 8, max = 4096))]
    pub length: Option<u32>,
    /// Whether to include digits (unset: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub digits: Option<bool>,
    /// Whether to include symbols (unset: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbols: Option<bool>,
    /// The symbols to draw from (unset: `-_.`, which URLs and shells take unquoted).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 128))]
    pub symbol_characters: Option<String>,
}

impl Generate {
    /// The length asked for, or the default.
    pub fn length_or_default(&self) -> u32 {
        self.length.unwrap_or(DEFAULT_LENGTH)
    }

    /// The alphabet a value is drawn from: letters, then digits and symbols as asked,
    /// without repeats.
    pub fn alphabet(&self) -> Vec<char> {
        let mut chars: Vec<char> = ('a'..='z').chain('A'..='Z').collect();
        if self.digits.unwrap_or(true) {
            chars.extend('0'..='9');
        }
        if self.symbols.unwrap_or(true) {
            let symbols = self.symbol_characters.as_deref().unwrap_or(DEFAULT_SYMBOLS);
            for c in symbols.chars() {
                if !c.is_control() && !c.is_whitespace() && !chars.contains(&c) {
                    chars.push(c);
                }
            }
        }
        chars
    }
}

impl RotationSpec {
    /// Whether consuming workloads are restarted.
    pub fn restart_or_default(&self) -> bool {
        self.restart.unwrap_or(true)
    }

    /// Whether this is a dry run.
    pub fn is_dry_run(&self) -> bool {
        self.dry_run.unwrap_or(false)
    }

    /// Who asked, for the audit record.
    pub fn requested_by_or_default(&self) -> &str {
        self.requested_by.as_deref().unwrap_or("kubectl")
    }
}

/// Where a Rotation is. The order is the order of the steps; `Failed` can follow any
/// step.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
pub enum RotationPhase {
    /// Accepted; the target is being resolved or waits for another Rotation of it.
    #[default]
    Pending,
    /// The new value is written to the store, not yet current (AWS: `AWSPENDING`;
    /// Vault: a new KV version, which Sigil's mirrors do not read until `promote`).
    Staged,
    /// The policy's target (a database role, a webhook) accepts the new credential.
    Set,
    /// The new credential logged in.
    Tested,
    /// The new value is the current one (AWS: `AWSCURRENT`).
    Promoted,
    /// Every Secret that mirrors the remote key holds the new version.
    Propagated,
    /// Every consuming workload was rolled.
    Restarted,
    /// Every rolled workload finished its rollout (as `kubectl rollout status` judges it).
    RolledOut,
    /// The leaked credential no longer works and its sessions are ended.
    Retired,
    /// Done.
    Completed,
    /// Stopped; `Ready` says why. Nothing more is written.
    Failed,
}

impl RotationPhase {
    /// The phase's name as written in status.
    pub fn as_str(self) -> &'static str {
        match self {
            RotationPhase::Pending => "Pending",
            RotationPhase::Staged => "Staged",
            RotationPhase::Set => "Set",
            RotationPhase::Tested => "Tested",
            RotationPhase::Promoted => "Promoted",
            RotationPhase::Propagated => "Propagated",
            RotationPhase::Restarted => "Restarted",
            RotationPhase::RolledOut => "RolledOut",
            RotationPhase::Retired => "Retired",
            RotationPhase::Completed => "Completed",
            RotationPhase::Failed => "Failed",
        }
    }

    /// Whether nothing more will happen.
    pub fn is_final(self) -> bool {
        matches!(self, RotationPhase::Completed | RotationPhase::Failed)
    }
}

/// What a Rotation found, did and is doing. Never holds a value.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct RotationStatus {
    /// The generation acted on; 0 (filled in by the API server) until the controller
    /// first reports, so that kstatus, Flux and Argo CD see work to be done.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Where the Rotation is.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<RotationPhase>,
    /// The remote key, resolved from the ExternalSecret when the Rotation started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<RotationTarget>,
    /// The RotationPolicy followed (`set`, `test` and `retire` are its target's).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub policy: Option<String>,
    /// What was set, tested and retired where the credential is checked.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credential: Option<CredentialStatus>,
    /// The version current before the rotation (KV version, AWS VersionId, or the
    /// active sealing key ID).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_version: Option<String>,
    /// The version this Rotation wrote.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub new_version: Option<String>,
    /// Each step taken, in order, with its times.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub steps: Vec<RotationStep>,
    /// ExternalSecrets (`namespace/name`) refreshed to the new version (dry run: that
    /// would be).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub external_secrets: Vec<String>,
    /// Secrets (`namespace/name`) that hold the new version (dry run: that would).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// Workloads rolled (dry run: that would be).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub workloads: Vec<WorkloadRef>,
    /// Sealing-key Rotations: how many SealedSecrets still use each key.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub sealing_keys: Vec<SealingKeyUse>,
    /// `Ready`: True when Completed, False with the reason otherwise; `Reconciling`
    /// (True) while a step is under way or waits, `Stalled` (True) once Failed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

/// The remote key a Rotation writes.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationTarget {
    /// `vault` or `aws`.
    pub provider: String,
    /// The store used to write (`SecretStore/<namespace>/<name>` or
    /// `ClusterSecretStore/<name>`).
    pub store: String,
    /// The server: Vault address and mount, or AWS region and endpoint.
    pub server: String,
    /// The remote key.
    pub key: String,
    /// The JSON property written, keeping every other property.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub property: Option<String>,
    /// With a policy: the JSON property holding the role name, written in the same
    /// version as the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username_property: Option<String>,
}

/// Where the credential is checked, and what this Rotation did there. Never holds a
/// password.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialStatus {
    /// `postgres host:port/database` or the webhook's URL.
    pub target: String,
    /// `AlternatingUsers` or `SingleUser` (PostgreSQL).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The role in use before the Rotation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub previous_username: Option<String>,
    /// The role the new version names, whose password `set` changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub username: Option<String>,
    /// When `set` changed the password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub set_at: Option<Time>,
    /// SingleUser: how long mirrors held the refused old password (from `set` until
    /// every mirror held the new one), e.g. `1.2s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mirrors_refused_for: Option<String>,
    /// What `retire` made useless, e.g. `password of role app replaced by one nobody
    /// holds`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub retired: Vec<String>,
    /// Sessions of the retired credential that `retire` ended.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sessions_terminated: Option<u32>,
}

/// One step of a Rotation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RotationStep {
    /// `resolve`, `stage`, `set`, `test`, `promote`, `propagate`, `restart`,
    /// `await-rollout`, `retire` or `complete`.
    pub name: String,
    /// When it began.
    pub started_at: Time,
    /// When it ended; unset while under way.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Time>,
    /// What it found or did, briefly.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A workload a Rotation restarted.
#[derive(
    Clone, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, JsonSchema,
)]
#[serde(rename_all = "camelCase")]
pub struct WorkloadRef {
    /// `Deployment`, `StatefulSet` or `DaemonSet`.
    pub kind: String,
    /// Its namespace.
    pub namespace: String,
    /// Its name.
    pub name: String,
}

/// How many SealedSecrets use one sealing key.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SealingKeyUse {
    /// The key's ID.
    pub key_id: String,
    /// Whether it is the active key (the one `sigil seal` uses now).
    pub active: bool,
    /// SealedSecrets with at least one value sealed to it.
    pub sealed_secrets: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alphabet_follows_the_classes_asked_for() {
        let all = Generate::default().alphabet();
        assert!(all.contains(&'a') && all.contains(&'7') && all.contains(&'-'));
        let letters = Generate {
            digits: Some(false),
            symbols: Some(false),
            ..Generate::default()
        }
        .alphabet();
        assert_eq!(letters.len(), 52);
        let custom = Generate {
            digits: Some(false),
            symbol_characters: Some("-_- \t".to_owned()),
            ..Generate::default()
        }
        .alphabet();
        assert_eq!(custom.len(), 54, "repeats and whitespace are dropped");
        assert_eq!(Generate::default().length_or_default(), 32);
    }

    #[test]
    fn default_values_need_no_quoting_in_a_url_or_a_shell() {
        let unreserved = |c: &char| c.is_ascii_alphanumeric() || "-._~".contains(*c);
        let shell_special = |c: &char| "|&;<>()$`\\\"' \t*?[#~=%!{}".contains(*c);
        for c in Generate::default().alphabet() {
            assert!(unreserved(&c), "`{c}` must be percent-encoded in a URL");
            assert!(!shell_special(&c), "`{c}` means something to a shell");
        }
    }

    #[test]
    fn defaults_and_phase_names() {
        let spec = RotationSpec::default();
        assert!(spec.restart_or_default());
        assert!(!spec.is_dry_run());
        assert_eq!(spec.requested_by_or_default(), "kubectl");
        assert!(RotationPhase::Staged < RotationPhase::Promoted);
        assert!(RotationPhase::Restarted < RotationPhase::RolledOut);
        assert!(RotationPhase::RolledOut < RotationPhase::Completed);
        assert!(RotationPhase::Failed.is_final() && !RotationPhase::Restarted.is_final());
        assert_eq!(
            serde_json::to_value(RotationPhase::Propagated).unwrap(),
            "Propagated"
        );
    }
}

//! `RotationPolicy`: how one ExternalSecret's credential is rotated, said once ahead of
//! an incident, so that a runbook needs only the ExternalSecret's name. It names where
//! the credential is checked (a PostgreSQL server, or a webhook for anything else), and
//! may ask the controller to rotate on a schedule.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::external::GO_DURATION_PATTERN;
use crate::rotation::Generate;

/// PostgreSQL's port when `postgres.port` is unset.
pub const DEFAULT_POSTGRES_PORT: u16 = 5432;
/// The JSON property of the remote value holding the role name, when unset.
pub const DEFAULT_USERNAME_PROPERTY: &str = "username";
/// The JSON property of the remote value holding the password, when unset.
pub const DEFAULT_PASSWORD_PROPERTY: &str = "password";

/// How the credential an ExternalSecret reads is rotated.
#[derive(CustomResource, Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[kube(
    group = "sigil.dev",
    version = "v1",
    kind = "RotationPolicy",
    namespaced,
    shortname = "rotpol",
    category = "sigil",
    status = "RotationPolicyStatus",
    printcolumn = r#"{"name":"ExternalSecret","type":"string","jsonPath":".spec.externalSecretRef.name"}"#,
    printcolumn = r#"{"name":"Every","type":"string","jsonPath":".spec.schedule.every"}"#,
    printcolumn = r#"{"name":"Last Rotation","type":"string","jsonPath":".status.lastRotation"}"#,
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Reason","type":"string","priority":1,"jsonPath":".status.conditions[?(@.type==\"Ready\")].reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!(has(self.postgres) && has(self.webhook))",
     "message": "set one of spec.postgres or spec.webhook: the credential is checked in one place"},
]))]
#[serde(rename_all = "camelCase")]
pub struct RotationPolicySpec {
    /// The ExternalSecret (in this namespace) whose Rotations follow this policy.
    pub external_secret_ref: PolicyTarget,
    /// How to make the new password (unset: 32 characters of letters, digits and `-_.`);
    /// a Rotation's own `generate` wins.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub generate: Option<Generate>,
    /// Set, test and retire the credential as a PostgreSQL role's password.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postgres: Option<PostgresTarget>,
    /// Set, test and retire the credential through an HTTPS endpoint, for systems Sigil
    /// does not speak.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookTarget>,
    /// How long the rollouts (and a webhook's retries) may take before the Rotation
    /// fails and nothing is retired (unset: the controller's `--rollout-timeout`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "duration_schema")]
    pub rollout_timeout: Option<String>,
    /// Rotate on a schedule: the controller creates the Rotations.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<Schedule>,
}

fn duration_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
    schemars::json_schema!({
        "type": "string",
        "nullable": true,
        "maxLength": 64,
        "x-kubernetes-validations": [{
            "rule": format!("self.matches(r'{GO_DURATION_PATTERN}') && self != '0'"),
            "message": "must be a Go duration above zero, such as `10m`, `720h` or `1h30m`"
        }]
    })
}

/// The ExternalSecret a policy is for.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PolicyTarget {
    /// The ExternalSecret's name (same namespace as the policy).
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Which of its `data[].secretKey` entries reads the credential; needed when it reads
    /// more than one remote key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_key: Option<String>,
}

/// A PostgreSQL server whose role password is the credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-validations" = [
    {"rule": "!has(self.caSecretRef) || !has(self.sslMode) || self.sslMode == 'verify-full'",
     "message": "postgres.caSecretRef is used only with sslMode: verify-full"},
]))]
pub struct PostgresTarget {
    /// Host name or address of the server.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// Port (unset: 5432).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1, max = 65535))]
    pub port: Option<u16>,
    /// The database to connect to.
    #[schemars(length(min = 1, max = 63))]
    pub database: String,
    /// `disable`, `require` (encrypted, server not verified) or `verify-full` (unset:
    /// `verify-full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ssl_mode: Option<SslMode>,
    /// A Secret in this namespace whose key holds the PEM CA that signed the server's
    /// certificate (unset: the system's roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_secret_ref: Option<SecretKeyRef>,
    /// A Secret in this namespace with `username` and `password` of a role allowed to
    /// `ALTER ROLE` (and, for AlternatingUsers, `CREATE ROLE`).
    pub admin_secret_ref: LocalSecretRef,
    /// `AlternatingUsers` or `SingleUser`.
    pub strategy: Strategy,
    /// The property of the remote JSON value holding the role name (unset: `username`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub username_property: Option<String>,
    /// The property of the remote JSON value holding the password (unset: `password`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    pub password_property: Option<String>,
    /// Whether `retire` ends the retired credential's sessions (unset: true).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub terminate_sessions: Option<bool>,
}

impl PostgresTarget {
    /// The port, or 5432.
    pub fn port_or_default(&self) -> u16 {
        self.port.unwrap_or(DEFAULT_POSTGRES_PORT)
    }

    /// The TLS mode, or `verify-full`.
    pub fn ssl_mode_or_default(&self) -> SslMode {
        self.ssl_mode.unwrap_or(SslMode::VerifyFull)
    }

    /// The username property, or `username`.
    pub fn username_property_or_default(&self) -> &str {
        self.username_property
            .as_deref()
            .unwrap_or(DEFAULT_USERNAME_PROPERTY)
    }

    /// The password property, or `password`.
    pub fn password_property_or_default(&self) -> &str {
        self.password_property
            .as_deref()
            .unwrap_or(DEFAULT_PASSWORD_PROPERTY)
    }

    /// Whether sessions of the retired credential are ended.
    pub fn terminates_sessions(&self) -> bool {
        self.terminate_sessions.unwrap_or(true)
    }
}

/// How the connection to PostgreSQL is protected.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum SslMode {
    /// Plain TCP: only for a server on loopback or a trusted link.
    #[serde(rename = "disable")]
    Disable,
    /// TLS without checking the server's certificate.
    #[serde(rename = "require")]
    Require,
    /// TLS, the certificate checked against the CA and the host name.
    #[default]
    #[serde(rename = "verify-full")]
    VerifyFull,
}

/// Which roles hold the credential.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[schemars(transform = crate::drop_description)]
pub enum Strategy {
    /// Two roles, `<user>` and `<user>_clone` (made with `<user>`'s grants on first
    /// use): each Rotation sets the one not in use, so running pods keep working until
    /// they roll, and `retire` then gives the other a password nobody holds.
    #[default]
    AlternatingUsers,
    /// One role: the leaked password stops working at `set`, and pods that have not yet
    /// rolled are refused until they do.
    SingleUser,
}

impl Strategy {
    /// The name as written in the spec.
    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::AlternatingUsers => "AlternatingUsers",
            Strategy::SingleUser => "SingleUser",
        }
    }
}

/// An HTTPS endpoint that sets, tests and retires the credential.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookTarget {
    /// The endpoint; `https://` only.
    #[schemars(length(min = 9, max = 2048))]
    #[schemars(extend("x-kubernetes-validations" = [
        {"rule": "self.startsWith('https://')",
         "message": "webhook.url must start with https://: the request carries the new password"}
    ]))]
    pub url: String,
    /// PEM CA certificates that sign the endpoint's certificate (unset: the system's
    /// roots).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 65536))]
    pub ca_bundle: Option<String>,
    /// A Secret in this namespace whose key holds the bearer token sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token_secret_ref: Option<SecretKeyRef>,
}

/// A key of a Secret in the policy's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// The key.
    #[schemars(length(min = 1, max = 253))]
    pub key: String,
}

/// A Secret in the policy's namespace.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct LocalSecretRef {
    /// The Secret's name.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// When the controller rotates on its own.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Schedule {
    /// How long after the last Rotation the next is made, e.g. `720h`; at least the
    /// controller's `--min-rotation-interval` (1h unless set).
    #[schemars(schema_with = "required_duration_schema")]
    pub every: String,
}

fn required_duration_schema(generator: &mut schemars::SchemaGenerator) -> schemars::Schema {
    let mut schema = duration_schema(generator);
    schema.remove("nullable");
    schema
}

/// What the controller found of a policy.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("default" = {"observedGeneration": 0}))]
pub struct RotationPolicyStatus {
    /// The generation acted on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// The last Rotation the schedule created.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_rotation: Option<String>,
    /// When the schedule last created one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scheduled: Option<Time>,
    /// `Ready`: True when Rotations of the ExternalSecret follow this policy; False with
    /// `Conflict` when an older policy names the same ExternalSecret, `InvalidSpec` when
    /// the schedule is below the controller's minimum.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
}

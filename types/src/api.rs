//! The bodies `sigil-api` and the controller's internal endpoints exchange besides the
//! custom resources themselves, shared so that the API, the controller and the CLI agree
//! on them and the OpenAPI document is generated from the same types.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::rotation::Rotation;

/// Every error response: a stable machine-readable `code` and a message for people.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct ErrorBody {
    /// Stable, snake_case: `unauthenticated`, `forbidden`, `invalid_json`, ...
    pub code: String,
    /// What was wrong and how to fix it; never a secret value or an internal detail.
    pub message: String,
}

/// Whether each value of a SealedSecret opens in this cluster, and why not.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct VerifyReport {
    /// The SealedSecret's namespace.
    pub namespace: String,
    /// The SealedSecret's name.
    pub name: String,
    /// One verdict per data key, in key order.
    pub keys: Vec<KeyVerdict>,
}

impl VerifyReport {
    /// Every value opens.
    pub fn all_open(&self) -> bool {
        self.keys.iter().all(|k| k.opens)
    }
}

/// Whether one value opens; never the value.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct KeyVerdict {
    /// The data key.
    pub key: String,
    /// The value opens with a key the cluster holds, for this namespace, name and key.
    pub opens: bool,
    /// Why it does not open (`UnknownKey`, `RevokedKey`, `ScopeMismatch`, `WrongBinding`,
    /// `Tampered`, `Malformed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// The reason in words, with the fix.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A page of Rotations, newest first.
#[derive(Clone, Debug, Serialize, Deserialize, JsonSchema)]
pub struct RotationList {
    /// The Rotations.
    pub items: Vec<Rotation>,
}

/// The body of `POST /v1/sealingkey/rotate` (optional).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SealingKeyRotationRequest {
    /// Why: an incident or ticket number, shown in status, Events and the audit log.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
}

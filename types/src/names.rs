//! Every `sigil.dev/...` label, annotation and remote-metadata key, in one place: the
//! controller, the API, the CLI and the tests name them through these constants.

/// Label on every Secret a SealedSecret's controller writes (value `"true"`), so that its
/// watch of Secrets sees only those.
pub const SEALED_SECRET_LABEL: &str = "sigil.dev/sealed-secret";
/// Label on every Secret an ExternalSecret writes, so that the controller's watch sees
/// (and restores) them.
pub const EXTERNAL_SECRET_LABEL: &str = "sigil.dev/external-secret";
/// Annotation (value `"true"`) with which an existing Secret opts in to being taken over.
pub const MANAGED_ANNOTATION: &str = "sigil.dev/managed";
/// Annotation naming the UID of the object a Secret belongs to, also where no owner
/// reference may be set (an orphaned ExternalSecret target).
pub const OWNED_BY_ANNOTATION: &str = "sigil.dev/owned-by";
/// ExternalSecret annotation whose every new value refreshes at once, bypassing the read
/// cache.
pub const FORCE_SYNC_ANNOTATION: &str = "sigil.dev/force-sync";
/// Label on every ExternalSecret a ClusterExternalSecret writes: the ClusterExternalSecret's
/// UID, so that the controller's watch sees only those (its owner reference decides).
pub const CLUSTER_EXTERNAL_SECRET_LABEL: &str = "sigil.dev/cluster-external-secret";

/// Label on every Secret that holds a sealing key.
pub const KEY_LABEL: &str = "sigil.dev/sealing-key";
/// Label value that marks a sealing key revoked: it no longer opens anything.
pub const REVOKED_LABEL: &str = "sigil.dev/revoked";
/// Annotation of the public key ConfigMap: the key ID sealing uses now.
pub const ACTIVE_KEY_ANNOTATION: &str = "sigil.dev/active-key";

/// Label on a key Secret made by a sealing-key Rotation: the Rotation's UID.
pub const ROTATION_LABEL: &str = "sigil.dev/rotation";
/// Label on every rotation lock Lease (one per remote key under rotation).
pub const ROTATION_LOCK_LABEL: &str = "sigil.dev/rotation-lock";
/// Vault `custom_metadata` entry naming the Rotation that writes the next version.
pub const ROTATION_CLAIM: &str = "sigil.dev/rotation";
/// Vault `custom_metadata` entry naming the version that Rotation writes on top of.
pub const ROTATION_BASE_CLAIM: &str = "sigil.dev/rotation-base";
/// Rotation annotation holding a hash of the spec it was created with through sigil-api,
/// so that a replay with the same `Idempotency-Key` can be told from another request.
pub const REQUEST_HASH_ANNOTATION: &str = "sigil.dev/request-hash";

/// Pod-template annotation the controller sets to roll a Deployment, StatefulSet or
/// DaemonSet: what the rollout was for (a Rotation's name and version, or
/// `reload/<secret>@<resourceVersion>`). Setting a value it already has rolls nothing.
pub const RESTARTED_FOR_ANNOTATION: &str = "sigil.dev/restarted-for";
/// Workload annotation (value `"true"`) opting a Deployment, StatefulSet or DaemonSet in
/// to a rollout whenever the data of a Secret its pods consume changes.
pub const RELOAD_ANNOTATION: &str = "sigil.dev/reload";
/// ServiceAccount annotation (value `"true"`) allowing stores of its namespace to have
/// tokens minted for it, when the controller runs with `--store-tokens-need-opt-in`.
pub const ALLOW_STORE_TOKENS_ANNOTATION: &str = "sigil.dev/allow-store-tokens";

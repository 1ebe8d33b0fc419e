//! AWS Secrets Manager: one long-lived session per store.
//!
//! The SDK client and its credentials are built once per session. Web identity
//! credentials come from STS `AssumeRoleWithWebIdentity` with a fresh JWT from a
//! [`TokenSource`]; the SDK's identity cache keeps them until shortly before they
//! expire, so a busy store logs in about once an hour. Every request (and every STS
//! login) is reported to the session's [`Observer`].
//!
//! Versions follow External Secrets Operator: `uuid/<VersionId>` selects a version by
//! its id, anything else is a staging label such as `AWSPREVIOUS`, and no version
//! means `AWSCURRENT`.
//!
//! For rotation a session also writes, as AWS's own rotation does: a new version
//! staged `AWSPENDING` under a ClientRequestToken ([`AwsSession::put_pending`]), then
//! staging label moves from the version the caller saw ([`AwsSession::move_stage`]),
//! with [`AwsSession::versions`] to see where the labels are.

use std::collections::HashMap;
use std::error::Error as StdError;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{self, ProvideCredentials};
use aws_sdk_secretsmanager::config::http::HttpResponse;
use aws_sdk_secretsmanager::config::retry::RetryConfig;
use aws_sdk_secretsmanager::config::timeout::TimeoutConfig;
use aws_sdk_secretsmanager::config::{
    BehaviorVersion, Credentials, IdentityCache, Region, SharedCredentialsProvider,
};
use aws_sdk_secretsmanager::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_secretsmanager::primitives::Blob;
use secrecy::{ExposeSecret, SecretString};

use zeroize::Zeroizing;

use crate::versioned::{Mark, VersionError, Versioned, doing};
use crate::{Error, ErrorKind, Observer, Operation, Provider, RemoteValue, Result, TokenSource};

const AWS: Provider = Provider::Aws;

/// The most secret ids one BatchGetSecretValue call takes.
pub const BATCH_LIMIT: usize = 20;

/// Renew web identity credentials this long before they expire.
const CREDENTIALS_BUFFER: Duration = Duration::from_secs(5 * 60);

/// The STS session name of web identity logins.
const SESSION_NAME: &str = "sigil";

/// How a session connects to AWS Secrets Manager.
#[derive(Clone, Debug)]
pub struct AwsConfig {
    /// The region, e.g. `eu-west-1`.
    pub region: String,
    /// An endpoint URL to use instead of the region's (also for STS), e.g. a VPC
    /// endpoint or a local emulator.
    pub endpoint: Option<String>,
    /// How the session authenticates.
    pub auth: AwsAuth,
    /// Timeout of each call, retries included (and of connecting).
    pub timeout: Duration,
}

/// How a session authenticates to AWS.
#[derive(Clone)]
pub enum AwsAuth {
    /// An access key (and session token), e.g. from a Kubernetes Secret.
    Static {
        /// The access key id.
        access_key_id: String,
        /// The secret access key.
        secret_access_key: SecretString,
        /// The session token of temporary credentials.
        session_token: Option<SecretString>,
    },
    /// STS `AssumeRoleWithWebIdentity` with a JWT from `token` (e.g. a ServiceAccount
    /// token with the STS audience).
    WebIdentity {
        /// The role to assume.
        role_arn: String,
        /// Produces the JWT for each login.
        token: TokenSource,
    },
    /// The SDK's default chain: environment, profile, web identity file, ECS, IMDS.
    DefaultChain,
}

impl fmt::Debug for AwsAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AwsAuth::Static { access_key_id, .. } => f
                .debug_struct("Static")
                .field("access_key_id", access_key_id)
                .finish_non_exhaustive(),
            AwsAuth::WebIdentity { role_arn, .. } => f
                .debug_struct("WebIdentity")
                .field("role_arn", role_arn)
                .finish_non_exhaustive(),
            AwsAuth::DefaultChain => f.write_str("DefaultChain"),
        }
    }
}

/// Which version of a secret to read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Version {
    /// `AWSCURRENT`.
    Current,
    /// A `VersionId`, from `uuid/<id>`.
    Id(String),
    /// A staging label.
    Stage(String),
}

/// Parses a version as External Secrets Operator does.
pub(crate) fn parse_version(version: Option<&str>) -> Result<Version> {
    match version.map(str::trim) {
        None | Some("") => Ok(Version::Current),
        Some(v) => match v.strip_prefix("uuid/") {
            Some("") => Err(Error::InvalidConfig {
                field: "remoteRef.version",
                detail: "`uuid/` names no VersionId; write `uuid/<VersionId>`".to_owned(),
            }),
            Some(id) => Ok(Version::Id(id.to_owned())),
            None => Ok(Version::Stage(v.to_owned())),
        },
    }
}

/// One version of a secret and the staging labels attached to it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretVersion {
    /// The VersionId.
    pub id: String,
    /// Its staging labels, e.g. `AWSCURRENT`, sorted.
    pub stages: Vec<String>,
}

/// The shortest and longest ClientRequestToken AWS accepts.
const TOKEN_LEN: std::ops::RangeInclusive<usize> = 32..=64;

/// A long-lived session with AWS Secrets Manager in one region.
///
/// `Send + Sync`: share it behind an `Arc`.
pub struct AwsSession {
    client: aws_sdk_secretsmanager::Client,
    /// STS with the same credentials and endpoint: whose account the session acts in.
    identity: aws_sdk_sts::Client,
    account: tokio::sync::OnceCell<String>,
    observer: Arc<dyn Observer>,
    logins: Arc<AtomicU64>,
    region: String,
}

impl fmt::Debug for AwsSession {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("AwsSession")
            .field("region", &self.region)
            .field("logins", &self.logins())
            .finish_non_exhaustive()
    }
}

impl AwsSession {
    /// Validates `config` and builds the client once; no request is made (the default
    /// chain may look at its environment and files).
    ///
    /// Fails with [`Error::InvalidConfig`] naming the field for an empty region, an
    /// endpoint that is not an `http`/`https` URL, an empty access key id or secret,
    /// or a role ARN that is not an ARN.
    pub async fn new(config: AwsConfig, observer: Arc<dyn Observer>) -> Result<Self> {
        let region = config.region.trim().to_owned();
        if region.is_empty() {
            return Err(invalid(
                "region",
                "is empty; give the AWS region, e.g. eu-west-1",
            ));
        }
        let endpoint = match config.endpoint.as_deref().map(str::trim) {
            None | Some("") => None,
            Some(url) => Some(parse_endpoint(url)?),
        };
        if config.timeout.is_zero() {
            return Err(invalid("timeout", "is zero; give a positive duration"));
        }
        let timeouts = TimeoutConfig::builder()
            .connect_timeout(config.timeout)
            .operation_attempt_timeout(config.timeout)
            .operation_timeout(config.timeout)
            .build();
        let logins = Arc::new(AtomicU64::new(0));
        let credentials = match config.auth {
            AwsAuth::Static {
                access_key_id,
                secret_access_key,
                session_token,
            } => {
                let access_key_id = access_key_id.trim();
                if access_key_id.is_empty() {
                    return Err(invalid("auth.secretRef.accessKeyIDSecretRef", "is empty"));
                }
                if secret_access_key.expose_secret().trim().is_empty() {
                    return Err(invalid(
                        "auth.secretRef.secretAccessKeySecretRef",
                        "is empty",
                    ));
                }
                let credentials = Credentials::new(
                    access_key_id,
                    secret_access_key.expose_secret().trim(),
                    session_token
                        .map(|t| t.expose_secret().trim().to_owned())
                        .filter(|t| !t.is_empty()),
                    None,
                    "sigil-static",
                );
                SharedCredentialsProvider::new(credentials)
            }
            AwsAuth::WebIdentity { role_arn, token } => {
                let role_arn = role_arn.trim().to_owned();
                if !role_arn.starts_with("arn:") || role_arn.split(':').count() < 6 {
                    return Err(invalid(
                        "role",
                        "is not a role ARN like arn:aws:iam::123456789012:role/name",
                    ));
                }
                let mut sts = aws_sdk_sts::Config::builder()
                    .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
                    .region(aws_sdk_sts::config::Region::new(region.clone()))
                    .timeout_config(timeouts.clone())
                    // Fail fast: the read that needs the login retries as a whole.
                    .retry_config(RetryConfig::standard().with_max_attempts(2));
                if let Some(url) = &endpoint {
                    sts = sts.endpoint_url(url.as_str());
                }
                SharedCredentialsProvider::new(WebIdentity {
                    sts: aws_sdk_sts::Client::from_conf(sts.build()),
                    role_arn,
                    token,
                    observer: observer.clone(),
                    logins: logins.clone(),
                })
            }
            AwsAuth::DefaultChain => {
                let chain =
                    aws_config::default_provider::credentials::DefaultCredentialsChain::builder()
                        .region(Region::new(region.clone()))
                        .build()
                        .await;
                SharedCredentialsProvider::new(chain)
            }
        };
        let mut identity = aws_sdk_sts::Config::builder()
            .behavior_version(aws_sdk_sts::config::BehaviorVersion::latest())
            .region(aws_sdk_sts::config::Region::new(region.clone()))
            .credentials_provider(credentials.clone())
            .timeout_config(timeouts.clone())
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(url) = &endpoint {
            identity = identity.endpoint_url(url.as_str());
        }
        let mut builder = aws_sdk_secretsmanager::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .region(Region::new(region.clone()))
            .credentials_provider(credentials)
            .identity_cache(
                IdentityCache::lazy()
                    .load_timeout(config.timeout)
                    .buffer_time(CREDENTIALS_BUFFER)
                    .build(),
            )
            .timeout_config(timeouts)
            .retry_config(RetryConfig::standard().with_max_attempts(3));
        if let Some(url) = &endpoint {
            builder = builder.endpoint_url(url.as_str());
        }
        Ok(AwsSession {
            client: aws_sdk_secretsmanager::Client::from_conf(builder.build()),
            identity: aws_sdk_sts::Client::from_conf(identity.build()),
            account: tokio::sync::OnceCell::new(),
            observer,
            logins,
            region,
        })
    }

    /// Proves that the credentials work with one cheap call (ListSecrets for one
    /// result, reported as [`Operation::Check`]), resolving web identity credentials
    /// first if needed.
    ///
    /// An `AccessDeniedException` counts as success: the credentials authenticated,
    /// and a least-privilege role need not be allowed to list secrets.
    pub async fn check(&self) -> Result<()> {
        let started = Instant::now();
        let result = match self.client.list_secrets().max_results(1).send().await {
            Ok(_) => Ok(()),
            Err(e) if e.code() == Some("AccessDeniedException") => {
                tracing::debug!(
                    region = %self.region,
                    "ListSecrets is not allowed, but the credentials authenticated"
                );
                Ok(())
            }
            Err(e) => Err(map_sdk_error(e, Operation::Check, "", None)),
        };
        crate::report(&*self.observer, AWS, Operation::Check, started, result)
    }

    /// The account these credentials act in (STS GetCallerIdentity, asked once per
    /// session, reported as [`Operation::Check`]): two stores on one region and endpoint
    /// name the same secrets only when their accounts are equal too.
    pub async fn account(&self) -> Result<String> {
        self.account
            .get_or_try_init(|| async {
                let started = Instant::now();
                let result = match self.identity.get_caller_identity().send().await {
                    Ok(out) => out.account.ok_or_else(|| Error::Unavailable {
                        provider: AWS,
                        operation: Operation::Check,
                        detail: "GetCallerIdentity named no account".to_owned(),
                    }),
                    Err(e) => Err(map_sdk_error(e, Operation::Check, "", None)),
                };
                crate::report(&*self.observer, AWS, Operation::Check, started, result)
            })
            .await
            .cloned()
    }

    /// Reads `key` (a secret name or ARN) with GetSecretValue.
    ///
    /// `version` like External Secrets Operator: `uuid/<VersionId>` selects a version
    /// by id, anything else is a staging label (e.g. `AWSPREVIOUS`), `None` is
    /// `AWSCURRENT`. The value is `SecretString`'s bytes, or `SecretBinary`'s.
    pub async fn read(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        let key = secret_id(key)?;
        let selector = parse_version(version)?;
        let asked = version.map(str::trim).filter(|v| !v.is_empty());
        let mut request = self.client.get_secret_value().secret_id(key);
        request = match &selector {
            // Ask for the label explicitly: equal on AWS, and moto answers a
            // label-less call with a stale version after a stage move.
            Version::Current => request.version_stage("AWSCURRENT"),
            Version::Id(id) => request.version_id(id),
            Version::Stage(stage) => request.version_stage(stage),
        };
        let started = Instant::now();
        let result = match request.send().await {
            Ok(mut out) => value_of(
                out.secret_string.take(),
                out.secret_binary.take(),
                out.version_id.take(),
            )
            .ok_or_else(|| Error::NotFound {
                provider: AWS,
                key: key.to_owned(),
                version: asked.map(str::to_owned),
            }),
            Err(e) => Err(map_sdk_error(e, Operation::Read, key, asked)),
        };
        crate::report(&*self.observer, AWS, Operation::Read, started, result)
    }

    /// The names of the secrets whose name starts with `prefix` (when given) and that
    /// carry every one of `tags` with exactly its value, through ListSecrets (its `name`,
    /// `tag-key` and `tag-value` filters narrow the pages; the tags are then compared
    /// exactly, since AWS matches keys and values apart and by prefix), one request per
    /// page (reported as [`Operation::List`]); stops once more than `limit` are found.
    pub async fn list(
        &self,
        prefix: Option<&str>,
        tags: &std::collections::BTreeMap<String, String>,
        limit: usize,
    ) -> Result<Vec<String>> {
        use aws_sdk_secretsmanager::types::{Filter, FilterNameStringType};
        let mut filters = Vec::new();
        if let Some(prefix) = prefix.filter(|p| !p.is_empty()) {
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::Name)
                    .values(prefix)
                    .build(),
            );
        }
        for (key, value) in tags {
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::TagKey)
                    .values(key)
                    .build(),
            );
            filters.push(
                Filter::builder()
                    .key(FilterNameStringType::TagValue)
                    .values(value)
                    .build(),
            );
        }
        let mut found = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let started = Instant::now();
            let page = self
                .client
                .list_secrets()
                .set_filters((!filters.is_empty()).then(|| filters.clone()))
                .set_next_token(token.take())
                .max_results(100)
                .send()
                .await
                .map_err(|e| map_sdk_error(e, Operation::List, prefix.unwrap_or(""), None));
            let page = crate::report(&*self.observer, AWS, Operation::List, started, page)?;
            for secret in page.secret_list() {
                let Some(name) = secret.name() else { continue };
                let carries = |key: &String, value: &String| {
                    secret
                        .tags()
                        .iter()
                        .any(|t| t.key() == Some(key.as_str()) && t.value() == Some(value.as_str()))
                };
                let under = prefix.is_none_or(|p| name.starts_with(p));
                if under && tags.iter().all(|(k, v)| carries(k, v)) {
                    found.push(name.to_owned());
                }
            }
            if found.len() > limit {
                return Ok(found);
            }
            match page.next_token() {
                Some(next) if !next.is_empty() => token = Some(next.to_owned()),
                _ => break,
            }
        }
        found.sort();
        Ok(found)
    }

    /// Reads many secrets (names or ARNs) at their `AWSCURRENT` version with
    /// BatchGetSecretValue, at most [`BATCH_LIMIT`] ids per call.
    ///
    /// Returns one result per requested key, in order. An entry that comes back
    /// without the `AWSCURRENT` label is read again on its own, by label. A per-secret error is mapped
    /// on its own (`ResourceNotFoundException` is [`Error::NotFound`], and so on); a
    /// call that fails as a whole gives each of its keys the same error.
    pub async fn read_batch(&self, keys: &[String]) -> Vec<(String, Result<RemoteValue>)> {
        let mut found: HashMap<&str, Result<RemoteValue>> = HashMap::new();
        let mut wanted: Vec<&str> = Vec::new();
        for key in keys {
            let trimmed = key.trim();
            if trimmed.is_empty() {
                found.insert(
                    key.as_str(),
                    Err(invalid("remoteRef.key", "is empty; name the secret")),
                );
            } else if !found.contains_key(trimmed) && !wanted.contains(&trimmed) {
                wanted.push(trimmed);
            }
        }
        let mut stale = Vec::new();
        for chunk in wanted.chunks(BATCH_LIMIT) {
            self.batch_call(chunk, &mut found, &mut stale).await;
        }
        for key in stale {
            found.insert(key, self.read(key, None).await);
        }
        keys.iter()
            .map(|key| {
                let trimmed = key.trim();
                let lookup = if trimmed.is_empty() {
                    key.as_str()
                } else {
                    trimmed
                };
                let result = match found.get(lookup) {
                    Some(r) => r.clone(),
                    None => Err(Error::NotFound {
                        provider: AWS,
                        key: key.clone(),
                        version: None,
                    }),
                };
                (key.clone(), result)
            })
            .collect()
    }

    /// The versions of `key` (a secret name or ARN) that carry a staging label, and
    /// their labels, from DescribeSecret's `VersionIdsToStages` (reported as
    /// [`Operation::Describe`]), ordered by VersionId with labels sorted.
    ///
    /// Versions without a label are deprecated and left out: AWS does not list them,
    /// and moto's listing of them is dropped so that both answer alike. DescribeSecret
    /// rather than ListSecretVersionIds because AWS's rotation permissions include it
    /// (and moto answers ListSecretVersionIds for a missing secret with HTTP
    /// 500). A secret that does not exist is [`Error::NotFound`].
    pub async fn versions(&self, key: &str) -> Result<Vec<SecretVersion>> {
        let key = secret_id(key)?;
        let started = Instant::now();
        let result = self
            .client
            .describe_secret()
            .secret_id(key)
            .send()
            .await
            .map(|mut out| {
                let mut versions: Vec<SecretVersion> = out
                    .version_ids_to_stages
                    .take()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|(_, stages)| !stages.is_empty())
                    .map(|(id, mut stages)| {
                        stages.sort();
                        SecretVersion { id, stages }
                    })
                    .collect();
                versions.sort_by(|a, b| a.id.cmp(&b.id));
                versions
            })
            .map_err(|e| map_sdk_error(e, Operation::Describe, key, None));
        crate::report(&*self.observer, AWS, Operation::Describe, started, result)
    }

    /// Writes `value` as a new version of `key` staged `AWSPENDING` only, with
    /// PutSecretValue and ClientRequestToken `token` (reported as
    /// [`Operation::Write`]), and returns its VersionId, which is `token`.
    ///
    /// `AWSCURRENT` stays where it is; AWS takes `AWSPENDING` off any other version.
    /// Idempotent: repeating the call with the same token and value succeeds and adds
    /// no version (and changes no label of the version that exists). The same token
    /// with another value is [`Error::Conflict`] (`ResourceExistsException`) on AWS;
    /// moto instead overwrites a version that is still `AWSPENDING`. `value`
    /// must be UTF-8 (it is sent as `SecretString`) and `token` 32 to 64 characters,
    /// e.g. a UUID; otherwise [`Error::InvalidConfig`], without a request.
    ///
    /// Memory: the SDK takes `SecretString` as a plain `String` and serializes it into
    /// the request body; neither copy is zeroized (the SDK offers no way to).
    pub async fn put_pending(&self, key: &str, token: &str, value: &[u8]) -> Result<String> {
        let key = secret_id(key)?;
        if !TOKEN_LEN.contains(&token.len()) || !token.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(invalid(
                "clientRequestToken",
                "must be 32 to 64 visible ASCII characters, e.g. a UUID",
            ));
        }
        let value = std::str::from_utf8(value).map_err(|e| {
            invalid(
                "value",
                &format!(
                    "is not UTF-8 (invalid byte at offset {}); Secrets Manager stores a SecretString",
                    e.valid_up_to()
                ),
            )
        })?;
        let started = Instant::now();
        let result = self
            .client
            .put_secret_value()
            .secret_id(key)
            .client_request_token(token)
            .secret_string(value)
            .version_stages("AWSPENDING")
            .send()
            .await
            .map(|out| out.version_id.unwrap_or_else(|| token.to_owned()))
            .map_err(|e| map_sdk_error(e, Operation::Write, key, None));
        crate::report(&*self.observer, AWS, Operation::Write, started, result)
    }

    /// Moves staging label `stage` of `key` to version `to` (`None`: only removes it)
    /// from version `from` (`None`: the label is attached nowhere), with
    /// UpdateSecretVersionStage (reported as [`Operation::Stage`]).
    ///
    /// Moving `AWSCURRENT` makes AWS attach `AWSPREVIOUS` to the version it left. AWS
    /// refuses a move whose `from` is not where the label is (also a `None` for a
    /// label that is attached); a refusal is explained with one
    /// [`versions`](Self::versions) call: the label on another version than `from` is
    /// [`Error::Conflict`], the label already where the move would put it is success
    /// (so a repeated move, e.g. after a lost answer, succeeds), and a `to` that is
    /// not among the versions is [`Error::NotFound`] for that version.
    pub async fn move_stage(
        &self,
        key: &str,
        stage: &str,
        to: Option<&str>,
        from: Option<&str>,
    ) -> Result<()> {
        let key = secret_id(key)?;
        let stage = stage.trim();
        if stage.is_empty() {
            return Err(invalid("versionStage", "is empty; name a staging label"));
        }
        let (to, from) = (to.map(str::trim), from.map(str::trim));
        if to.is_none() && from.is_none() {
            return Err(invalid(
                "versionStage",
                "move names neither a version to move it to nor one to remove it from",
            ));
        }
        if to == Some("") || from == Some("") {
            return Err(invalid("versionStage", "move names an empty VersionId"));
        }
        let started = Instant::now();
        let sent = self
            .client
            .update_secret_version_stage()
            .secret_id(key)
            .version_stage(stage)
            .set_move_to_version_id(to.map(str::to_owned))
            .set_remove_from_version_id(from.map(str::to_owned))
            .send()
            .await;
        let took = started.elapsed();
        let result = match sent {
            Ok(_) => Ok(()),
            Err(e) => {
                let answered = matches!(e, SdkError::ServiceError(_));
                let refused = map_sdk_error(e, Operation::Stage, key, None);
                if answered
                    && matches!(
                        refused.kind(),
                        ErrorKind::InvalidConfig | ErrorKind::NotFound
                    )
                {
                    match self.versions(key).await {
                        Ok(versions) => {
                            explain_refusal(&versions, key, stage, to, from).unwrap_or(Err(refused))
                        }
                        Err(_) => Err(refused),
                    }
                } else {
                    Err(refused)
                }
            }
        };
        // The move's own duration, without the versions call that explained a refusal.
        let started = Instant::now().checked_sub(took).unwrap_or(started);
        crate::report(&*self.observer, AWS, Operation::Stage, started, result)
    }

    /// Web identity logins (STS calls) this session has made so far; 0 for other auth.
    pub fn logins(&self) -> u64 {
        self.logins.load(Ordering::Relaxed)
    }

    /// One BatchGetSecretValue call (and its pages) for at most 20 distinct ids.
    async fn batch_call<'k>(
        &self,
        ids: &[&'k str],
        found: &mut HashMap<&'k str, Result<RemoteValue>>,
        stale: &mut Vec<&'k str>,
    ) {
        let mut next_token: Option<String> = None;
        loop {
            let started = Instant::now();
            let call = self
                .client
                .batch_get_secret_value()
                .set_secret_id_list(Some(ids.iter().map(|s| (*s).to_owned()).collect()))
                .set_next_token(next_token.take())
                .send()
                .await;
            let result = call.map_err(|e| map_sdk_error(e, Operation::BatchRead, ids[0], None));
            let mut out =
                match crate::report(&*self.observer, AWS, Operation::BatchRead, started, result) {
                    Ok(out) => out,
                    Err(e) => {
                        for id in ids {
                            found.entry(id).or_insert_with(|| Err(e.for_key(id)));
                        }
                        return;
                    }
                };
            for mut entry in out.secret_values.take().unwrap_or_default() {
                let name = entry.name.take();
                let arn = entry.arn.take();
                let Some(id) = ids
                    .iter()
                    .copied()
                    .find(|id| name.as_deref() == Some(*id) || arn.as_deref() == Some(*id))
                else {
                    continue;
                };
                if !entry.version_stages().iter().any(|s| s == "AWSCURRENT") {
                    // AWS answers with the AWSCURRENT version and its labels; moto
                    // with the secret's first version, whatever is current since a stage
                    // move. Such an entry is read again on its own, by label.
                    stale.push(id);
                    continue;
                }
                let value = value_of(
                    entry.secret_string.take(),
                    entry.secret_binary.take(),
                    entry.version_id.take(),
                )
                .ok_or_else(|| Error::NotFound {
                    provider: AWS,
                    key: id.to_owned(),
                    version: None,
                });
                found.insert(id, value);
            }
            for failure in out.errors.take().unwrap_or_default() {
                let Some(id) = ids
                    .iter()
                    .copied()
                    .find(|id| failure.secret_id.as_deref() == Some(*id))
                else {
                    continue;
                };
                let e = classify(
                    failure.error_code.as_deref(),
                    failure.message.as_deref(),
                    None,
                    Operation::BatchRead,
                    id,
                    None,
                );
                found.insert(id, Err(e));
            }
            next_token = out.next_token.take();
            if next_token.is_none() || ids.iter().all(|id| found.contains_key(id)) {
                break;
            }
        }
    }
}

/// A secret's name or ARN, trimmed; an empty one is refused.
fn secret_id(key: &str) -> Result<&str> {
    let key = key.trim();
    if key.is_empty() {
        return Err(invalid(
            "remoteRef.key",
            "is empty; name the secret (name or ARN)",
        ));
    }
    Ok(key)
}

/// Why AWS refused to move `stage` to `to` from `from`, given the secret's versions
/// after the refusal: `Some(Ok)` when the label is already where the move would put
/// it, `Some(Err)` for a conflict or a `to` that does not exist, `None` when the
/// versions do not explain it.
fn explain_refusal(
    versions: &[SecretVersion],
    key: &str,
    stage: &str,
    to: Option<&str>,
    from: Option<&str>,
) -> Option<Result<()>> {
    let holder = versions
        .iter()
        .find(|v| v.stages.iter().any(|s| s == stage))
        .map(|v| v.id.as_str());
    if holder == to {
        return Some(Ok(()));
    }
    if holder != from {
        let on =
            |id: Option<&str>| id.map_or("no version".to_owned(), |id| format!("version {id}"));
        return Some(Err(Error::Conflict {
            provider: AWS,
            key: key.to_owned(),
            detail: format!(
                "staging label {stage} is on {}, not on {}",
                on(holder),
                on(from)
            ),
        }));
    }
    match to {
        Some(to) if !versions.iter().any(|v| v.id == to) => Some(Err(Error::NotFound {
            provider: AWS,
            key: key.to_owned(),
            version: Some(format!("uuid/{to}")),
        })),
        _ => None,
    }
}

/// The value of a GetSecretValue answer or batch entry; `None` without either field.
fn value_of(
    string: Option<String>,
    binary: Option<Blob>,
    version_id: Option<String>,
) -> Option<RemoteValue> {
    let bytes = match (string, binary) {
        (Some(s), _) => s.into_bytes(),
        (None, Some(b)) => b.into_inner(),
        (None, None) => return None,
    };
    Some(RemoteValue::new(bytes, version_id.unwrap_or_default()))
}

fn invalid(field: &'static str, detail: &str) -> Error {
    Error::InvalidConfig {
        field,
        detail: detail.to_owned(),
    }
}

fn parse_endpoint(url: &str) -> Result<reqwest::Url> {
    let parsed = reqwest::Url::parse(url).map_err(|e| {
        invalid(
            "endpoint",
            &format!("`{url}` is not a URL ({e}); give e.g. https://secretsmanager.eu-west-1.amazonaws.com"),
        )
    })?;
    if !matches!(parsed.scheme(), "http" | "https") || parsed.host().is_none() {
        return Err(invalid(
            "endpoint",
            &format!("`{url}` is not an http:// or https:// URL with a host"),
        ));
    }
    Ok(parsed)
}

/// Maps an SDK error (of Secrets Manager or STS) of `operation` on `key` to an [`Error`].
fn map_sdk_error<E>(
    err: SdkError<E, HttpResponse>,
    operation: Operation,
    key: &str,
    version: Option<&str>,
) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    if let SdkError::ServiceError(service) = &err {
        let status = Some(service.raw().status().as_u16());
        return classify(err.code(), err.message(), status, operation, key, version);
    }
    // A failed web identity login surfaces inside a dispatch failure: keep its kind.
    if let Some(inner) = find_in_chain::<Error>(&err) {
        return inner.clone();
    }
    // An unreadable answer may hold secret data: say no more than that.
    if let SdkError::ResponseError(_) = &err {
        return Error::Unavailable {
            provider: AWS,
            operation,
            detail: "the answer could not be understood".to_owned(),
        };
    }
    let detail = describe(&err);
    if let Some(credentials) = find_in_chain::<CredentialsError>(&err) {
        let kind = match credentials {
            CredentialsError::ProviderTimedOut(_) => ErrorKind::Unavailable,
            CredentialsError::InvalidConfiguration(_) => {
                return Error::InvalidConfig {
                    field: "auth",
                    detail,
                };
            }
            _ => ErrorKind::AuthFailed,
        };
        return Error::of_kind(kind, AWS, Operation::Login, key, version, "auth", detail);
    }
    match err {
        SdkError::ConstructionFailure(_) => Error::InvalidConfig {
            field: "remoteRef",
            detail,
        },
        _ => Error::Unavailable {
            provider: AWS,
            operation,
            detail,
        },
    }
}

/// An error and its sources, by `Display` only (an SDK error's `Debug` may show the
/// raw response), each source once.
fn describe(err: &(dyn StdError + 'static)) -> String {
    let mut text = err.to_string();
    let mut current = err.source();
    while let Some(e) = current {
        let message = e.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        current = e.source();
    }
    text
}

fn find_in_chain<'a, T: StdError + 'static>(err: &'a (dyn StdError + 'static)) -> Option<&'a T> {
    let mut current: Option<&'a (dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if let Some(found) = e.downcast_ref::<T>() {
            return Some(found);
        }
        current = e.source();
    }
    None
}

/// Maps an AWS error code (and message and HTTP status) to an [`Error`].
fn classify(
    code: Option<&str>,
    message: Option<&str>,
    status: Option<u16>,
    operation: Operation,
    key: &str,
    version: Option<&str>,
) -> Error {
    let detail = match (code, message, status) {
        (Some(c), Some(m), _) => format!("{c}: {m}"),
        (Some(c), None, _) => c.to_owned(),
        (None, Some(m), Some(s)) => format!("HTTP {s}: {m}"),
        (None, Some(m), None) => m.to_owned(),
        (None, None, Some(s)) => format!("HTTP {s}"),
        (None, None, None) => "an error without a code".to_owned(),
    };
    let kind = match code.unwrap_or_default() {
        "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "RequestLimitExceeded"
        | "PriorRequestNotComplete" => ErrorKind::Throttled,
        "ResourceNotFoundException" => ErrorKind::NotFound,
        // A ClientRequestToken already used for another value.
        "ResourceExistsException" if operation == Operation::Write => ErrorKind::Conflict,
        "InvalidRequestException" if message.is_some_and(|m| m.contains("marked for deletion")) => {
            ErrorKind::NotFound
        }
        "AccessDeniedException"
        | "AccessDenied"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "ExpiredToken"
        | "ExpiredTokenException"
        | "DecryptionFailure"
        | "InvalidIdentityToken"
        | "IDPRejectedClaim"
        | "AuthFailure" => ErrorKind::AuthFailed,
        "InternalServiceError"
        | "InternalFailure"
        | "ServiceUnavailable"
        | "IDPCommunicationError" => ErrorKind::Unavailable,
        "InvalidParameterException"
        | "InvalidRequestException"
        | "ValidationException"
        | "MalformedPolicyDocument" => ErrorKind::InvalidConfig,
        _ => match status {
            Some(429) => ErrorKind::Throttled,
            Some(401 | 403) => ErrorKind::AuthFailed,
            Some(404) if operation != Operation::Login => ErrorKind::NotFound,
            _ => ErrorKind::Unavailable,
        },
    };
    let field = if version.is_some() {
        "remoteRef.version"
    } else {
        "remoteRef.key"
    };
    Error::of_kind(kind, AWS, operation, key, version, field, detail)
}

/// Web identity credentials: STS `AssumeRoleWithWebIdentity` with a fresh JWT.
///
/// The SDK's identity cache calls it only when the cached credentials are about to
/// expire; each call is one login.
struct WebIdentity {
    sts: aws_sdk_sts::Client,
    role_arn: String,
    token: TokenSource,
    observer: Arc<dyn Observer>,
    logins: Arc<AtomicU64>,
}

impl fmt::Debug for WebIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebIdentity")
            .field("role_arn", &self.role_arn)
            .finish_non_exhaustive()
    }
}

impl WebIdentity {
    async fn assume(&self) -> Result<Credentials> {
        let jwt = (self.token)().await.map_err(|detail| Error::AuthFailed {
            provider: AWS,
            operation: Operation::Login,
            detail: format!("the web identity token could not be obtained: {detail}"),
        })?;
        self.logins.fetch_add(1, Ordering::Relaxed);
        let mut out = self
            .sts
            .assume_role_with_web_identity()
            .role_arn(&self.role_arn)
            .role_session_name(SESSION_NAME)
            .web_identity_token(jwt.expose_secret())
            .send()
            .await
            .map_err(|e| map_sts_error(e, &self.role_arn))?;
        let credentials = out.credentials.take().ok_or_else(|| Error::AuthFailed {
            provider: AWS,
            operation: Operation::Login,
            detail: "STS answered without credentials".to_owned(),
        })?;
        let expiry = SystemTime::try_from(credentials.expiration).ok();
        tracing::debug!(role_arn = %self.role_arn, "assumed the role with a web identity");
        Ok(Credentials::new(
            credentials.access_key_id,
            credentials.secret_access_key,
            Some(credentials.session_token),
            expiry,
            "sigil-web-identity",
        ))
    }
}

impl ProvideCredentials for WebIdentity {
    fn provide_credentials<'a>(&'a self) -> provider::future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        provider::future::ProvideCredentials::new(async move {
            // The identity cache may drop this future at its load timeout: report that too.
            let mut pending = PendingLogin {
                observer: &*self.observer,
                started: Instant::now(),
                done: false,
            };
            let result = self.assume().await;
            pending.done = true;
            let result = crate::report(
                &*self.observer,
                AWS,
                Operation::Login,
                pending.started,
                result,
            );
            result.map_err(|e| match e.kind() {
                ErrorKind::InvalidConfig => CredentialsError::invalid_configuration(e),
                _ => CredentialsError::provider_error(e),
            })
        })
    }
}

/// Reports a web identity login that was abandoned (timed out) before it finished.
struct PendingLogin<'a> {
    observer: &'a dyn Observer,
    started: Instant,
    done: bool,
}

impl Drop for PendingLogin<'_> {
    fn drop(&mut self) {
        if !self.done {
            self.observer.observe(
                AWS,
                Operation::Login,
                Err(ErrorKind::Unavailable),
                self.started.elapsed(),
            );
        }
    }
}

fn map_sts_error<E>(err: SdkError<E, HttpResponse>, role_arn: &str) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    match map_sdk_error(err, Operation::Login, role_arn, None) {
        // A bad role or token is a refused login, not a field we can name.
        Error::InvalidConfig { detail, .. } => Error::AuthFailed {
            provider: AWS,
            operation: Operation::Login,
            detail,
        },
        e @ Error::NotFound { .. } => Error::AuthFailed {
            provider: AWS,
            operation: Operation::Login,
            detail: e.to_string(),
        },
        Error::Unavailable { detail, .. } => Error::Unavailable {
            provider: AWS,
            operation: Operation::Login,
            detail: format!("STS: {detail}"),
        },
        other => other,
    }
}

/// `stage` puts an `AWSPENDING` version whose VersionId is the mark's token (so AWS
/// itself refuses a second one), `promote` moves `AWSCURRENT` to it from the base
/// (AWS refuses the move if someone else moved `AWSCURRENT` meanwhile; the base keeps
/// `AWSPREVIOUS`), and `clear_staged` drops `AWSPENDING`.
impl Versioned for AwsSession {
    fn values_are_objects(&self) -> bool {
        false
    }

    async fn current_version(&self, key: &str) -> Result<String, VersionError> {
        let versions = self
            .versions(key)
            .await
            .map_err(doing("list the remote key's versions"))?;
        holder(&versions, CURRENT).ok_or(VersionError::NoCurrent)
    }

    async fn read_version(&self, key: &str, version: &str) -> Result<RemoteValue, VersionError> {
        self.read(key, Some(&format!("uuid/{version}")))
            .await
            .map_err(doing("read a version back"))
    }

    async fn stage<E: Send>(
        &self,
        key: &str,
        base: &str,
        mark: Mark<'_>,
        make: impl FnOnce(&[u8]) -> Result<Zeroizing<Vec<u8>>, E> + Send,
    ) -> Result<String, VersionError<E>> {
        let versions = self
            .versions(key)
            .await
            .map_err(doing("list the remote key's versions"))?;
        if !versions.iter().any(|v| v.id == mark.token) {
            let current = holder(&versions, CURRENT).unwrap_or_default();
            if current != base {
                return Err(VersionError::Moved { now: current });
            }
            let old = self
                .read(key, Some(&format!("uuid/{base}")))
                .await
                .map_err(doing("read the base version"))?;
            let value = make(old.bytes()).map_err(VersionError::Value)?;
            self.put_pending(key, mark.token, &value)
                .await
                .map_err(doing("stage the new version as AWSPENDING"))?;
        }
        Ok(mark.token.to_owned())
    }

    async fn promote(&self, key: &str, base: &str, new: &str) -> Result<(), VersionError> {
        let versions = self
            .versions(key)
            .await
            .map_err(doing("list the remote key's versions"))?;
        match holder(&versions, CURRENT) {
            Some(current) if current == new => Ok(()),
            Some(current) if current == base => self
                .move_stage(key, CURRENT, Some(new), Some(base))
                .await
                .map_err(|error| match error.kind() {
                    ErrorKind::Conflict => VersionError::Moved {
                        now: "another version".to_owned(),
                    },
                    _ => VersionError::Store {
                        doing: "move AWSCURRENT to the new version",
                        error,
                    },
                }),
            other => Err(VersionError::Moved {
                now: other.unwrap_or_else(|| "none".to_owned()),
            }),
        }
    }

    async fn clear_staged(&self, key: &str, new: &str) -> Result<(), VersionError> {
        // A label already gone is success (see `move_stage`); one on another version is
        // someone else's stage, not this one's to clear.
        match self.move_stage(key, PENDING, None, Some(new)).await {
            Err(error) if error.kind() != ErrorKind::Conflict => Err(VersionError::Store {
                doing: "remove AWSPENDING from the new version",
                error,
            }),
            _ => Ok(()),
        }
    }

    async fn withdraw(
        &self,
        key: &str,
        _base: &str,
        new: &str,
        _mark: Mark<'_>,
    ) -> Result<String, VersionError> {
        self.clear_staged(key, new).await?;
        Ok(format!(
            "version {new} was never made current and no longer holds AWSPENDING"
        ))
    }
}

const CURRENT: &str = "AWSCURRENT";
const PENDING: &str = "AWSPENDING";

/// The version `stage` is attached to.
fn holder(versions: &[SecretVersion], stage: &str) -> Option<String> {
    versions
        .iter()
        .find(|v| v.stages.iter().any(|s| s == stage))
        .map(|v| v.id.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::NoObserver;

    #[test]
    fn versions_like_eso() {
        assert_eq!(parse_version(None).unwrap(), Version::Current);
        assert_eq!(parse_version(Some(" ")).unwrap(), Version::Current);
        assert_eq!(
            parse_version(Some("uuid/0b1c-22")).unwrap(),
            Version::Id("0b1c-22".into())
        );
        assert_eq!(
            parse_version(Some("AWSPREVIOUS")).unwrap(),
            Version::Stage("AWSPREVIOUS".into())
        );
        assert_eq!(
            parse_version(Some("uuidish")).unwrap(),
            Version::Stage("uuidish".into())
        );
        match parse_version(Some("uuid/")) {
            Err(Error::InvalidConfig { field, .. }) => assert_eq!(field, "remoteRef.version"),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn error_codes() {
        let k = |code: &str, status| {
            classify(Some(code), Some("m"), status, Operation::Read, "k", None).kind()
        };
        assert_eq!(
            k("ResourceNotFoundException", Some(400)),
            ErrorKind::NotFound
        );
        assert_eq!(k("ThrottlingException", Some(400)), ErrorKind::Throttled);
        assert_eq!(k("AccessDeniedException", Some(400)), ErrorKind::AuthFailed);
        assert_eq!(
            k("UnrecognizedClientException", Some(400)),
            ErrorKind::AuthFailed
        );
        assert_eq!(k("ExpiredTokenException", Some(400)), ErrorKind::AuthFailed);
        assert_eq!(k("InternalServiceError", Some(500)), ErrorKind::Unavailable);
        assert_eq!(
            k("InvalidParameterException", Some(400)),
            ErrorKind::InvalidConfig
        );
        assert_eq!(k("Whatever", Some(503)), ErrorKind::Unavailable);
        assert_eq!(k("Whatever", Some(429)), ErrorKind::Throttled);
        assert_eq!(k("Whatever", Some(403)), ErrorKind::AuthFailed);
        let deleted = classify(
            Some("InvalidRequestException"),
            Some(
                "You can't perform this operation on the secret because it was marked for deletion.",
            ),
            Some(400),
            Operation::Read,
            "app/db",
            None,
        );
        assert_eq!(deleted.kind(), ErrorKind::NotFound);
        match classify(
            Some("ResourceNotFoundException"),
            None,
            None,
            Operation::Read,
            "a",
            Some("AWSPREVIOUS"),
        ) {
            Error::NotFound { key, version, .. } => {
                assert_eq!(key, "a");
                assert_eq!(version.as_deref(), Some("AWSPREVIOUS"));
            }
            other => panic!("{other}"),
        }
        match classify(
            Some("InvalidParameterException"),
            None,
            None,
            Operation::Read,
            "a",
            Some("x"),
        ) {
            Error::InvalidConfig { field, .. } => assert_eq!(field, "remoteRef.version"),
            other => panic!("{other}"),
        }
    }

    #[test]
    fn transport_errors_are_unavailable_and_described_by_display() {
        use aws_sdk_secretsmanager::error::ConnectorError;
        use aws_sdk_secretsmanager::operation::get_secret_value::GetSecretValueError;
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionRefused, "refused");
        let err: SdkError<GetSecretValueError, HttpResponse> =
            SdkError::dispatch_failure(ConnectorError::io(io.into()));
        match map_sdk_error(err, Operation::Read, "k", None) {
            Error::Unavailable {
                operation, detail, ..
            } => {
                assert_eq!(operation, Operation::Read);
                assert!(detail.contains("refused"), "{detail}");
                assert!(
                    !detail.contains("DispatchFailure"),
                    "no Debug output: {detail}"
                );
            }
            other => panic!("{other}"),
        }
        // A failed web identity login inside the chain keeps its own kind and message.
        let login = Error::AuthFailed {
            provider: AWS,
            operation: Operation::Login,
            detail: "InvalidIdentityToken: expired".into(),
        };
        let err: SdkError<GetSecretValueError, HttpResponse> = SdkError::dispatch_failure(
            ConnectorError::other(CredentialsError::provider_error(login).into(), None),
        );
        let mapped = map_sdk_error(err, Operation::Read, "k", None);
        assert_eq!(mapped.kind(), ErrorKind::AuthFailed);
        assert!(
            mapped.to_string().contains("InvalidIdentityToken"),
            "{mapped}"
        );
    }

    #[test]
    fn values() {
        let v = value_of(Some("s3cr3t".into()), None, Some("v1".into())).unwrap();
        assert_eq!(v.bytes(), b"s3cr3t");
        assert_eq!(v.version(), "v1");
        let v = value_of(None, Some(Blob::new(vec![0, 1, 2])), None).unwrap();
        assert_eq!(v.bytes(), [0, 1, 2]);
        assert!(value_of(None, None, None).is_none());
    }

    #[test]
    fn a_reused_token_is_a_conflict_only_for_writes() {
        let e = classify(
            Some("ResourceExistsException"),
            Some("You can't use ClientRequestToken t because that value is already in use"),
            Some(400),
            Operation::Write,
            "app/db",
            None,
        );
        match &e {
            Error::Conflict { key, detail, .. } => {
                assert_eq!(key, "app/db");
                assert!(detail.contains("ClientRequestToken"), "{detail}");
            }
            other => panic!("{other}"),
        }
        assert!(e.to_string().contains("nothing was written"), "{e}");
        let k = classify(
            Some("ResourceExistsException"),
            None,
            Some(400),
            Operation::Read,
            "k",
            None,
        );
        assert_ne!(k.kind(), ErrorKind::Conflict);
    }

    #[test]
    fn refused_stage_moves_are_explained_by_the_versions() {
        let v = |id: &str, stages: &[&str]| SecretVersion {
            id: id.to_owned(),
            stages: stages.iter().map(|s| (*s).to_owned()).collect(),
        };
        let versions = [
            v("old", &["AWSPREVIOUS"]),
            v("cur", &["AWSCURRENT"]),
            v("new", &["AWSPENDING"]),
        ];
        let explain = |stage, to, from| explain_refusal(&versions, "k", stage, to, from);
        // The label is elsewhere than `from`: someone else moved it.
        match explain("AWSCURRENT", Some("new"), Some("old")) {
            Some(Err(Error::Conflict { detail, .. })) => assert_eq!(
                detail,
                "staging label AWSCURRENT is on version cur, not on version old"
            ),
            other => panic!("{other:?}"),
        }
        match explain("AWSPENDING", Some("cur"), None) {
            Some(Err(Error::Conflict { detail, .. })) => {
                assert!(
                    detail.contains("on version new, not on no version"),
                    "{detail}"
                )
            }
            other => panic!("{other:?}"),
        }
        // Already done: a repeated move or removal succeeds.
        assert!(matches!(
            explain("AWSCURRENT", Some("cur"), Some("old")),
            Some(Ok(()))
        ));
        assert!(matches!(explain("LABEL", None, Some("new")), Some(Ok(()))));
        // A `to` that does not exist.
        match explain("AWSCURRENT", Some("gone"), Some("cur")) {
            Some(Err(Error::NotFound { version, .. })) => {
                assert_eq!(version.as_deref(), Some("uuid/gone"))
            }
            other => panic!("{other:?}"),
        }
        // Nothing the versions explain: keep AWS's answer.
        assert!(explain("AWSCURRENT", Some("new"), Some("cur")).is_none());
    }

    fn config(auth: AwsAuth) -> AwsConfig {
        AwsConfig {
            region: "eu-west-1".into(),
            endpoint: None,
            auth,
            timeout: Duration::from_secs(5),
        }
    }

    fn statik() -> AwsAuth {
        AwsAuth::Static {
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: SecretString::from("wJalrXUtnFEMI"),
            session_token: None,
        }
    }

    async fn field_of(c: AwsConfig) -> &'static str {
        match AwsSession::new(c, Arc::new(NoObserver)).await {
            Err(Error::InvalidConfig { field, .. }) => field,
            Err(other) => panic!("not InvalidConfig: {other}"),
            Ok(_) => panic!("accepted"),
        }
    }

    #[tokio::test]
    async fn config_errors_name_the_field() {
        let mut c = config(statik());
        c.region = " ".into();
        assert_eq!(field_of(c).await, "region");
        let mut c = config(statik());
        c.endpoint = Some("localhost:4566".into());
        assert_eq!(field_of(c).await, "endpoint");
        let mut c = config(statik());
        c.timeout = Duration::ZERO;
        assert_eq!(field_of(c).await, "timeout");
        let c = config(AwsAuth::Static {
            access_key_id: "".into(),
            secret_access_key: SecretString::from("x"),
            session_token: None,
        });
        assert_eq!(field_of(c).await, "auth.secretRef.accessKeyIDSecretRef");
        let c = config(AwsAuth::Static {
            access_key_id: "AKID".into(),
            secret_access_key: SecretString::from(""),
            session_token: None,
        });
        assert_eq!(field_of(c).await, "auth.secretRef.secretAccessKeySecretRef");
        let token: TokenSource = Arc::new(|| Box::pin(async { Err("unused".to_owned()) }));
        let c = config(AwsAuth::WebIdentity {
            role_arn: "sigil".into(),
            token,
        });
        assert_eq!(field_of(c).await, "role");
    }

    #[tokio::test]
    async fn valid_config_builds_and_debug_hides_secrets() {
        let mut c = config(statik());
        c.endpoint = Some("http://127.0.0.1:4566".into());
        let shown = format!("{c:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
        let s = AwsSession::new(c, Arc::new(NoObserver)).await.unwrap();
        assert_eq!(s.logins(), 0);
        let shown = format!("{s:?}");
        assert!(!shown.contains("wJalrXUtnFEMI"), "{shown}");
    }

    #[tokio::test]
    async fn empty_keys_are_refused_without_a_call() {
        let mut c = config(statik());
        c.endpoint = Some("http://127.0.0.1:1".into());
        let s = AwsSession::new(c, Arc::new(NoObserver)).await.unwrap();
        assert_eq!(
            s.read(" ", None).await.unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
        let invalid_field = |e: Option<Error>| match e {
            Some(Error::InvalidConfig { field, .. }) => field,
            other => panic!("{other:?}"),
        };
        let token = "0123456789abcdef0123456789abcdef";
        let short = s.put_pending("k", "short", b"v").await.err();
        assert_eq!(invalid_field(short), "clientRequestToken");
        let err = s
            .put_pending("k", token, b"pass\xffword")
            .await
            .unwrap_err();
        assert!(!err.to_string().contains("pass"), "{err}");
        assert_eq!(invalid_field(Some(err)), "value");
        let nowhere = s.move_stage("k", "AWSPENDING", None, None).await.err();
        assert_eq!(invalid_field(nowhere), "versionStage");
        let unnamed = s.move_stage("k", " ", Some(token), None).await.err();
        assert_eq!(invalid_field(unnamed), "versionStage");
        assert_eq!(invalid_field(s.versions(" ").await.err()), "remoteRef.key");
        let out = s.read_batch(&[String::new()]).await;
        assert_eq!(out.len(), 1);
        assert_eq!(
            out[0].1.as_ref().unwrap_err().kind(),
            ErrorKind::InvalidConfig
        );
    }
}

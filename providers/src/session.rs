//! One session per store, whichever provider it talks to: what sync reads through and
//! what a rotation writes through, without either asking which provider it is.

use std::collections::BTreeMap;

use zeroize::Zeroizing;

use crate::aws::AwsSession;
use crate::vault::VaultSession;
use crate::versioned::{Mark, VersionError, Versioned};
use crate::{Error, Provider, RemoteValue, Result};

/// A provider session, shared by every reader and writer of one store.
pub enum Session {
    /// Vault KV v2.
    Vault(Box<VaultSession>),
    /// AWS Secrets Manager.
    Aws(AwsSession),
}

impl Session {
    /// Which provider this is.
    pub fn provider(&self) -> Provider {
        match self {
            Session::Vault(_) => Provider::Vault,
            Session::Aws(_) => Provider::Aws,
        }
    }

    /// Reads one remote key; `version` as an ExternalSecret's `remoteRef.version`
    /// spells it: a KV v2 version number, or an AWS version (`uuid/<VersionId>` or a
    /// staging label).
    pub async fn read(&self, key: &str, version: Option<&str>) -> Result<RemoteValue> {
        match self {
            Session::Vault(vault) => {
                let version = version
                    .map(|v| {
                        v.parse::<u64>().map_err(|_| Error::InvalidConfig {
                            field: "remoteRef.version",
                            detail: format!(
                                "`{v}` is not a KV v2 version number; use a whole number such as \"3\", or leave it out for the current version"
                            ),
                        })
                    })
                    .transpose()?;
                vault.read(key, version).await
            }
            Session::Aws(aws) => aws.read(key, version).await,
        }
    }

    /// Whether [`read_batch`](Self::read_batch) reads many keys in one request.
    pub fn reads_in_batches(&self) -> bool {
        matches!(self, Session::Aws(_))
    }

    /// The current values of `keys` in as few requests as the provider allows; empty
    /// where it has no batch read.
    pub async fn read_batch(&self, keys: &[String]) -> Vec<(String, Result<RemoteValue>)> {
        match self {
            Session::Aws(aws) => aws.read_batch(keys).await,
            Session::Vault(_) => Vec::new(),
        }
    }

    /// Proves that the session's credentials work.
    pub async fn check(&self) -> Result<()> {
        match self {
            Session::Vault(vault) => vault.check().await,
            Session::Aws(aws) => aws.check().await,
        }
    }

    /// The remote keys a `find` matches: under `path`, whose name `matches` (the key
    /// below the mount on Vault, the secret's name on AWS), carrying every one of `tags`
    /// (Vault: in `custom_metadata`, one metadata read per candidate; AWS: its tags).
    /// Name and tags must both match. Returns at most `limit` + 1 keys, so that a caller
    /// sees its bound passed; the listing itself stops at ten times `limit`.
    pub async fn find(
        &self,
        path: Option<&str>,
        matches: &(dyn Fn(&str) -> bool + Sync),
        tags: &BTreeMap<String, String>,
        limit: usize,
    ) -> Result<Vec<String>> {
        let listing_bound = limit.saturating_mul(10);
        match self {
            Session::Vault(vault) => {
                let mut found = Vec::new();
                for key in vault.list(path.unwrap_or(""), listing_bound).await? {
                    if !matches(&key) {
                        continue;
                    }
                    if !tags.is_empty() {
                        let meta = vault.metadata(&key).await?;
                        if !tags
                            .iter()
                            .all(|(k, v)| meta.custom_metadata.get(k) == Some(v))
                        {
                            continue;
                        }
                    }
                    found.push(key);
                    if found.len() > limit {
                        break;
                    }
                }
                Ok(found)
            }
            Session::Aws(aws) => {
                let mut found: Vec<String> = aws
                    .list(path, tags, listing_bound)
                    .await?
                    .into_iter()
                    .filter(|name| matches(name))
                    .collect();
                found.truncate(limit + 1);
                Ok(found)
            }
        }
    }

    /// The account the credentials act in, where the provider has accounts (AWS):
    /// two stores on one endpoint name the same keys only within one account.
    pub async fn account(&self) -> Result<Option<String>> {
        match self {
            Session::Aws(aws) => aws.account().await.map(Some),
            Session::Vault(_) => Ok(None),
        }
    }
}

impl Versioned for Session {
    fn values_are_objects(&self) -> bool {
        match self {
            Session::Vault(vault) => vault.values_are_objects(),
            Session::Aws(aws) => aws.values_are_objects(),
        }
    }

    async fn current_version(&self, key: &str) -> Result<String, VersionError> {
        match self {
            Session::Vault(vault) => vault.current_version(key).await,
            Session::Aws(aws) => aws.current_version(key).await,
        }
    }

    async fn read_version(&self, key: &str, version: &str) -> Result<RemoteValue, VersionError> {
        match self {
            Session::Vault(vault) => vault.read_version(key, version).await,
            Session::Aws(aws) => aws.read_version(key, version).await,
        }
    }

    async fn stage<E: Send>(
        &self,
        key: &str,
        base: &str,
        mark: Mark<'_>,
        make: impl FnOnce(&[u8]) -> Result<Zeroizing<Vec<u8>>, E> + Send,
    ) -> Result<String, VersionError<E>> {
        match self {
            Session::Vault(vault) => vault.stage(key, base, mark, make).await,
            Session::Aws(aws) => aws.stage(key, base, mark, make).await,
        }
    }

    async fn promote(&self, key: &str, base: &str, new: &str) -> Result<(), VersionError> {
        match self {
            Session::Vault(vault) => vault.promote(key, base, new).await,
            Session::Aws(aws) => aws.promote(key, base, new).await,
        }
    }

    async fn clear_staged(&self, key: &str, new: &str) -> Result<(), VersionError> {
        match self {
            Session::Vault(vault) => vault.clear_staged(key, new).await,
            Session::Aws(aws) => aws.clear_staged(key, new).await,
        }
    }

    async fn withdraw(
        &self,
        key: &str,
        base: &str,
        new: &str,
        mark: Mark<'_>,
    ) -> Result<String, VersionError> {
        match self {
            Session::Vault(vault) => vault.withdraw(key, base, new, mark).await,
            Session::Aws(aws) => aws.withdraw(key, base, new, mark).await,
        }
    }
}

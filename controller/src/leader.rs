//! Leader election through a `coordination.k8s.io` Lease, so that two replicas can run:
//! one works, the other waits and takes over when the leader stops renewing.

use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};

use crate::error::{Error, KubeContext, Result};

/// One replica's claim on the Lease.
#[derive(Clone)]
pub struct Elector {
    api: Api<Lease>,
    name: String,
    identity: String,
    duration: Duration,
}

impl Elector {
    /// A claim on Lease `namespace/name` as `identity`, expiring after `duration`.
    pub fn new(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Self {
        Self {
            api: Api::namespaced(client, namespace),
            name: name.to_owned(),
            identity: identity.to_owned(),
            duration,
        }
    }

    fn seconds(&self) -> i32 {
        i32::try_from(self.duration.as_secs())
            .unwrap_or(i32::MAX)
            .max(1)
    }

    /// Waits until this replica holds the Lease.
    pub async fn acquire(&self) -> Result<()> {
        let mut logged = false;
        loop {
            if self.try_acquire().await? {
                tracing::info!(lease = %self.name, identity = %self.identity, "became leader");
                return Ok(());
            }
            if !logged {
                tracing::info!(lease = %self.name, "another replica leads; standing by");
                logged = true;
            }
            tokio::time::sleep(self.duration / 4).await;
        }
    }

    /// Takes or renews the Lease if it is free, expired or ours. `false`: someone else
    /// holds it. Optimistic concurrency (resourceVersion) settles races.
    async fn try_acquire(&self) -> Result<bool> {
        let now = MicroTime(Timestamp::now());
        let current = self
            .api
            .get_opt(&self.name)
            .await
            .during(|| format!("read Lease {}", self.name))?;
        let Some(mut lease) = current else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(self.name.clone()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(self.identity.clone()),
                    lease_duration_seconds: Some(self.seconds()),
                    acquire_time: Some(now.clone()),
                    renew_time: Some(now),
                    lease_transitions: Some(0),
                    ..LeaseSpec::default()
                }),
            };
            return match self.api.create(&PostParams::default(), &lease).await {
                Ok(_) => Ok(true),
                Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
                Err(source) => Err(Error::Kube {
                    action: format!("create Lease {}", self.name),
                    source,
                }),
            };
        };
        let spec = lease.spec.get_or_insert_with(LeaseSpec::default);
        let ours = spec.holder_identity.as_deref() == Some(self.identity.as_str());
        let expired = match (&spec.renew_time, spec.lease_duration_seconds) {
            (Some(renewed), Some(seconds)) => {
                renewed.0 + Duration::from_secs(u64::try_from(seconds).unwrap_or(0)) < now.0
            }
            _ => true,
        };
        let free = spec.holder_identity.as_deref().is_none_or(str::is_empty);
        if !(ours || expired || free) {
            return Ok(false);
        }
        if !ours {
            spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
            spec.acquire_time = Some(now.clone());
        }
        spec.holder_identity = Some(self.identity.clone());
        spec.lease_duration_seconds = Some(self.seconds());
        spec.renew_time = Some(now);
        match self
            .api
            .replace(&self.name, &PostParams::default(), &lease)
            .await
        {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
            Err(source) => Err(Error::Kube {
                action: format!("renew Lease {}", self.name),
                source,
            }),
        }
    }

    /// Renews until renewal fails; returns the error that ended leadership.
    pub async fn hold(&self) -> Error {
        let mut failures_since = None;
        loop {
            tokio::time::sleep(self.duration / 3).await;
            match self.try_acquire().await {
                Ok(true) => failures_since = None,
                Ok(false) => return Error::LostLeadership(self.name.clone()),
                Err(err) => {
                    // A blip in the API server is not a reason to stop, until the Lease
                    // could have expired for the others.
                    let since = *failures_since.get_or_insert_with(std::time::Instant::now);
                    tracing::warn!(error = %err, "cannot renew the leader Lease");
                    if since.elapsed() >= self.duration {
                        return err;
                    }
                }
            }
        }
    }

    /// Gives the Lease up on shutdown so a standby takes over at once.
    pub async fn release(&self) {
        if let Ok(Some(mut lease)) = self.api.get_opt(&self.name).await
            && let Some(spec) = lease.spec.as_mut()
            && spec.holder_identity.as_deref() == Some(self.identity.as_str())
        {
            spec.holder_identity = None;
            spec.renew_time = None;
            let _ = self
                .api
                .replace(&self.name, &PostParams::default(), &lease)
                .await;
        }
    }
}

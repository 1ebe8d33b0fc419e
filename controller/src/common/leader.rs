//! Leader election through a `coordination.k8s.io` Lease, so that two replicas can run:
//! one works, the other waits and takes over when the leader stops renewing. The Lease
//! protocol is `kube-lease-manager`'s; this module maps it onto the controller's flags
//! and errors.

use std::time::{Duration, Instant};

use kube::Client;
use kube_lease_manager::{LeaseManager, LeaseManagerBuilder, LeaseManagerError, LeaseParams};

use super::error::{Error, Result};

/// This replica's hold on the Lease, from [`Leadership::acquire`] until
/// [`Leadership::release`] or a loss reported by [`Leadership::hold`].
pub struct Leadership {
    manager: LeaseManager,
    name: String,
    term: Duration,
    renew_every: Duration,
}

impl Leadership {
    /// Waits until this replica holds Lease `namespace/name` as `identity`; the Lease
    /// lasts `duration` unrenewed.
    pub async fn acquire(
        client: Client,
        namespace: &str,
        name: &str,
        identity: &str,
        duration: Duration,
    ) -> Result<Self> {
        // The crate counts whole seconds and renews `grace` seconds before the term ends,
        // with 0 < grace < term: renewing every third of the term leaves room for two
        // failed renewals before the Lease lapses.
        let term = duration.as_secs().clamp(2, i32::MAX.unsigned_abs().into());
        let renew_every = (term / 3).max(1);
        let params = LeaseParams::new(identity, term, term - renew_every);
        tracing::info!(lease = %name, "standing by until this replica holds the Lease");
        let manager = loop {
            let manager = LeaseManagerBuilder::new(client.clone(), name)
                .with_namespace(namespace)
                .with_parameters(params.clone())
                .build()
                .await
                .map_err(|err| lease_error(name, "read or create", err))?;
            // A manager reads a Lease held by another replica again only when that holder's
            // term ends; a fresh one every quarter term sees a Lease released on shutdown
            // at once. Dropping one mid-take is safe: the next sees this identity holding.
            match tokio::time::timeout(Duration::from_secs(term) / 4, manager.changed()).await {
                Ok(Ok(true)) => break manager,
                Ok(Ok(false)) | Err(_) => {}
                Ok(Err(err)) => return Err(lease_error(name, "take", err)),
            }
        };
        tracing::info!(lease = %name, identity = %identity, "became leader");
        Ok(Self {
            manager,
            name: name.to_owned(),
            term: Duration::from_secs(term),
            renew_every: Duration::from_secs(renew_every),
        })
    }

    /// Renews until the Lease is lost; returns the error that ended leadership.
    pub async fn hold(&self) -> Error {
        let mut failing_since: Option<Instant> = None;
        loop {
            let started = Instant::now();
            let err = match self.manager.changed().await {
                Ok(true) => continue,
                Ok(false) => return Error::LostLeadership(self.name.clone()),
                Err(err) => err,
            };
            // `changed` sleeps a renewal interval after each renewal that went through, so a
            // call that lasted that long renewed at least once (unless one request hung as
            // long): the failures start afresh.
            if started.elapsed() >= self.renew_every {
                failing_since = None;
            }
            // A blip in the API server is not a reason to stop, until the Lease could have
            // expired for the others.
            let since = *failing_since.get_or_insert_with(Instant::now);
            tracing::warn!(error = %err, lease = %self.name, "cannot renew the leader Lease");
            if since.elapsed() >= self.term {
                return lease_error(&self.name, "renew", err);
            }
            tokio::time::sleep(self.renew_every).await;
        }
    }

    /// Gives the Lease up on shutdown, so a standby need not wait for it to expire.
    pub async fn release(&self) {
        if let Err(err) = self.manager.release().await {
            tracing::warn!(error = %err, lease = %self.name, "cannot release the leader Lease; a standby takes over when it expires");
        }
    }
}

fn lease_error(name: &str, action: &str, err: LeaseManagerError) -> Error {
    match err {
        LeaseManagerError::KubeError(source) => Error::Kube {
            action: format!("{action} Lease {name}"),
            source,
        },
        // The Lease was deleted under this replica, or the crate lost track of its
        // state: either way this replica cannot tell that it leads.
        other => {
            tracing::warn!(error = %other, lease = %name, "leader Lease in an unexpected state");
            Error::LostLeadership(name.to_owned())
        }
    }
}

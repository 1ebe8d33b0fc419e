//! One Rotation per remote key at a time: a `coordination.k8s.io` Lease per key in the
//! controller's namespace, held from `stage` until the Rotation finishes. It lives in
//! the API server, so it survives a controller restart; a holder that no longer exists
//! or has finished gives it up to the next.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use kube::api::{DeleteParams, ObjectMeta, PostParams, Preconditions};
use kube::{Api, ResourceExt};
use sigil_types::{Rotation, RotationPhase, RotationTarget};

use super::{RotationContext, Stop, display_name};
use crate::common::error::{KubeContext, Result};

use sigil_types::ROTATION_LOCK_LABEL;
/// How often a waiting Rotation looks again.
const WAIT: std::time::Duration = std::time::Duration::from_secs(2);

/// The Lease that guards `target` (a remote key; `None`: the sealing key).
fn lease_name(target: Option<&RotationTarget>) -> String {
    let what = match target {
        Some(target) => format!("{}\n{}", target.server, target.key.trim_matches('/')),
        None => "sealing-key".to_owned(),
    };
    let digest = ring::digest::digest(&ring::digest::SHA256, what.as_bytes());
    format!("sigil-rotation-{}", hex::encode(&digest.as_ref()[..10]))
}

/// `namespace/name/uid` of the Rotation: what a Lease names as its holder.
fn holder_of(obj: &Rotation) -> String {
    format!("{}/{}", display_name(obj), obj.uid().unwrap_or_default())
}

/// Takes the Lease for `target` (`None`: the sealing key) on behalf of `obj`, or says
/// whom it waits for. Taken before the base version is read, so that a Rotation that
/// waited starts from the version the one before it wrote.
pub(super) async fn acquire(
    ctx: &RotationContext,
    obj: &Rotation,
    target: Option<&RotationTarget>,
) -> Result<(), Stop> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    let name = lease_name(target);
    let me = holder_of(obj);
    loop {
        let existing = api
            .get_opt(&name)
            .await
            .during(|| format!("read rotation lock Lease {}/{name}", ctx.config.namespace))?;
        let Some(lease) = existing else {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    labels: Some([(ROTATION_LOCK_LABEL.to_owned(), "true".to_owned())].into()),
                    ..ObjectMeta::default()
                },
                spec: Some(LeaseSpec {
                    holder_identity: Some(me.clone()),
                    ..LeaseSpec::default()
                }),
            };
            match api.create(&PostParams::default(), &lease).await {
                Ok(_) => return Ok(()),
                Err(kube::Error::Api(status)) if status.code == 409 => continue,
                Err(err) => {
                    return Err(Stop::Retry(crate::common::Error::Kube {
                        action: format!(
                            "create rotation lock Lease {}/{name}",
                            ctx.config.namespace
                        ),
                        source: err,
                    }));
                }
            }
        };
        let holder = lease
            .spec
            .as_ref()
            .and_then(|s| s.holder_identity.clone())
            .unwrap_or_default();
        if holder == me {
            return Ok(());
        }
        if holder_is_active(ctx, &holder).await? {
            let shown = holder.rsplit_once('/').map_or(holder.as_str(), |(n, _)| n);
            return Err(Stop::Wait(
                WAIT,
                format!(
                    "waiting for Rotation {shown}, which is rotating the same remote key; this one starts when it finishes"
                ),
            ));
        }
        // The holder is gone or done without releasing (e.g. deleted midway): take over,
        // unless someone else did first.
        let taken = api
            .delete(
                &name,
                &DeleteParams {
                    preconditions: Some(Preconditions {
                        resource_version: lease.resource_version(),
                        uid: None,
                    }),
                    ..DeleteParams::default()
                },
            )
            .await;
        match taken {
            Ok(_) => {}
            Err(kube::Error::Api(status)) if status.code == 409 || status.code == 404 => {}
            Err(err) => {
                return Err(Stop::Retry(crate::common::Error::Kube {
                    action: format!(
                        "release stale rotation lock Lease {}/{name}",
                        ctx.config.namespace
                    ),
                    source: err,
                }));
            }
        }
    }
}

/// Whether the Rotation named by `holder` exists (same UID) and has not finished.
async fn holder_is_active(ctx: &RotationContext, holder: &str) -> Result<bool> {
    let mut parts = holder.splitn(3, '/');
    let (Some(namespace), Some(name), Some(uid)) = (parts.next(), parts.next(), parts.next())
    else {
        return Ok(false);
    };
    let api: Api<Rotation> = Api::namespaced(ctx.client.clone(), namespace);
    let found = api
        .get_opt(name)
        .await
        .during(|| format!("read Rotation {namespace}/{name}, which holds a rotation lock"))?;
    Ok(found.is_some_and(|r| {
        r.uid().as_deref() == Some(uid)
            && !r
                .status
                .as_ref()
                .and_then(|s| s.phase)
                .unwrap_or(RotationPhase::Pending)
                .is_final()
    }))
}

/// Gives up `obj`'s Lease if it holds it.
pub(super) async fn release(ctx: &RotationContext, obj: &Rotation) -> Result<()> {
    let api: Api<Lease> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    let name = lease_name(obj.status.as_ref().and_then(|s| s.target.as_ref()));
    let Some(lease) = api
        .get_opt(&name)
        .await
        .during(|| format!("read rotation lock Lease {}/{name}", ctx.config.namespace))?
    else {
        return Ok(());
    };
    if lease.spec.and_then(|s| s.holder_identity).as_deref() != Some(holder_of(obj).as_str()) {
        return Ok(());
    }
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            resource_version: lease.metadata.resource_version,
            uid: None,
        }),
        ..DeleteParams::default()
    };
    match api.delete(&name, &params).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(status)) if status.code == 404 || status.code == 409 => Ok(()),
        Err(err) => Err(crate::common::Error::Kube {
            action: format!(
                "release rotation lock Lease {}/{name}",
                ctx.config.namespace
            ),
            source: err,
        }),
    }
}

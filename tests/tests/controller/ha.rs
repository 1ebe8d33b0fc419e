//! Two replicas: one leads through a Lease, the other takes over when it dies.

use std::time::Duration;

use k8s_openapi::api::coordination::v1::Lease;
use kube::api::Api;
use sigil_tests::TestContext;

use crate::support::*;

#[tokio::test]
async fn a_standby_takes_over_when_the_leader_dies() {
    let ctx = TestContext::new("ha").await.unwrap();
    install_crds(&ctx.kube).await;
    let mut leader = Controller::start(&ctx, "replica-a", &[]);
    // Alive before anything has synced.
    eventually(Duration::from_secs(20), || async {
        (leader.get("/healthz")?.0 == 200).then_some(())
    })
    .await;
    leader.wait_ready().await;
    let standby = Controller::start(&ctx, "replica-b", &[]);
    eventually(Duration::from_secs(20), || async {
        (standby.get("/healthz")?.0 == 200).then_some(())
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        standby.get("/readyz").unwrap().0,
        503,
        "the standby is not ready while it waits"
    );

    let dir = tempfile::tempdir().unwrap();
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "before", &[("k", "v")]),
    );
    apply(&ctx, &sealed).await;
    wait_reason(&ctx, "before", "Unsealed").await;

    let leases = Api::<Lease>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let before = leases.get("sigil-controller").await.unwrap().spec.unwrap();
    assert_eq!(before.holder_identity.as_deref(), Some("replica-a"));
    leader.kill();
    standby.wait_ready().await;
    let spec = leases.get("sigil-controller").await.unwrap().spec.unwrap();
    assert_eq!(spec.holder_identity.as_deref(), Some("replica-b"));
    // Whether taking a new Lease counts as a transition is the election library's
    // choice; a takeover is one more.
    assert_eq!(
        spec.lease_transitions,
        Some(before.lease_transitions.unwrap_or(0) + 1)
    );

    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "after", &[("k", "v")]),
    );
    apply(&ctx, &sealed).await;
    wait_reason(&ctx, "after", "Unsealed").await;
}

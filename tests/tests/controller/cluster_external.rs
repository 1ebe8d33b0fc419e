//! ClusterExternalSecrets on a real kube-apiserver: which namespaces get the
//! ExternalSecret (labels and names ORed), namespaces that start and stop matching, an
//! ExternalSecret in the way, a renamed ExternalSecret, the ExternalSecret synced from
//! Vault by the controller of its namespace, and a controller confined to one namespace.
//!
//! A ClusterExternalSecret is cluster-wide, so a serving controller serves every one in
//! the shared cluster: these tests take turns (a serving controller of one would answer
//! the other's), and every other test's confined controller may report first (the
//! serving one's status must win).

use std::time::Duration;

use k8s_openapi::api::core::v1::Namespace;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::{Value, json};
use sigil_tests::TestContext;
use sigil_types::{ClusterExternalSecret, ClusterExternalSecretStatus, ExternalSecret};

use crate::support::*;
use crate::sync::{apply_obj, external, map, vault_put, vault_token_store, wait_data};

/// One test at a time (see the module docs); a tokio mutex is not poisoned by a failure.
static TURN: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn apply_ces(ctx: &TestContext, name: &str, spec: Value) {
    apply_obj::<ClusterExternalSecret>(
        Api::all(ctx.kube.clone()),
        "ClusterExternalSecret",
        json!({"metadata": {"name": name}, "spec": spec}),
    )
    .await;
}

/// The status once it describes the current generation and `Ready` has the reason.
async fn ces_status(ctx: &TestContext, name: &str, reason: &str) -> ClusterExternalSecretStatus {
    eventually(Duration::from_secs(30), || async {
        let ces = Api::<ClusterExternalSecret>::all(ctx.kube.clone())
            .get(name)
            .await
            .ok()?;
        let status = ces.status?;
        let ready = status.conditions.iter().find(|c| c.type_ == "Ready")?;
        (status.observed_generation == ces.metadata.generation && ready.reason == reason)
            .then_some(status.clone())
    })
    .await
}

/// The condition `Ready` of `status`: (status, message).
fn ready(status: &ClusterExternalSecretStatus) -> (String, String) {
    let c = status
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (c.status.clone(), c.message.clone())
}

async fn external_in(ctx: &TestContext, namespace: &str, name: &str) -> Option<ExternalSecret> {
    Api::<ExternalSecret>::namespaced(ctx.kube.clone(), namespace)
        .get_opt(name)
        .await
        .unwrap()
}

/// Sets (or, with `None`, removes) label `key` of `namespace`.
async fn label(ctx: &TestContext, namespace: &str, key: &str, value: Option<&str>) {
    Api::<Namespace>::all(ctx.kube.clone())
        .patch(
            namespace,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {key: value}}})),
        )
        .await
        .unwrap();
}

/// Waits until `namespace` holds the ExternalSecret `name` (or, with `false`, does not).
async fn wait_external(ctx: &TestContext, namespace: &str, name: &str, present: bool) {
    eventually(Duration::from_secs(15), || async {
        (external_in(ctx, namespace, name).await.is_some() == present).then_some(())
    })
    .await;
}

fn sorted(namespaces: &[&TestContext]) -> Vec<String> {
    let mut names: Vec<String> = namespaces.iter().map(|c| c.namespace.clone()).collect();
    names.sort();
    names
}

#[tokio::test]
async fn selected_namespaces_get_the_external_secret_and_follow_their_labels() {
    let _turn = TURN.lock().await;
    let ctx = TestContext::new("ces-serve").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "ces", &["--cluster-external-secrets", "serve"]);
    controller.wait_ready().await;
    // by label: b, later d; by name: c, e (where an ExternalSecret is in the way).
    let b = TestContext::new("ces-b").await.unwrap();
    let c = TestContext::new("ces-c").await.unwrap();
    let d = TestContext::new("ces-d").await.unwrap();
    let e = TestContext::new("ces-e").await.unwrap();
    let key = "sigil.test/ces";
    label(&ctx, &b.namespace, key, Some(&ctx.id)).await;
    let theirs = json!({"secretStoreRef": {"name": "theirs"},
        "data": [{"secretKey": "x", "remoteRef": {"key": "their/key"}}]});
    external(&e, "app", theirs).await;

    vault_put(&b, "k", json!({"a": "1"})).await;
    let name = ctx.id.clone();
    ctx.track_cluster_external_secret(&name);
    let spec = |es_name: &str| {
        json!({
            "externalSecretName": es_name,
            "externalSecretMetadata": {"labels": {"team": "a"}, "annotations": {"note": "from-ces"}},
            "namespaceSelectors": [{"matchLabels": {key: ctx.id}}],
            "namespaces": [c.namespace, e.namespace],
            "refreshTime": "1h",
            "externalSecretSpec": {
                "refreshInterval": "1h",
                "secretStoreRef": {"name": "vault"},
                "data": [{"secretKey": "a", "remoteRef": {"key": format!("{}/k", b.vault_prefix), "property": "a"}}]
            }
        })
    };
    apply_ces(&ctx, &name, spec("app")).await;

    let status = ces_status(&ctx, &name, "ProvisionFailed").await;
    assert_eq!(status.provisioned_namespaces, sorted(&[&b, &c]));
    assert_eq!(status.external_secret_name.as_deref(), Some("app"));
    let [failed] = &status.failed_namespaces[..] else {
        panic!("one failed namespace: {status:?}");
    };
    assert_eq!(failed.namespace, e.namespace);
    let reason = failed.reason.as_deref().unwrap_or_default();
    assert!(
        reason.contains("`app` already exists") && reason.contains("externalSecretName"),
        "{reason}"
    );
    let (ok, message) = ready(&status);
    assert_eq!(ok, "False");
    assert!(message.contains(&e.namespace), "{message}");
    // Theirs is left exactly as it was.
    let left = external_in(&ctx, &e.namespace, "app").await.unwrap();
    assert!(left.owner_references().is_empty());
    assert_eq!(left.spec.secret_store_ref.name, "theirs");
    assert!(left.labels().is_empty(), "{:?}", left.labels());
    assert!(external_in(&ctx, &d.namespace, "app").await.is_none());

    // Ours: owned by the ClusterExternalSecret, with its labels and annotations.
    let ours = external_in(&ctx, &b.namespace, "app").await.unwrap();
    let owner = &ours.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str(), owner.controller),
        ("ClusterExternalSecret", name.as_str(), Some(true))
    );
    assert_eq!(ours.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(
        ours.annotations().get("note").map(String::as_str),
        Some("from-ces")
    );

    // The controller of namespace b syncs it from a store there, like any other.
    vault_token_store(&b, "vault").await;
    let _b_controller = Controller::start(&b, "b", &[]);
    wait_data(&b, "app", &map(&[("a", "1")])).await;

    // A namespace that starts matching gets it; one that stops matching loses it.
    label(&ctx, &d.namespace, key, Some(&ctx.id)).await;
    wait_external(&ctx, &d.namespace, "app", true).await;
    label(&ctx, &b.namespace, key, None).await;
    wait_external(&ctx, &b.namespace, "app", false).await;
    eventually(Duration::from_secs(15), || async {
        let status = ces_status(&ctx, &name, "ProvisionFailed").await;
        (status.provisioned_namespaces == sorted(&[&c, &d])).then_some(())
    })
    .await;

    // Renamed: the old ones go, and e, where the old name was taken, is served.
    apply_ces(&ctx, &name, spec("app2")).await;
    let status = ces_status(&ctx, &name, "Provisioned").await;
    assert_eq!(status.provisioned_namespaces, sorted(&[&c, &d, &e]));
    assert!(status.failed_namespaces.is_empty(), "{status:?}");
    assert_eq!(status.external_secret_name.as_deref(), Some("app2"));
    for ns in [&c, &d] {
        wait_external(&ctx, &ns.namespace, "app", false).await;
        assert!(external_in(&ctx, &ns.namespace, "app2").await.is_some());
    }
    assert!(external_in(&ctx, &e.namespace, "app").await.is_some());

    // An ExternalSecret deleted by hand comes back.
    Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &c.namespace)
        .delete("app2", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(15), || async {
        let es = external_in(&ctx, &c.namespace, "app2").await?;
        es.metadata.deletion_timestamp.is_none().then_some(())
    })
    .await;

    // Deleting the ClusterExternalSecret leaves the rest to the garbage collector.
    Api::<ClusterExternalSecret>::all(ctx.kube.clone())
        .delete(&name, &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(40), || async {
        let mut left = 0;
        for ns in [&c, &d, &e] {
            left += usize::from(external_in(&ctx, &ns.namespace, "app2").await.is_some());
        }
        (left == 0).then_some(())
    })
    .await;
    assert!(
        external_in(&ctx, &e.namespace, "app").await.is_some(),
        "theirs outlives the ClusterExternalSecret"
    );
}

#[tokio::test]
async fn a_controller_confined_to_one_namespace_reports_not_served() {
    let _turn = TURN.lock().await;
    let ctx = TestContext::new("ces-confined").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "confined", &[]);
    controller.wait_ready().await;
    let name = ctx.id.clone();
    ctx.track_cluster_external_secret(&name);
    apply_ces(
        &ctx,
        &name,
        json!({"namespaces": [ctx.namespace],
            "externalSecretSpec": {"secretStoreRef": {"name": "vault"},
                "data": [{"secretKey": "a", "remoteRef": {"key": "k"}}]}}),
    )
    .await;
    let status = ces_status(&ctx, &name, "NotServed").await;
    let (ok, message) = ready(&status);
    assert_eq!(ok, "False");
    // Any confined controller of the shared cluster may be the one that reported.
    assert!(
        message.contains("watches only namespace") && message.contains("without --watch-namespace"),
        "{message}"
    );
    assert!(status.provisioned_namespaces.is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(external_in(&ctx, &ctx.namespace, &name).await.is_none());
}

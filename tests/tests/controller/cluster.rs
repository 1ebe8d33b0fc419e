//! What the environment's kube-controller-manager does with the objects Sigil touches:
//! a changed pod template is a new ReplicaSet (how a restart shows), and the Secret of a
//! deleted SealedSecret is garbage-collected with it; and, with the scheduler and kwok's
//! fake nodes, a Deployment rolls out as `kubectl rollout status` judges it, while a Pod
//! no node matches stays Pending.

use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use sigil_tests::TestContext;
use sigil_types::SealedSecret;

use crate::support::*;

/// How long kube-controller-manager may take. The garbage collector learns of a CRD
/// installed moments ago only at its next discovery sync (every 30 s).
const KCM_TIMEOUT: Duration = Duration::from_secs(60);

/// The ReplicaSets that the Deployment `uid` controls.
async fn replica_sets(ctx: &TestContext, uid: &str) -> Vec<ReplicaSet> {
    Api::<ReplicaSet>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter(|rs| {
            rs.owner_references()
                .iter()
                .any(|o| o.uid == uid && o.controller == Some(true))
        })
        .collect()
}

fn template_annotation(rs: &ReplicaSet, key: &str) -> Option<String> {
    rs.spec
        .as_ref()?
        .template
        .as_ref()?
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(key)
        .cloned()
}

#[tokio::test]
async fn a_changed_pod_template_is_a_new_replica_set() {
    const RESTARTED_AT: &str = "kubectl.kubernetes.io/restartedAt";
    let ctx = TestContext::new("rollout").await.unwrap();
    let deployments = Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let deployment: Deployment = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "web"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "registry.invalid/web:1"}]}
            }
        }
    }))
    .unwrap();
    let uid = deployments
        .create(&PostParams::default(), &deployment)
        .await
        .unwrap()
        .uid()
        .unwrap();
    let first = eventually(KCM_TIMEOUT, || async {
        let sets = replica_sets(&ctx, &uid).await;
        (sets.len() == 1).then(|| sets[0].name_any())
    })
    .await;

    // What `kubectl rollout restart` does: a pod-template annotation with a new value.
    let restart = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        RESTARTED_AT: "2025-01-01T00:00:00Z"
    }}}}});
    deployments
        .patch("web", &PatchParams::default(), &Patch::Merge(&restart))
        .await
        .unwrap();
    let sets = eventually(KCM_TIMEOUT, || async {
        let sets = replica_sets(&ctx, &uid).await;
        (sets.len() == 2).then_some(sets)
    })
    .await;
    let new = sets
        .iter()
        .find(|rs| rs.name_any() != first)
        .expect("a second ReplicaSet");
    assert_eq!(
        template_annotation(new, RESTARTED_AT).as_deref(),
        Some("2025-01-01T00:00:00Z")
    );
    assert_eq!(
        new.annotations()
            .get("deployment.kubernetes.io/revision")
            .map(String::as_str),
        Some("2")
    );
}

#[tokio::test]
async fn a_sealed_secrets_secret_is_garbage_collected_with_it() {
    let ctx = TestContext::new("gc").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "db", &[("password", "hunter2")]),
    );
    apply(&ctx, &sealed).await;
    wait_reason(&ctx, "db", "Unsealed").await;
    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let secret = secrets.get("db").await.unwrap();
    let sealed_uid = Api::<SealedSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("db")
        .await
        .unwrap()
        .uid()
        .unwrap();
    assert!(
        secret
            .owner_references()
            .iter()
            .any(|o| o.uid == sealed_uid),
        "the Secret is owned by its SealedSecret"
    );

    Api::<SealedSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .delete("db", &DeleteParams::background())
        .await
        .unwrap();
    eventually(KCM_TIMEOUT, || async {
        secrets.get_opt("db").await.unwrap().is_none().then_some(())
    })
    .await;
    // Gone for good: the controller does not bring it back.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(secrets.get_opt("db").await.unwrap().is_none());
}

/// Whether `d` has rolled out as `kubectl rollout status` judges it: the controller saw
/// the latest spec, every replica is updated and available, and no old one is left.
fn rolled_out(d: &Deployment) -> bool {
    let wanted = d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
    let Some(status) = &d.status else {
        return false;
    };
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas == Some(wanted)
        && status.replicas == Some(wanted)
        && status.available_replicas == Some(wanted)
}

fn deployment(name: &str, pod_spec: serde_json::Value) -> Deployment {
    serde_json::from_value(serde_json::json!({
        "metadata": {"name": name},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": pod_spec}
        }
    }))
    .unwrap()
}

#[tokio::test]
async fn deployments_roll_out_on_fake_nodes_and_a_pod_no_node_matches_waits() {
    let ctx = TestContext::new("pods").await.unwrap();
    let deployments = Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let container = serde_json::json!([{"name": "web", "image": "registry.invalid/web:1"}]);
    let runs = deployment("runs", serde_json::json!({"containers": container}));
    let stuck = deployment(
        "stuck",
        serde_json::json!({"containers": container, "nodeSelector": {"sigil.dev/test-node": "none"}}),
    );
    for d in [&runs, &stuck] {
        deployments.create(&PostParams::default(), d).await.unwrap();
    }
    eventually(KCM_TIMEOUT, || async {
        rolled_out(&deployments.get("runs").await.ok()?).then_some(())
    })
    .await;
    // A restart rolls out too: the new ReplicaSet's Pods become available.
    let restart = serde_json::json!({"spec": {"template": {"metadata": {"annotations": {
        "kubectl.kubernetes.io/restartedAt": "2025-01-01T00:00:00Z"
    }}}}});
    deployments
        .patch("runs", &PatchParams::default(), &Patch::Merge(&restart))
        .await
        .unwrap();
    eventually(KCM_TIMEOUT, || async {
        let d = deployments.get("runs").await.ok()?;
        (d.metadata.generation == Some(2) && rolled_out(&d)).then_some(())
    })
    .await;

    let pods = Api::<k8s_openapi::api::core::v1::Pod>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let unschedulable = eventually(KCM_TIMEOUT, || async {
        let listed = pods
            .list(&ListParams::default().labels("app=stuck"))
            .await
            .ok()?;
        let reasons: Vec<String> = listed
            .items
            .iter()
            .filter_map(|p| {
                let status = p.status.as_ref()?;
                let scheduled = status
                    .conditions
                    .iter()
                    .flatten()
                    .find(|c| c.type_ == "PodScheduled")?;
                Some(format!(
                    "{}/{}",
                    status.phase.as_deref().unwrap_or(""),
                    scheduled.reason.as_deref().unwrap_or("")
                ))
            })
            .collect();
        (reasons.len() == 2).then_some(reasons)
    })
    .await;
    assert!(
        unschedulable.iter().all(|r| r == "Pending/Unschedulable"),
        "{unschedulable:?}"
    );
    assert!(!rolled_out(&deployments.get("stuck").await.unwrap()));
}

/// `psql -Atc sql` as the environment's superuser, with `password`.
fn psql(env: &sigil_tests::Env, password: &str, sql: &str) -> std::process::Output {
    let bin = std::path::Path::new(env.var("SIGIL_POSTGRES_BIN").unwrap()).join("psql");
    std::process::Command::new(bin)
        .args(["-h", env.var("SIGIL_POSTGRES_HOST").unwrap()])
        .args(["-p", env.var("SIGIL_POSTGRES_PORT").unwrap()])
        .args(["-U", env.var("SIGIL_POSTGRES_USER").unwrap()])
        .args(["-d", "postgres", "-Atc", sql])
        .env("PGPASSWORD", password)
        .env("PGCONNECT_TIMEOUT", "10")
        .output()
        .expect("psql runs")
}

#[tokio::test]
async fn postgres_logs_in_by_scram_with_the_password_only() {
    let ctx = TestContext::new("postgres").await.unwrap();
    let password = ctx.env.var("SIGIL_POSTGRES_PASSWORD").unwrap();
    let ok = psql(ctx.env, password, "show password_encryption");
    assert!(
        ok.status.success(),
        "{}",
        String::from_utf8_lossy(&ok.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&ok.stdout).trim(), "scram-sha-256");
    let refused = psql(ctx.env, "not-the-password", "select 1");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("password authentication failed"),
        "{stderr}"
    );
}

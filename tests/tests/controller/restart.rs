//! Rolling the workloads that consume a Secret, on the real apiserver: finding them,
//! idempotent and throttled rollouts (through the library's `Restarter`, as the Rotation
//! engine calls it), and the reload opt-in (through the controller binary), debounced.
//! kwok runs the Pods, so rollouts complete; a Pod whose `nodeSelector` matches no fake
//! node never starts, which is how a rollout that never completes is made here.

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::time::{Duration, Instant};

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::apps::v1::{DaemonSet, Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sigil_controller::common::metrics::Metrics;
use sigil_controller::restart::{Restarter, Rolled, Workload, WorkloadKind};
use sigil_tests::TestContext;
use sigil_types::{RELOAD_ANNOTATION, RESTARTED_FOR_ANNOTATION};

use crate::support::*;
use crate::sync::{metric, put_secret};

/// A pod spec of one container with `container`'s fields, and `pod`'s pod-level fields.
fn pod(container: Value, pod: Value) -> Value {
    let mut app = json!({"name": "app", "image": "example.invalid/app:1"});
    app.as_object_mut()
        .unwrap()
        .extend(container.as_object().unwrap().clone());
    let mut spec = json!({"containers": [app]});
    spec.as_object_mut()
        .unwrap()
        .extend(pod.as_object().unwrap().clone());
    spec
}

/// Creates a workload of kind `K` named `name` in the test's namespace.
async fn create<K>(ctx: &TestContext, name: &str, reload: bool, pod_spec: Value)
where
    K: Resource<DynamicType = (), Scope = NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + Serialize
        + Debug,
{
    let labels = json!({"app": name});
    let annotations = if reload {
        json!({RELOAD_ANNOTATION: "true"})
    } else {
        json!({})
    };
    let mut spec = json!({
        "selector": {"matchLabels": labels},
        "template": {"metadata": {"labels": labels}, "spec": pod_spec},
    });
    if K::kind(&()) == "StatefulSet" {
        spec["serviceName"] = json!(name);
    }
    let obj: K = serde_json::from_value(json!({
        "apiVersion": "apps/v1",
        "kind": K::kind(&()),
        "metadata": {"name": name, "annotations": annotations},
        "spec": spec,
    }))
    .unwrap();
    Api::<K>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .create(&PostParams::default(), &obj)
        .await
        .unwrap();
}

/// (restarted-for annotation of the pod template, generation) of Deployment `name`.
async fn deployment_state(ctx: &TestContext, name: &str) -> (Option<String>, i64) {
    let d = Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get(name)
        .await
        .unwrap();
    let restarted_for = d
        .spec
        .and_then(|s| s.template.metadata)
        .and_then(|m| m.annotations)
        .and_then(|a| a.get(RESTARTED_FOR_ANNOTATION).cloned());
    (restarted_for, d.metadata.generation.unwrap_or(0))
}

fn workload(ctx: &TestContext, kind: WorkloadKind, name: &str) -> Workload {
    Workload {
        kind,
        namespace: ctx.namespace.clone(),
        name: name.to_owned(),
    }
}

/// Pod-level fields that keep a Pod off every node: its rollout never completes.
fn unschedulable() -> Value {
    json!({"nodeSelector": {"sigil.dev/test-node": "none"}})
}

#[tokio::test]
async fn consumers_are_found_and_rolled_once_each_within_the_limit() {
    let ctx = TestContext::new("restart-roll").await.unwrap();
    let by_env = json!({"env": [{"name": "P", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]});
    create::<Deployment>(&ctx, "env", false, pod(by_env, unschedulable())).await;
    let by_volume = json!({"volumes": [{"name": "s", "secret": {"secretName": "db"}}]});
    create::<StatefulSet>(&ctx, "volume", false, pod(json!({}), by_volume)).await;
    let by_init = json!({"initContainers": [{"name": "init", "image": "example.invalid/init:1", "envFrom": [{"secretRef": {"name": "db"}}]}]});
    create::<DaemonSet>(&ctx, "init", false, pod(json!({}), by_init)).await;
    let other = json!({"envFrom": [{"secretRef": {"name": "unrelated"}}]});
    create::<Deployment>(&ctx, "other", false, pod(other, json!({}))).await;

    let metrics = std::sync::Arc::new(Metrics::default());
    let deadline = Duration::from_secs(3);
    let restarter = Restarter::new(ctx.kube.clone(), 1, deadline, metrics.clone());
    let found = restarter
        .consumers(&ctx.namespace, &BTreeSet::from(["db".to_owned()]))
        .await
        .unwrap();
    let env = workload(&ctx, WorkloadKind::Deployment, "env");
    let volume = workload(&ctx, WorkloadKind::StatefulSet, "volume");
    let init = workload(&ctx, WorkloadKind::DaemonSet, "init");
    assert_eq!(found, [env.clone(), volume.clone(), init.clone()]);

    // The first takes the only slot, and keeps it: its Pods never start.
    let started = Instant::now();
    assert_eq!(restarter.roll(&env, "rot@1").await.unwrap(), Rolled::Rolled);
    assert!(started.elapsed() < Duration::from_secs(2));
    let (restarted_for, generation) = deployment_state(&ctx, "env").await;
    assert_eq!(restarted_for.as_deref(), Some("rot@1"));
    assert_eq!(generation, 2);
    let managers: Vec<String> = Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("env")
        .await
        .unwrap()
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        managers.iter().any(|m| m == "sigil-controller/restart"),
        "{managers:?}"
    );

    // A retried step: no slot needed, nothing written.
    let again = Instant::now();
    assert_eq!(
        restarter.roll(&env, "rot@1").await.unwrap(),
        Rolled::AlreadyRolled
    );
    assert!(again.elapsed() < Duration::from_secs(1));
    assert_eq!(deployment_state(&ctx, "env").await.1, 2);

    // Deleted workloads are gone, also without a slot.
    Api::<DaemonSet>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .delete("init", &DeleteParams::default())
        .await
        .unwrap();
    assert_eq!(restarter.roll(&init, "rot@1").await.unwrap(), Rolled::Gone);
    let missing = workload(&ctx, WorkloadKind::Deployment, "missing");
    assert_eq!(
        restarter.roll(&missing, "rot@1").await.unwrap(),
        Rolled::Gone
    );
    assert!(again.elapsed() < Duration::from_secs(2));

    // The next rollout waits for the slot until the first one's deadline.
    assert_eq!(
        restarter.roll(&volume, "rot@1").await.unwrap(),
        Rolled::Rolled
    );
    let waited = started.elapsed();
    assert!(
        waited >= deadline - Duration::from_millis(200) && waited < deadline * 3,
        "{waited:?}"
    );

    let text = metrics.encode();
    for (result, count) in [("rolled", 2), ("already_rolled", 1), ("gone", 2)] {
        let line =
            format!("sigil_rollouts_total{{trigger=\"rotation\",result=\"{result}\"}} {count}");
        assert!(text.contains(&line), "{line} not in\n{text}");
    }
}

#[tokio::test]
async fn a_completed_rollout_frees_its_slot_before_the_deadline() {
    let ctx = TestContext::new("restart-complete").await.unwrap();
    let by_env = json!({"envFrom": [{"secretRef": {"name": "db"}}]});
    for name in ["first", "second"] {
        create::<Deployment>(&ctx, name, false, pod(by_env.clone(), json!({}))).await;
    }
    let api = Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace);
    for name in ["first", "second"] {
        eventually(Duration::from_secs(60), || async {
            let d = api.get(name).await.ok()?;
            (d.status?.available_replicas? == 1).then_some(())
        })
        .await;
    }
    // One slot, held up to a minute: only a rollout that completes gives it back sooner.
    let deadline = Duration::from_secs(60);
    let restarter = Restarter::new(
        ctx.kube.clone(),
        1,
        deadline,
        std::sync::Arc::new(Metrics::default()),
    );
    let started = Instant::now();
    for name in ["first", "second"] {
        let rolled = restarter
            .roll(&workload(&ctx, WorkloadKind::Deployment, name), "rot@1")
            .await
            .unwrap();
        assert_eq!(rolled, Rolled::Rolled);
    }
    let waited = started.elapsed();
    assert!(waited < deadline / 2, "{waited:?}");
}

#[tokio::test]
async fn reload_rolls_opted_in_consumers_once_after_a_burst_of_changes() {
    let ctx = TestContext::new("restart-reload").await.unwrap();
    install_crds(&ctx.kube).await;
    put_secret(&ctx, "config", &[("value", "0")], &[]).await;
    let env_from = json!({"envFrom": [{"secretRef": {"name": "config"}}]});
    create::<Deployment>(&ctx, "opted", true, pod(env_from.clone(), json!({}))).await;
    create::<Deployment>(&ctx, "bystander", false, pod(env_from, json!({}))).await;
    let projected = json!({"volumes": [{"name": "c", "projected": {"sources": [{"secret": {"name": "config"}}]}}]});
    create::<Deployment>(&ctx, "projected", true, pod(json!({}), projected)).await;

    let controller = Controller::start(
        &ctx,
        "a",
        &["--reload-debounce", "2s", "--rollout-deadline", "1s"],
    );
    controller.wait_ready().await;
    // Both opted-in workloads indexed, and what their Secret holds recorded.
    eventually(Duration::from_secs(20), || async {
        (metric(&controller, "sigil_reload_workloads", &[]) == 2.0).then_some(())
    })
    .await;

    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    for value in ["1", "2", "3", "4", "5"] {
        put_secret(&ctx, "config", &[("value", value)], &[]).await;
    }
    let version = secrets
        .get("config")
        .await
        .unwrap()
        .resource_version()
        .unwrap();
    let expected = format!("reload/config@{version}");
    for name in ["opted", "projected"] {
        let (restarted_for, generation) = eventually(Duration::from_secs(15), || async {
            let state = deployment_state(&ctx, name).await;
            state.0.is_some().then_some(state)
        })
        .await;
        assert_eq!(restarted_for.as_deref(), Some(expected.as_str()), "{name}");
        assert_eq!(generation, 2, "{name} rolled more than once");
    }

    // A metadata-only edit is no change; and nothing more comes of the burst.
    secrets
        .patch(
            "config",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"touched": "yes"}}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    for name in ["opted", "projected"] {
        let (restarted_for, generation) = deployment_state(&ctx, name).await;
        assert_eq!(restarted_for.as_deref(), Some(expected.as_str()), "{name}");
        assert_eq!(generation, 2, "{name} rolled again");
    }
    assert_eq!(deployment_state(&ctx, "bystander").await, (None, 1));
    assert_eq!(
        metric(
            &controller,
            "sigil_rollouts_total",
            &["trigger=\"reload\"", "result=\"rolled\""]
        ),
        2.0
    );
}

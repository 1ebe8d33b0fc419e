//! Rotations on the real servers: OpenBao KV v2 and moto's Secrets Manager as stores,
//! kube-apiserver and kube-controller-manager for the mirrors and rollouts. Each test
//! has its own controller, namespace and remote prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, ReplicaSet};
use k8s_openapi::api::core::v1::{ConfigMap, Event, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sigil_tests::TestContext;
use sigil_types::{ExternalSecret, Rotation, RotationPhase};

use crate::support::*;
use crate::sync::{
    apply_obj, aws_put, aws_store, events, external, secret_data, store, vault_put,
    vault_token_store, wait_es,
};

/// Flags of every controller here: a rollout that does not complete holds its slot
/// briefly.
const FLAGS: &[&str] = &["--rollout-deadline", "1s"];

/// The CRDs installed and a controller ready, with [`FLAGS`].
async fn started(ctx: &TestContext) -> Controller {
    install_crds(&ctx.kube).await;
    let controller = Controller::start(ctx, "a", FLAGS);
    controller.wait_ready().await;
    controller
}

pub(crate) async fn rotation(ctx: &TestContext, name: &str, spec: Value) {
    apply_obj::<Rotation>(
        Api::namespaced(ctx.kube.clone(), &ctx.namespace),
        "Rotation",
        json!({"metadata": {"name": name, "namespace": ctx.namespace}, "spec": spec}),
    )
    .await;
}

/// Creates a Rotation and waits for it to complete; fails with its Ready reason if it
/// does not.
async fn rotate(ctx: &TestContext, name: &str, spec: Value) -> Rotation {
    rotation(ctx, name, spec).await;
    let done = finished(ctx, name).await;
    assert_eq!(
        phase(&done),
        RotationPhase::Completed,
        "{name}: {:?}",
        ready_reason(&done)
    );
    done
}

/// The Rotation once it reached `Completed` or `Failed`: a resumed one first waits for
/// the crashed controller's Lease to expire, then for its rollouts, on a busy machine.
pub(crate) async fn finished(ctx: &TestContext, name: &str) -> Rotation {
    eventually(Duration::from_secs(120), || async {
        let obj = Api::<Rotation>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .get(name)
            .await
            .ok()?;
        obj.status.as_ref()?.phase?.is_final().then_some(obj)
    })
    .await
}

fn phase(obj: &Rotation) -> RotationPhase {
    obj.status.as_ref().and_then(|s| s.phase).unwrap()
}

pub(crate) fn ready_reason(obj: &Rotation) -> (String, String) {
    let c = obj
        .status
        .as_ref()
        .unwrap()
        .conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .unwrap();
    (c.reason.clone(), c.message.clone())
}

/// A Deployment with one container that consumes `secret` as `how` says.
pub(crate) async fn deployment(ctx: &TestContext, name: &str, secret: &str, how: &str) {
    let mut pod = json!({"containers": [{"name": "app", "image": "example.invalid/app:1"}]});
    match how {
        "env" => {
            pod["containers"][0]["env"] = json!([{"name": "PASSWORD", "valueFrom": {"secretKeyRef": {"name": secret, "key": "password"}}}])
        }
        "envFrom" => pod["containers"][0]["envFrom"] = json!([{"secretRef": {"name": secret}}]),
        // Consumes it, but no node matches: the rollout never completes.
        "unplaceable" => {
            pod["containers"][0]["envFrom"] = json!([{"secretRef": {"name": secret}}]);
            pod["nodeSelector"] = json!({"sigil.dev/test-node": "none"});
        }
        "volume" => pod["volumes"] = json!([{"name": "s", "secret": {"secretName": secret}}]),
        "projected" => {
            pod["volumes"] =
                json!([{"name": "s", "projected": {"sources": [{"secret": {"name": secret}}]}}])
        }
        _ => {}
    }
    let body: Deployment = serde_json::from_value(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": name, "namespace": ctx.namespace},
        "spec": {"replicas": 1, "selector": {"matchLabels": {"app": name}},
                 "template": {"metadata": {"labels": {"app": name}}, "spec": pod}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
}

async fn get_deployment(ctx: &TestContext, name: &str) -> Deployment {
    Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get(name)
        .await
        .unwrap()
}

fn restarted_for(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(sigil_types::RESTARTED_FOR_ANNOTATION)
        .cloned()
}

async fn replica_sets(ctx: &TestContext, app: &str) -> usize {
    Api::<ReplicaSet>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default().labels(&format!("app={app}")))
        .await
        .unwrap()
        .items
        .len()
}

/// (current version, custom_metadata) of a KV v2 secret.
pub(crate) async fn kv_meta(ctx: &TestContext, key: &str) -> (u64, BTreeMap<String, String>) {
    let vault = ctx.env.vault_client(None).unwrap();
    let meta =
        vaultrs::kv2::read_metadata(&vault, "secret", &format!("{}/{key}", ctx.vault_prefix))
            .await
            .unwrap();
    let custom = meta
        .custom_metadata
        .unwrap_or_default()
        .into_iter()
        .collect();
    (meta.current_version, custom)
}

pub(crate) async fn kv_version(ctx: &TestContext, key: &str, version: u64) -> Value {
    let vault = ctx.env.vault_client(None).unwrap();
    vaultrs::kv2::read_version(
        &vault,
        "secret",
        &format!("{}/{key}", ctx.vault_prefix),
        version,
    )
    .await
    .unwrap()
}

/// Every version of an AWS secret: VersionId → staging labels.
pub(crate) async fn aws_versions(ctx: &TestContext, key: &str) -> BTreeMap<String, Vec<String>> {
    let sm = ctx.env.secretsmanager().unwrap();
    let out = sm
        .list_secret_version_ids()
        .secret_id(format!("{}{key}", ctx.aws_prefix))
        .include_deprecated(true)
        .send()
        .await
        .unwrap();
    out.versions()
        .iter()
        .map(|v| {
            (
                v.version_id().unwrap().to_owned(),
                v.version_stages().to_vec(),
            )
        })
        .collect()
}

pub(crate) async fn aws_value(ctx: &TestContext, key: &str, stage: &str) -> (String, String) {
    let sm = ctx.env.secretsmanager().unwrap();
    let out = sm
        .get_secret_value()
        .secret_id(format!("{}{key}", ctx.aws_prefix))
        .version_stage(stage)
        .send()
        .await
        .unwrap();
    (
        out.version_id().unwrap().to_owned(),
        out.secret_string().unwrap().to_owned(),
    )
}

fn password_of(json_text: &str) -> String {
    serde_json::from_str::<Value>(json_text).unwrap()["password"]
        .as_str()
        .unwrap()
        .to_owned()
}

/// An ExternalSecret copying property `password` of `key` into Secret `name`.
pub(crate) async fn password_mirror(ctx: &TestContext, name: &str, store_name: &str, key: &str) {
    external(
        ctx,
        name,
        json!({"secretStoreRef": {"name": store_name}, "refreshInterval": "1h",
               "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}]}),
    )
    .await;
}

#[tokio::test]
async fn vault_rotation_refreshes_every_mirror_restarts_consumers_and_keeps_history() {
    let ctx = TestContext::new("rot-vault").await.unwrap();
    let controller = started(&ctx).await;
    let key = format!("{}/db", ctx.vault_prefix);
    let base = vault_put(
        &ctx,
        "db",
        json!({"user": "app", "password": "old-password"}),
    )
    .await;
    vault_token_store(&ctx, "vault").await;
    // A second store on the same server: its ExternalSecrets mirror the same key.
    let token = ctx.env.var("VAULT_TOKEN").unwrap().to_owned();
    let _ = token;
    store(
        &ctx,
        "vault-again",
        json!({"vault": {"server": ctx.env.var("VAULT_ADDR").unwrap(), "path": "secret",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}),
    )
    .await;
    password_mirror(&ctx, "db", "vault", &key).await;
    external(
        &ctx,
        "db-all",
        json!({"secretStoreRef": {"name": "vault-again"}, "refreshInterval": "1h",
               "dataFrom": [{"extract": {"key": key}}]}),
    )
    .await;
    external(
        &ctx,
        "other",
        json!({"secretStoreRef": {"name": "vault"}, "refreshInterval": "1h",
               "data": [{"secretKey": "x", "remoteRef": {"key": format!("{}/other", ctx.vault_prefix), "property": "x"}}]}),
    )
    .await;
    vault_put(&ctx, "other", json!({"x": "unrelated"})).await;
    for es in ["db", "db-all", "other"] {
        wait_es(&ctx, es, "SecretSynced").await;
    }
    deployment(&ctx, "api", "db", "env").await;
    deployment(&ctx, "worker", "db-all", "projected").await;
    deployment(&ctx, "bystander", "other", "envFrom").await;
    eventually(Duration::from_secs(30), || async {
        (replica_sets(&ctx, "api").await == 1).then_some(())
    })
    .await;
    let bystander_generation = get_deployment(&ctx, "bystander").await.metadata.generation;

    let done = rotate(
        &ctx,
        "incident-42",
        json!({"externalSecretRef": {"name": "db"}, "reason": "INC-42 leaked"}),
    )
    .await;
    let status = done.status.clone().unwrap();

    // Exactly one new version, every other property kept, the old one still readable.
    let (current, custom) = kv_meta(&ctx, "db").await;
    assert_eq!(current, base + 1);
    assert_eq!(
        status.base_version.as_deref(),
        Some(base.to_string().as_str())
    );
    assert_eq!(
        status.new_version.as_deref(),
        Some(current.to_string().as_str())
    );
    assert_eq!(custom.get(sigil_types::ROTATION_CLAIM), done.uid().as_ref());
    let new = kv_version(&ctx, "db", current).await;
    let old = kv_version(&ctx, "db", base).await;
    assert_eq!(new["user"], "app");
    assert_eq!(old["password"], "old-password");
    let password = new["password"].as_str().unwrap().to_owned();
    assert_eq!(password.len(), 32);
    assert_ne!(password, "old-password");

    // Every mirror holds it, through either store; the unrelated one is untouched.
    assert_eq!(secret_data(&ctx, "db").await.unwrap()["password"], password);
    assert_eq!(
        secret_data(&ctx, "db-all").await.unwrap()["password"],
        password
    );
    let ns = &ctx.namespace;
    assert_eq!(
        status.external_secrets,
        [format!("{ns}/db"), format!("{ns}/db-all")]
    );
    assert_eq!(status.secrets, [format!("{ns}/db"), format!("{ns}/db-all")]);

    // The consumers are rolled once (a new ReplicaSet each), the bystander is not.
    let workloads: Vec<String> = status
        .workloads
        .iter()
        .map(|w| format!("{}/{}", w.kind, w.name))
        .collect();
    assert_eq!(workloads, ["Deployment/api", "Deployment/worker"]);
    let api = get_deployment(&ctx, "api").await;
    assert_eq!(
        restarted_for(&api).as_deref(),
        Some(format!("{ns}/incident-42@{current}").as_str())
    );
    assert_eq!(
        get_deployment(&ctx, "bystander").await.metadata.generation,
        bystander_generation
    );
    eventually(Duration::from_secs(30), || async {
        (replica_sets(&ctx, "api").await == 2).then_some(())
    })
    .await;
    eventually(Duration::from_secs(30), || async {
        (replica_sets(&ctx, "worker").await == 2).then_some(())
    })
    .await;
    // Completed only once every consumer runs the new template: the rollouts were awaited.
    for name in ["api", "worker"] {
        let d = get_deployment(&ctx, name).await;
        let (spec, status) = (d.spec.unwrap(), d.status.unwrap());
        let wanted = spec.replicas.unwrap_or(1);
        assert_eq!(status.observed_generation, d.metadata.generation, "{name}");
        assert_eq!(status.updated_replicas, Some(wanted), "{name}");
        assert_eq!(status.available_replicas, Some(wanted), "{name}");
        assert_eq!(status.replicas, Some(wanted), "{name}");
    }

    // Each step has its times; each emitted its Event and audit line.
    let steps: Vec<&str> = status.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(
        steps,
        [
            "resolve",
            "stage",
            "promote",
            "propagate",
            "restart",
            "await-rollout",
            "complete"
        ]
    );
    assert!(status.steps.iter().all(|s| {
        s.finished_at
            .as_ref()
            .is_some_and(|f| f.0 >= s.started_at.0)
    }));
    let completed = |e: &Event| {
        e.involved_object.name.as_deref() == Some("incident-42")
            && e.reason.as_deref() == Some("RotationCompleted")
    };
    let reasons: Vec<String> = events_once(&ctx, |events| events.iter().any(completed))
        .await
        .into_iter()
        .filter(|e| e.involved_object.name.as_deref() == Some("incident-42"))
        .filter_map(|e| e.reason)
        .collect();
    for reason in [
        "RotationStaged",
        "RotationPromoted",
        "SecretsRefreshed",
        "WorkloadsRestarted",
        "WorkloadsRolledOut",
        "RotationCompleted",
    ] {
        assert!(
            reasons.iter().any(|r| r == reason),
            "{reason} missing from {reasons:?}"
        );
    }
    let audit = controller.audit();
    let steps_audited: Vec<&str> = audit
        .iter()
        .filter(|l| l["rotation"] == format!("{ns}/incident-42"))
        .map(|l| l["step"].as_str().unwrap())
        .collect();
    assert_eq!(
        steps_audited,
        [
            "resolve",
            "stage",
            "promote",
            "propagate",
            "restart",
            "await-rollout",
            "complete"
        ]
    );
    assert!(
        audit
            .iter()
            .all(|l| l["requested_by"] == "kubectl" && l["timestamp"].is_string())
    );

    // The value is nowhere but in the store and the mirrors.
    let shown = serde_json::to_string(&done).unwrap();
    assert!(!shown.contains(&password));
    assert!(!controller.logs().contains(&password));
    assert!(!serde_json::to_string(&audit).unwrap().contains(&password));
    assert!(
        !serde_json::to_string(&events(&ctx).await)
            .unwrap()
            .contains(&password)
    );

    // A restarted controller finds it done and writes nothing more.
    drop(controller);
    let again = Controller::start(&ctx, "b", FLAGS);
    again.wait_ready().await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(kv_meta(&ctx, "db").await.0, base + 1);
    assert_eq!(
        restarted_for(&get_deployment(&ctx, "api").await),
        restarted_for(&api)
    );
}

#[tokio::test]
async fn aws_rotation_stages_promotes_and_keeps_the_previous_version() {
    let ctx = TestContext::new("rot-aws").await.unwrap();
    let _controller = started(&ctx).await;
    let key = format!("{}db", ctx.aws_prefix);
    let base = aws_put(&ctx, "db", r#"{"user":"app","password":"old-password"}"#).await;
    aws_store(&ctx, "aws", ctx.env.var("AWS_ENDPOINT_URL").unwrap()).await;
    password_mirror(&ctx, "db", "aws", &key).await;
    wait_es(&ctx, "db", "SecretSynced").await;
    deployment(&ctx, "api", "db", "volume").await;
    let generation = get_deployment(&ctx, "api").await.metadata.generation;

    let done = rotate(
        &ctx,
        "r1",
        json!({"externalSecretRef": {"name": "db", "secretKey": "password"}, "restart": false,
        "generate": {"length": 20, "symbols": false}}),
    )
    .await;
    let uid = done.uid().unwrap();
    let status = done.status.clone().unwrap();
    assert_eq!(
        status.new_version.as_deref(),
        Some(uid.as_str()),
        "the VersionId is the Rotation's UID"
    );
    assert_eq!(status.base_version.as_deref(), Some(base.as_str()));

    let versions = aws_versions(&ctx, "db").await;
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(versions[&uid], ["AWSCURRENT"]);
    assert_eq!(versions[&base], ["AWSPREVIOUS"]);
    let (_, previous) = aws_value(&ctx, "db", "AWSPREVIOUS").await;
    assert_eq!(password_of(&previous), "old-password");
    let (_, current) = aws_value(&ctx, "db", "AWSCURRENT").await;
    let password = password_of(&current);
    assert_eq!(password.len(), 20);
    assert!(password.chars().all(|c| c.is_ascii_alphanumeric()));
    assert_eq!(
        serde_json::from_str::<Value>(&current).unwrap()["user"],
        "app"
    );
    assert_eq!(secret_data(&ctx, "db").await.unwrap()["password"], password);

    // restart: false: nobody rolled, no restart step.
    assert!(status.workloads.is_empty());
    assert!(status.steps.iter().all(|s| s.name != "restart"));
    assert_eq!(
        get_deployment(&ctx, "api").await.metadata.generation,
        generation
    );
    assert!(!serde_json::to_string(&done).unwrap().contains(&password));
}

/// Kills the controller (process exit at a fail point) at every step boundary, then
/// lets a fresh controller finish: each Rotation completes exactly once.
async fn crash_everywhere(provider: &str, fail_points: &[&str]) {
    let ctx = TestContext::new(&format!("rot-crash-{provider}"))
        .await
        .unwrap();
    install_crds(&ctx.kube).await;
    let key = match provider {
        "vault" => {
            vault_put(&ctx, "db", json!({"user": "app", "password": "initial"})).await;
            vault_token_store(&ctx, "store").await;
            format!("{}/db", ctx.vault_prefix)
        }
        _ => {
            aws_put(&ctx, "db", r#"{"user":"app","password":"initial"}"#).await;
            aws_store(&ctx, "store", ctx.env.var("AWS_ENDPOINT_URL").unwrap()).await;
            format!("{}db", ctx.aws_prefix)
        }
    };
    password_mirror(&ctx, "db", "store", &key).await;
    deployment(&ctx, "api", "db", "envFrom").await;
    for (i, fail_point) in fail_points.iter().enumerate() {
        let name = format!("r{i}");
        let before_vault = if provider == "vault" {
            kv_meta(&ctx, "db").await.0
        } else {
            0
        };
        let before_aws = if provider == "aws" {
            aws_versions(&ctx, "db").await
        } else {
            BTreeMap::new()
        };
        let generation = get_deployment(&ctx, "api")
            .await
            .metadata
            .generation
            .unwrap();

        let failpoints = format!("{fail_point}=return");
        let mut doomed =
            Controller::start_with_env(&ctx, "doomed", FLAGS, &[("FAILPOINTS", &failpoints)]);
        if i == 0 {
            doomed.wait_ready().await;
            wait_es(&ctx, "db", "SecretSynced").await;
        }
        rotation(&ctx, &name, json!({"externalSecretRef": {"name": "db"}})).await;
        let code = doomed.wait_exit(Duration::from_secs(60)).await;
        assert_eq!(
            code,
            Some(86),
            "{provider}: the controller did not stop at {fail_point}"
        );
        drop(doomed);

        let fresh = Controller::start(&ctx, "fresh", FLAGS);
        let done = finished(&ctx, &name).await;
        assert_eq!(
            phase(&done),
            RotationPhase::Completed,
            "{fail_point}: {:?}",
            ready_reason(&done)
        );
        let new = done.status.as_ref().unwrap().new_version.clone().unwrap();
        let remote_password = match provider {
            "vault" => {
                let (current, _) = kv_meta(&ctx, "db").await;
                assert_eq!(
                    current,
                    before_vault + 1,
                    "{fail_point}: exactly one new KV version"
                );
                assert_eq!(new, current.to_string());
                kv_version(&ctx, "db", before_vault).await;
                kv_version(&ctx, "db", current).await["password"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            }
            _ => {
                let versions = aws_versions(&ctx, "db").await;
                assert_eq!(
                    versions.len(),
                    before_aws.len() + 1,
                    "{fail_point}: exactly one new version: {versions:?}"
                );
                assert_eq!(versions[&new], ["AWSCURRENT"], "{fail_point}");
                let previous = before_aws
                    .iter()
                    .find(|(_, s)| s.iter().any(|s| s == "AWSCURRENT"))
                    .unwrap()
                    .0;
                assert_eq!(versions[previous], ["AWSPREVIOUS"], "{fail_point}");
                assert!(
                    versions.values().flatten().all(|s| s != "AWSPENDING"),
                    "{fail_point}"
                );
                password_of(&aws_value(&ctx, "db", "AWSCURRENT").await.1)
            }
        };
        // The mirror holds what was written: the value was never generated twice.
        eventually(Duration::from_secs(20), || async {
            (secret_data(&ctx, "db").await?["password"] == remote_password).then_some(())
        })
        .await;
        let api = get_deployment(&ctx, "api").await;
        assert_eq!(
            api.metadata.generation,
            Some(generation + 1),
            "{fail_point}: rolled exactly once"
        );
        assert_eq!(
            restarted_for(&api),
            Some(format!("{}/{name}@{new}", ctx.namespace)),
            "{fail_point}"
        );
        drop(fresh);
    }
}

const COMMON_FAIL_POINTS: &[&str] = &[
    "rotation-after-resolve",
    "rotation-before-write",
    "rotation-after-write",
    "rotation-after-stage",
    "rotation-after-promote",
    "rotation-after-refresh",
    "rotation-after-propagate",
    "rotation-after-roll",
    "rotation-after-restart",
    "rotation-after-await-rollout",
    "rotation-after-complete",
];

#[tokio::test]
async fn vault_rotation_survives_a_crash_at_every_step() {
    crash_everywhere("vault", COMMON_FAIL_POINTS).await;
}

#[tokio::test]
async fn aws_rotation_survives_a_crash_at_every_step() {
    let mut points = COMMON_FAIL_POINTS.to_vec();
    points.insert(5, "rotation-after-move");
    crash_everywhere("aws", &points).await;
}

#[tokio::test]
async fn a_foreign_write_fails_the_rotation_and_two_rotations_never_interleave() {
    let ctx = TestContext::new("rot-race").await.unwrap();
    install_crds(&ctx.kube).await;
    let base = vault_put(&ctx, "db", json!({"password": "p0"})).await;
    vault_token_store(&ctx, "vault").await;
    password_mirror(&ctx, "db", "vault", &format!("{}/db", ctx.vault_prefix)).await;

    // Someone writes between resolve and stage: the Rotation fails and writes nothing.
    let mut doomed = Controller::start_with_env(
        &ctx,
        "doomed",
        FLAGS,
        &[("FAILPOINTS", "rotation-after-resolve=return")],
    );
    doomed.wait_ready().await;
    wait_es(&ctx, "db", "SecretSynced").await;
    rotation(&ctx, "raced", json!({"externalSecretRef": {"name": "db"}})).await;
    assert_eq!(doomed.wait_exit(Duration::from_secs(60)).await, Some(86));
    drop(doomed);
    let foreign = vault_put(&ctx, "db", json!({"password": "by-hand"})).await;
    assert_eq!(foreign, base + 1);
    let controller = Controller::start(&ctx, "a", FLAGS);
    let raced = finished(&ctx, "raced").await;
    assert_eq!(phase(&raced), RotationPhase::Failed);
    let (reason, message) = ready_reason(&raced);
    assert_eq!(reason, "ConcurrentWrite");
    assert!(
        message.contains(&format!("read version {base}"))
            && message.contains("nothing more was written"),
        "{message}"
    );
    assert_eq!(kv_meta(&ctx, "db").await.0, foreign);
    events_once(&ctx, |events| {
        events
            .iter()
            .any(|e| e.reason.as_deref() == Some("RotationFailed"))
    })
    .await;

    // Two at once: one waits for the other, so the second starts from the first's version.
    rotation(
        &ctx,
        "first",
        json!({"externalSecretRef": {"name": "db"}, "restart": false}),
    )
    .await;
    rotation(
        &ctx,
        "second",
        json!({"externalSecretRef": {"name": "db"}, "restart": false}),
    )
    .await;
    let first = finished(&ctx, "first").await;
    let second = finished(&ctx, "second").await;
    assert_eq!(
        (phase(&first), phase(&second)),
        (RotationPhase::Completed, RotationPhase::Completed)
    );
    assert_eq!(kv_meta(&ctx, "db").await.0, foreign + 2);
    let chain = |r: &Rotation| {
        let s = r.status.as_ref().unwrap();
        (
            s.base_version.clone().unwrap(),
            s.new_version.clone().unwrap(),
        )
    };
    let (a, b) = (chain(&first), chain(&second));
    assert!(
        a.1 == b.0 || b.1 == a.0,
        "interleaved: first {a:?}, second {b:?}"
    );
    drop(controller);
}

async fn list_all<K>(ctx: &TestContext) -> Vec<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope, DynamicType = ()>
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug,
{
    Api::<K>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// Everything a rotation could touch, for byte-for-byte comparison.
async fn snapshot(ctx: &TestContext) -> String {
    let vault_versions = kv_meta(ctx, "db").await;
    let vault_data = kv_version(ctx, "db", vault_versions.0).await;
    let secrets: Vec<Secret> = list_all(ctx).await;
    let deployments: Vec<Deployment> = list_all(ctx).await;
    let externals: Vec<ExternalSecret> = list_all(ctx).await;
    serde_json::to_string(&json!({
        "vault": [vault_versions.0, vault_versions.1, vault_data],
        "aws": aws_versions(ctx, "db").await,
        "aws_value": aws_value(ctx, "db", "AWSCURRENT").await,
        "secrets": secrets,
        "deployments": deployments,
        "externals": externals,
    }))
    .unwrap()
}

#[tokio::test]
async fn dry_run_lists_what_would_change_and_changes_nothing() {
    let ctx = TestContext::new("rot-dry").await.unwrap();
    let controller = started(&ctx).await;
    vault_put(&ctx, "db", json!({"password": "p0"})).await;
    aws_put(&ctx, "db", r#"{"password":"a0"}"#).await;
    vault_token_store(&ctx, "vault").await;
    aws_store(&ctx, "aws", ctx.env.var("AWS_ENDPOINT_URL").unwrap()).await;
    password_mirror(
        &ctx,
        "vault-db",
        "vault",
        &format!("{}/db", ctx.vault_prefix),
    )
    .await;
    password_mirror(&ctx, "aws-db", "aws", &format!("{}db", ctx.aws_prefix)).await;
    wait_es(&ctx, "vault-db", "SecretSynced").await;
    wait_es(&ctx, "aws-db", "SecretSynced").await;
    deployment(&ctx, "api", "vault-db", "env").await;
    deployment(&ctx, "worker", "aws-db", "volume").await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = snapshot(&ctx).await;

    for (name, es) in [("dry-vault", "vault-db"), ("dry-aws", "aws-db")] {
        rotation(
            &ctx,
            name,
            json!({"externalSecretRef": {"name": es}, "dryRun": true}),
        )
        .await;
        let done = finished(&ctx, name).await;
        assert_eq!(phase(&done), RotationPhase::Completed);
        let (reason, message) = ready_reason(&done);
        assert_eq!(reason, "DryRun");
        assert!(message.contains("nothing was changed"), "{message}");
        let status = done.status.unwrap();
        assert_eq!(status.external_secrets, [format!("{}/{es}", ctx.namespace)]);
        assert_eq!(status.secrets, [format!("{}/{es}", ctx.namespace)]);
        assert_eq!(status.workloads.len(), 1);
        assert!(status.new_version.is_none());
    }
    assert_eq!(
        snapshot(&ctx).await,
        before,
        "a dry run changed the store or the cluster"
    );
    drop(controller);
}

#[tokio::test]
async fn sealing_key_rotation_makes_a_new_active_key_and_counts_old_users() {
    let ctx = TestContext::new("rot-seal").await.unwrap();
    let controller = started(&ctx).await;
    let dir = tempfile::tempdir().unwrap();
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "app", &[("k", "v")]),
    );
    apply(&ctx, &sealed).await;
    wait_reason(&ctx, "app", "Unsealed").await;
    let old_public = public_keys(&ctx).await;

    let done = rotate(
        &ctx,
        "new-key",
        json!({"sealingKey": {}, "reason": "yearly"}),
    )
    .await;
    let status = done.status.clone().unwrap();
    let (old, new) = (status.base_version.unwrap(), status.new_version.unwrap());
    assert_ne!(old, new);
    let usage: Vec<(String, bool, u32)> = status
        .sealing_keys
        .iter()
        .map(|u| (u.key_id.clone(), u.active, u.sealed_secrets))
        .collect();
    assert_eq!(usage, [(new.clone(), true, 0), (old.clone(), false, 1)]);
    // Published: the active key is first in the ConfigMap.
    eventually(Duration::from_secs(20), || async {
        let now = public_keys(&ctx).await;
        (now != old_public && now.lines().count() == 2).then_some(())
    })
    .await;
    let keys: Vec<Secret> = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default().labels(&format!(
            "{}={}",
            sigil_types::ROTATION_LABEL,
            done.uid().unwrap()
        )))
        .await
        .unwrap()
        .items;
    assert_eq!(keys.len(), 1, "one key per Rotation");
    // New seals use the new key and still open.
    let resealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "app2", &[("k", "v2")]),
    );
    apply(&ctx, &resealed).await;
    wait_reason(&ctx, "app2", "Unsealed").await;
    drop(controller);
}

async fn public_keys(ctx: &TestContext) -> String {
    Api::<ConfigMap>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("sigil-public-keys")
        .await
        .unwrap()
        .data
        .unwrap_or_default()
        .remove("sigil.pub")
        .unwrap_or_default()
}

#[tokio::test]
async fn a_rollout_that_never_completes_fails_the_rotation_at_the_timeout() {
    let ctx = TestContext::new("rot-stuck").await.unwrap();
    install_crds(&ctx.kube).await;
    let flags = ["--rollout-deadline", "1s", "--rollout-timeout", "3s"];
    let controller = Controller::start(&ctx, "a", &flags);
    controller.wait_ready().await;
    vault_put(&ctx, "db", json!({"password": "p0"})).await;
    vault_token_store(&ctx, "vault").await;
    password_mirror(&ctx, "db", "vault", &format!("{}/db", ctx.vault_prefix)).await;
    wait_es(&ctx, "db", "SecretSynced").await;
    deployment(&ctx, "runs", "db", "envFrom").await;
    deployment(&ctx, "stuck", "db", "unplaceable").await;

    rotation(&ctx, "r", json!({"externalSecretRef": {"name": "db"}})).await;
    let done = finished(&ctx, "r").await;
    assert_eq!(phase(&done), RotationPhase::Failed);
    let (reason, message) = ready_reason(&done);
    assert_eq!(reason, "RolloutTimedOut", "{message}");
    let ns = &ctx.namespace;
    assert!(
        message.contains(&format!("Deployment {ns}/stuck")) && !message.contains("/runs"),
        "{message}"
    );
    let status = done.status.unwrap();
    let steps: Vec<&str> = status.steps.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(steps.last(), Some(&"await-rollout"), "{steps:?}");
    // What was done stays done: the mirror holds the new value.
    assert_ne!(secret_data(&ctx, "db").await.unwrap()["password"], "p0");
    drop(controller);
}

#[tokio::test]
async fn bad_rotations_fail_with_a_reason_that_says_what_to_fix() {
    let ctx = TestContext::new("rot-bad").await.unwrap();
    let controller = started(&ctx).await;
    vault_token_store(&ctx, "vault").await;
    external(
        &ctx,
        "two",
        json!({"secretStoreRef": {"name": "vault"}, "refreshInterval": "1h",
               "data": [{"secretKey": "user", "remoteRef": {"key": "x", "property": "user"}},
                        {"secretKey": "password", "remoteRef": {"key": "x", "property": "password"}}]}),
    )
    .await;
    rotation(
        &ctx,
        "missing",
        json!({"externalSecretRef": {"name": "nope"}}),
    )
    .await;
    rotation(
        &ctx,
        "ambiguous",
        json!({"externalSecretRef": {"name": "two"}}),
    )
    .await;
    let missing = finished(&ctx, "missing").await;
    assert_eq!(phase(&missing), RotationPhase::Failed);
    let (reason, message) = ready_reason(&missing);
    assert_eq!(reason, "TargetNotFound");
    assert!(
        message.contains(&format!(
            "ExternalSecret {}/nope does not exist",
            ctx.namespace
        )),
        "{message}"
    );
    let ambiguous = finished(&ctx, "ambiguous").await;
    let (reason, message) = ready_reason(&ambiguous);
    assert_eq!(reason, "InvalidTarget");
    assert!(
        message.contains("spec.externalSecretRef.secretKey") && message.contains("user, password"),
        "{message}"
    );

    // The schema refuses what cannot mean anything, and a Rotation is immutable.
    let api: Api<Rotation> = Api::namespaced(ctx.kube.clone(), &ctx.namespace);
    let both: Rotation = serde_json::from_value(json!({"apiVersion": "sigil.dev/v1", "kind": "Rotation",
        "metadata": {"name": "both"}, "spec": {"externalSecretRef": {"name": "two"}, "sealingKey": {}}})).unwrap();
    let err = api
        .create(&PostParams::default(), &both)
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("set exactly one target"), "{err}");
    let err = api
        .patch(
            "missing",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"reason": "changed"}})),
        )
        .await
        .unwrap_err()
        .to_string();
    assert!(err.contains("cannot be changed once created"), "{err}");
    drop(controller);
}

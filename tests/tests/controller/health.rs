//! What GitOps tools make of Sigil's objects in each state, on live objects: kstatus
//! (`status.Compute` of `sigs.k8s.io/cli-utils`, what Flux's health checks read) and the
//! Argo CD health checks of the chart's README, both run by `tests/env/kstatus` (Argo CD's
//! checks in gopher-lua, sandboxed as Argo CD does). Each case asserts both.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::ConfigMap;
use kube::Resource;
use kube::api::{Api, ApiResource, DynamicObject};
use serde::Deserialize;
use serde_json::{Value, json};
use sigil_tests::{TestContext, repo_root};
use sigil_types::{
    ClusterSecretStore, ExternalSecret, Rotation, RotationPhase, SealedSecret, SecretStore,
    TemplateMetadata,
};

use crate::rotation::{finished, rotation};
use crate::support::*;
use crate::sync::{apply_obj, external, store, vault_put, vault_token_store, wait_es};

/// The Argo CD health checks in the chart's README (the `argocd-cm` block a user copies):
/// `sigil.dev/<Kind>` → Lua script.
fn argocd_health_checks() -> BTreeMap<String, String> {
    let path = repo_root().join("charts/sigil/README.md");
    let readme = std::fs::read_to_string(&path).unwrap();
    let block = readme
        .split("```yaml\n")
        .skip(1)
        .filter_map(|rest| rest.split_once("\n```").map(|(block, _)| block))
        .find(|block| block.contains("name: argocd-cm"))
        .unwrap_or_else(|| panic!("{} has no argocd-cm block", path.display()));
    let config: ConfigMap = serde_saphyr::from_str(block).unwrap();
    let checks: BTreeMap<String, String> = config
        .data
        .unwrap_or_default()
        .into_iter()
        .filter_map(|(key, script)| {
            let group_kind = key.strip_prefix("resource.customizations.health.")?;
            Some((group_kind.replacen('_', "/", 1), script))
        })
        .collect();
    let kinds: Vec<&str> = checks.keys().map(String::as_str).collect();
    assert_eq!(
        kinds,
        [
            "sigil.dev/ClusterSecretStore",
            "sigil.dev/ExternalSecret",
            "sigil.dev/Rotation",
            "sigil.dev/SealedSecret",
            "sigil.dev/SecretStore"
        ],
        "one health check for each kind with a status"
    );
    checks
}

#[derive(Debug, Deserialize)]
struct Verdict {
    status: String,
    message: String,
}

/// What kstatus and Argo CD make of one object.
#[derive(Debug, Deserialize)]
struct Judged {
    kind: String,
    name: String,
    kstatus: Verdict,
    argocd: Option<Verdict>,
}

/// Runs `tests/env/kstatus` on `objects` (as the API server returned them).
fn judge(ctx: &TestContext, objects: &[Value]) -> Vec<Judged> {
    let tool = ctx.env.var("SIGIL_KSTATUS").unwrap();
    let input = json!({"objects": objects, "argocdHealth": argocd_health_checks()});
    let mut child = Command::new(tool)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("running {tool}: {e}"));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(input.to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{tool}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// One live object: its kind, where it lives and its name.
struct Live {
    resource: ApiResource,
    namespace: Option<String>,
    name: String,
}

fn namespaced<K: Resource<DynamicType = ()>>(ctx: &TestContext, name: &str) -> Live {
    Live {
        resource: ApiResource::erase::<K>(&()),
        namespace: Some(ctx.namespace.clone()),
        name: name.to_owned(),
    }
}

fn cluster<K: Resource<DynamicType = ()>>(name: &str) -> Live {
    Live {
        resource: ApiResource::erase::<K>(&()),
        namespace: None,
        name: name.to_owned(),
    }
}

/// The object exactly as the API server serves it.
async fn fetch(ctx: &TestContext, live: &Live) -> Value {
    let api: Api<DynamicObject> = match &live.namespace {
        Some(ns) => Api::namespaced_with(ctx.kube.clone(), ns, &live.resource),
        None => Api::all_with(ctx.kube.clone(), &live.resource),
    };
    serde_json::to_value(api.get(&live.name).await.unwrap()).unwrap()
}

/// Argo CD's word for a kstatus status.
fn argocd_word(kstatus: &str) -> &'static str {
    match kstatus {
        "Current" => "Healthy",
        "InProgress" => "Progressing",
        "Failed" => "Degraded",
        other => panic!("no Argo CD counterpart expected for kstatus {other}"),
    }
}

/// Waits until kstatus reads `want` (Current, InProgress or Failed) for every object, then
/// asserts that Argo CD's health check reads the same of the same snapshot; returns what
/// both said.
async fn expect(ctx: &TestContext, objects: &[Live], want: &str) -> Vec<Judged> {
    let deadline = Instant::now() + Duration::from_secs(60);
    let judged = loop {
        let mut values = Vec::new();
        for live in objects {
            values.push(fetch(ctx, live).await);
        }
        let judged = judge(ctx, &values);
        if judged.iter().all(|j| j.kstatus.status == want) {
            break judged;
        }
        assert!(
            Instant::now() < deadline,
            "kstatus did not read {want} within 60 s: {judged:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    for j in &judged {
        let argocd = j.argocd.as_ref().expect("a health check for every kind");
        assert_eq!(
            argocd.status,
            argocd_word(want),
            "{} {}: kstatus {} ({}), Argo CD {} ({})",
            j.kind,
            j.name,
            j.kstatus.status,
            j.kstatus.message,
            argocd.status,
            argocd.message
        );
    }
    judged
}

/// (type, status, reason) of each condition, and whether every one carries `generation`.
fn conditions_of(obj: &Value, generation: i64) -> Vec<(String, String, String)> {
    let conditions = obj["status"]["conditions"].as_array().unwrap();
    for c in conditions {
        assert_eq!(c["observedGeneration"], generation, "{c}");
    }
    conditions
        .iter()
        .map(|c| {
            let field = |k: &str| c[k].as_str().unwrap().to_owned();
            (field("type"), field("status"), field("reason"))
        })
        .collect()
}

fn triples(expected: &[(&str, &str, &str)]) -> Vec<(String, String, String)> {
    expected
        .iter()
        .map(|(a, b, c)| ((*a).to_owned(), (*b).to_owned(), (*c).to_owned()))
        .collect()
}

#[tokio::test]
async fn sealed_secrets_read_as_gitops_tools_expect() {
    let ctx = TestContext::new("health-sealed").await.unwrap();
    install_crds(&ctx.kube).await;
    let mut controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let ns = ctx.namespace.clone();
    let mut db = seal_with_cluster_key(&ctx, dir.path(), &secret_yaml(&ns, "db", &[("k", "v")]));
    apply(&ctx, &db).await;
    let mut bad = seal_with_cluster_key(&ctx, dir.path(), &secret_yaml(&ns, "bad", &[("k", "v")]));
    let value = bad.spec.encrypted_data.get_mut("k").unwrap();
    *value = tamper(value);
    apply(&ctx, &bad).await;
    let fresh = seal_with_cluster_key(&ctx, dir.path(), &secret_yaml(&ns, "fresh", &[("k", "v")]));

    // Synced: Current.
    let judged = expect(&ctx, &[namespaced::<SealedSecret>(&ctx, "db")], "Current").await;
    assert_eq!(judged[0].kstatus.message, "Resource is Ready");
    let live = fetch(&ctx, &namespaced::<SealedSecret>(&ctx, "db")).await;
    assert_eq!(
        conditions_of(&live, 1),
        triples(&[
            ("Ready", "True", "Unsealed"),
            ("Synced", "True", "Unsealed")
        ])
    );

    // Tampered: Failed, with the reason and what to do.
    let judged = expect(&ctx, &[namespaced::<SealedSecret>(&ctx, "bad")], "Failed").await;
    assert!(
        judged[0].kstatus.message.contains("key `k`"),
        "{:?}",
        judged[0]
    );
    let argocd = judged[0].argocd.as_ref().unwrap();
    assert!(argocd.message.starts_with("Tampered: "), "{argocd:?}");
    let live = fetch(&ctx, &namespaced::<SealedSecret>(&ctx, "bad")).await;
    assert_eq!(
        conditions_of(&live, 1),
        triples(&[
            ("Ready", "False", "Tampered"),
            ("Stalled", "True", "Tampered"),
            ("Synced", "False", "Tampered")
        ])
    );

    // Without a controller: a new object, and a changed one, are in progress, not done.
    controller.kill();
    apply(&ctx, &fresh).await;
    db.spec.template = Some(sigil_types::SecretTemplate {
        metadata: Some(TemplateMetadata {
            labels: BTreeMap::from([("app".to_owned(), "db".to_owned())]),
            ..TemplateMetadata::default()
        }),
        ..Default::default()
    });
    apply(&ctx, &db).await;
    let judged = expect(
        &ctx,
        &[
            namespaced::<SealedSecret>(&ctx, "fresh"),
            namespaced::<SealedSecret>(&ctx, "db"),
        ],
        "InProgress",
    )
    .await;
    assert_eq!(
        judged[0].kstatus.message,
        "SealedSecret generation is 1, but latest observed generation is 0"
    );
    assert_eq!(
        judged[1].kstatus.message,
        "SealedSecret generation is 2, but latest observed generation is 1"
    );

    // The controller back: both are done, and the tampered one still failed.
    let controller = Controller::start(&ctx, "b", &[]);
    controller.wait_ready().await;
    expect(
        &ctx,
        &[
            namespaced::<SealedSecret>(&ctx, "fresh"),
            namespaced::<SealedSecret>(&ctx, "db"),
        ],
        "Current",
    )
    .await;
    expect(&ctx, &[namespaced::<SealedSecret>(&ctx, "bad")], "Failed").await;
}

#[tokio::test]
async fn stores_and_external_secrets_read_as_gitops_tools_expect() {
    let ctx = TestContext::new("health-sync").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(&ctx, "db", json!({"password": "p0"})).await;
    let key = format!("{}/db", ctx.vault_prefix);
    vault_token_store(&ctx, "vault").await;
    // A store whose server is down: a loopback port nothing listens on.
    let closed = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    store(
        &ctx,
        "down",
        json!({"vault": {"server": format!("http://127.0.0.1:{closed}"), "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}),
    )
    .await;
    let cluster_store = format!("{}-vault", ctx.id);
    ctx.track_cluster_store(&cluster_store);
    apply_obj::<ClusterSecretStore>(
        Api::all(ctx.kube.clone()),
        "ClusterSecretStore",
        json!({"metadata": {"name": cluster_store}, "spec": {"provider": {"vault": {
            "server": ctx.env.var("VAULT_ADDR").unwrap(), "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token", "namespace": ctx.namespace}}}}}}),
    )
    .await;
    let reads = |store: &str| {
        json!({"secretStoreRef": {"name": store}, "refreshInterval": "1h",
               "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}]})
    };

    // Before any controller: every object is in progress.
    external(&ctx, "synced", reads("vault")).await;
    let unobserved = [
        namespaced::<SecretStore>(&ctx, "vault"),
        cluster::<ClusterSecretStore>(&cluster_store),
        namespaced::<ExternalSecret>(&ctx, "synced"),
    ];
    // Another test's controller may already have checked the ClusterSecretStore.
    expect(&ctx, &unobserved[..1], "InProgress").await;
    expect(&ctx, &unobserved[2..], "InProgress").await;

    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    external(&ctx, "unreachable", reads("down")).await;
    external(&ctx, "orphan", reads("not-yet")).await;
    wait_es(&ctx, "synced", "SecretSynced").await;

    // Synced, and the stores that work: Current.
    expect(&ctx, &unobserved, "Current").await;

    // The store is down: the store and the ExternalSecret that reads it failed.
    let judged = expect(
        &ctx,
        &[
            namespaced::<SecretStore>(&ctx, "down"),
            namespaced::<ExternalSecret>(&ctx, "unreachable"),
        ],
        "Failed",
    )
    .await;
    for j in &judged {
        // kstatus shows the `Stalled` message; the Argo CD check, reason and message.
        let argocd = j.argocd.as_ref().unwrap();
        assert_eq!(
            argocd.message,
            format!("ProviderUnavailable: {}", j.kstatus.message),
            "{j:?}"
        );
    }
    let live = fetch(&ctx, &namespaced::<ExternalSecret>(&ctx, "unreachable")).await;
    assert_eq!(
        conditions_of(&live, 1),
        triples(&[
            ("Ready", "False", "ProviderUnavailable"),
            ("Stalled", "True", "ProviderUnavailable")
        ])
    );

    // Its store does not exist (yet): in progress, waiting for it.
    let judged = expect(
        &ctx,
        &[namespaced::<ExternalSecret>(&ctx, "orphan")],
        "InProgress",
    )
    .await;
    assert!(
        judged[0].kstatus.message.contains("does not exist"),
        "{judged:?}"
    );
    let live = fetch(&ctx, &namespaced::<ExternalSecret>(&ctx, "orphan")).await;
    assert_eq!(
        conditions_of(&live, 1),
        triples(&[
            ("Ready", "False", "StoreNotReady"),
            ("Reconciling", "True", "StoreNotReady")
        ])
    );
    // ... and it arrives: Current, with no Stalled or Reconciling left behind.
    vault_token_store(&ctx, "not-yet").await;
    expect(
        &ctx,
        &[
            namespaced::<ExternalSecret>(&ctx, "orphan"),
            namespaced::<SecretStore>(&ctx, "not-yet"),
        ],
        "Current",
    )
    .await;
    let live = fetch(&ctx, &namespaced::<ExternalSecret>(&ctx, "orphan")).await;
    assert_eq!(
        conditions_of(&live, 1),
        triples(&[("Ready", "True", "SecretSynced")])
    );
    drop(controller);
}

#[tokio::test]
async fn rotations_read_as_gitops_tools_expect() {
    let ctx = TestContext::new("health-rotation").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(&ctx, "db", json!({"password": "p0"})).await;
    vault_token_store(&ctx, "vault").await;
    crate::rotation::password_mirror(&ctx, "db", "vault", &format!("{}/db", ctx.vault_prefix))
        .await;

    // A controller that stops right after the first step: a Rotation paused midway.
    let mut doomed = Controller::start_with_env(
        &ctx,
        "doomed",
        &[],
        &[("FAILPOINTS", "rotation-after-resolve=return")],
    );
    doomed.wait_ready().await;
    wait_es(&ctx, "db", "SecretSynced").await;
    let spec = json!({"externalSecretRef": {"name": "db"}, "restart": false});
    rotation(&ctx, "paused", spec.clone()).await;
    assert_eq!(doomed.wait_exit(Duration::from_secs(60)).await, Some(86));
    drop(doomed);
    rotation(&ctx, "queued", spec).await;
    rotation(
        &ctx,
        "missing",
        json!({"externalSecretRef": {"name": "nope"}}),
    )
    .await;
    let judged = expect(
        &ctx,
        &[
            namespaced::<Rotation>(&ctx, "paused"),
            namespaced::<Rotation>(&ctx, "queued"),
        ],
        "InProgress",
    )
    .await;
    assert_eq!(
        judged[1].kstatus.message,
        "Rotation generation is 1, but latest observed generation is 0"
    );
    let paused = fetch(&ctx, &namespaced::<Rotation>(&ctx, "paused")).await;
    assert_eq!(paused["status"]["phase"], "Pending");
    assert_eq!(
        conditions_of(&paused, 1),
        triples(&[
            ("Ready", "False", "Pending"),
            ("Reconciling", "True", "Pending")
        ])
    );
    assert_eq!(
        judged[0].argocd.as_ref().unwrap().message,
        format!("Pending: {}", judged[0].kstatus.message),
        "{judged:?}"
    );

    // A controller again: both complete, and the one without a target fails.
    let controller = Controller::start(&ctx, "a", &[]);
    for name in ["paused", "queued"] {
        let done = finished(&ctx, name).await;
        assert_eq!(
            done.status.as_ref().unwrap().phase,
            Some(RotationPhase::Completed)
        );
    }
    expect(
        &ctx,
        &[
            namespaced::<Rotation>(&ctx, "paused"),
            namespaced::<Rotation>(&ctx, "queued"),
        ],
        "Current",
    )
    .await;
    let judged = expect(&ctx, &[namespaced::<Rotation>(&ctx, "missing")], "Failed").await;
    assert!(
        judged[0]
            .argocd
            .as_ref()
            .unwrap()
            .message
            .starts_with("TargetNotFound: "),
        "{judged:?}"
    );
    let missing = fetch(&ctx, &namespaced::<Rotation>(&ctx, "missing")).await;
    assert_eq!(
        conditions_of(&missing, 1),
        triples(&[
            ("Ready", "False", "TargetNotFound"),
            ("Stalled", "True", "TargetNotFound")
        ])
    );
    drop(controller);
}

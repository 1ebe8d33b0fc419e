//! The controller under API Priority and Fairness: when another client floods the API
//! server, the server sheds the controller's requests too (429 with Retry-After), and
//! the controller waits as told and loses nothing.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::flowcontrol::v1::{FlowSchema, PriorityLevelConfiguration};
use k8s_openapi::api::rbac::v1::RoleBinding;
use kube::api::{Api, DeleteParams, ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, ResourceExt};
use sigil_tests::TestContext;

use crate::support::*;

const SEALED: usize = 40;

/// A kubeconfig that logs in as ServiceAccount `name` of the test's namespace.
async fn service_account_kubeconfig(ctx: &TestContext, dir: &Path, name: &str) -> String {
    let token = ctx.service_account_token(name).await.unwrap();
    let path = dir.join(format!("{name}.kubeconfig"));
    let yaml = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: sigil\n  cluster:\n    server: {}\n    certificate-authority: {}\nusers:\n- name: {name}\n  user:\n    token: {token}\ncontexts:\n- name: {name}\n  context: {{cluster: sigil, user: {name}}}\ncurrent-context: {name}\n",
        ctx.env.var("SIGIL_KUBE_SERVER").unwrap(),
        ctx.env.var("SIGIL_KUBE_CA_FILE").unwrap(),
    );
    std::fs::write(&path, yaml).unwrap();
    path.to_str().unwrap().to_owned()
}

async fn client_from(kubeconfig: &str) -> Client {
    let config = kube::Config::from_custom_kubeconfig(
        Kubeconfig::read_from(kubeconfig).unwrap(),
        &KubeConfigOptions::default(),
    )
    .await
    .unwrap();
    Client::try_from(config).unwrap()
}

/// Requests the API server rejected for `flow_schema`, from its own metrics.
async fn rejected(ctx: &TestContext, flow_schema: &str) -> f64 {
    let metrics = ctx
        .kube
        .request_text(http::Request::get("/metrics").body(Vec::new()).unwrap())
        .await
        .unwrap();
    metrics
        .lines()
        .filter(|line| {
            line.starts_with("apiserver_flowcontrol_rejected_requests_total{")
                && line.contains(&format!("flow_schema=\"{flow_schema}\""))
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The controller's and the flooder's ServiceAccounts in one tiny priority level (about
/// three requests at once, short queues), each in its own flow schema: what a busy
/// cluster looks like to a controller that is not exempt.
async fn tiny_priority_level(ctx: &TestContext, controller_fs: &str, flooder_fs: &str) {
    let level: PriorityLevelConfiguration = serde_json::from_value(serde_json::json!({
        "metadata": {"name": ctx.namespace},
        "spec": {"type": "Limited", "limited": {
            "nominalConcurrencyShares": 1, "lendablePercent": 0, "borrowingLimitPercent": 0,
            "limitResponse": {"type": "Queue", "queuing": {"queues": 8, "handSize": 1, "queueLengthLimit": 4}},
        }},
    }))
    .unwrap();
    Api::<PriorityLevelConfiguration>::all(ctx.kube.clone())
        .create(&PostParams::default(), &level)
        .await
        .unwrap();
    for (schema, account) in [(controller_fs, "controller"), (flooder_fs, "flooder")] {
        let schema: FlowSchema = serde_json::from_value(serde_json::json!({
            "metadata": {"name": schema},
            "spec": {
                "priorityLevelConfiguration": {"name": ctx.namespace},
                "matchingPrecedence": 500,
                "distinguisherMethod": {"type": "ByUser"},
                "rules": [{
                    "subjects": [{"kind": "ServiceAccount",
                                  "serviceAccount": {"name": account, "namespace": ctx.namespace}}],
                    "resourceRules": [{"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                                       "clusterScope": true, "namespaces": ["*"]}],
                    "nonResourceRules": [{"verbs": ["*"], "nonResourceURLs": ["*"]}],
                }],
            },
        }))
        .unwrap();
        Api::<FlowSchema>::all(ctx.kube.clone())
            .create(&PostParams::default(), &schema)
            .await
            .unwrap();
    }
}

async fn remove_priority_level(ctx: &TestContext, schemas: &[&str]) {
    for schema in schemas {
        let _ = Api::<FlowSchema>::all(ctx.kube.clone())
            .delete(schema, &DeleteParams::default())
            .await;
    }
    let _ = Api::<PriorityLevelConfiguration>::all(ctx.kube.clone())
        .delete(&ctx.namespace, &DeleteParams::default())
        .await;
}

#[tokio::test]
async fn a_flooded_api_server_slows_the_controller_down_and_nothing_is_lost() {
    let ctx = TestContext::new("flood").await.unwrap();
    install_crds(&ctx.kube).await;
    let dir = tempfile::tempdir().unwrap();
    let controller_fs = format!("{}-controller", ctx.namespace);
    let flooder_fs = format!("{}-flooder", ctx.namespace);
    tiny_priority_level(&ctx, &controller_fs, &flooder_fs).await;
    let controller_kubeconfig = service_account_kubeconfig(&ctx, dir.path(), "controller").await;
    let flooder = client_from(&service_account_kubeconfig(&ctx, dir.path(), "flooder").await).await;
    // Everything in its own namespace, nothing cluster-wide: not system:masters, so not
    // exempt from API Priority and Fairness.
    let binding: RoleBinding = serde_json::from_value(serde_json::json!({
        "metadata": {"name": "flood-test"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "cluster-admin"},
        "subjects": [
            {"kind": "ServiceAccount", "name": "controller", "namespace": ctx.namespace},
            {"kind": "ServiceAccount", "name": "flooder", "namespace": ctx.namespace},
        ],
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();

    sigil_ok(
        &ctx,
        dir.path(),
        &[
            "keys",
            "generate",
            "--private-out",
            "k.key",
            "--public-out",
            "k.pub",
        ],
        "",
    );
    import_key(&ctx, dir.path(), "k.key");
    let sealed: Vec<_> = (0..SEALED)
        .map(|i| {
            let secret = secret_yaml(
                &ctx.namespace,
                &format!("app-{i}"),
                &[
                    ("password", &format!("pw-{i}")),
                    ("user", &format!("user-{i}")),
                ],
            );
            let yaml = sigil_ok(&ctx, dir.path(), &["seal", "--cert", "k.pub"], &secret);
            serde_saphyr::from_str(&yaml).unwrap()
        })
        .collect();

    let controller = Controller::start_with_env(
        &ctx,
        "flooded",
        &[
            "--leader-election",
            "false",
            "--cluster-secret-stores",
            "false",
        ],
        &[("KUBECONFIG", &controller_kubeconfig)],
    );
    controller.wait_ready().await;
    let rejected_before = rejected(&ctx, &controller_fs).await;

    // A few clients suffice: the level holds about three requests at once and queues
    // four per flow, and more would only load the machine the other tests share.
    let stop = Arc::new(AtomicBool::new(false));
    let flood: Vec<_> = (0..8)
        .map(|_| {
            let (api, stop) = (
                Api::<ServiceAccount>::namespaced(flooder.clone(), &ctx.namespace),
                stop.clone(),
            );
            tokio::spawn(async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = api.list(&ListParams::default()).await;
                }
            })
        })
        .collect();
    for object in &sealed {
        apply(&ctx, object).await;
    }
    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(Duration::from_secs(180), || async {
        let mut synced = 0;
        for i in 0..SEALED {
            if synced_condition(&ctx, &format!("app-{i}"))
                .await
                .is_some_and(|(status, reason, _)| status == "True" && reason == "Unsealed")
            {
                synced += 1;
            }
        }
        (synced == SEALED).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for task in flood {
        task.await.unwrap();
    }
    let shed = rejected(&ctx, &controller_fs).await - rejected_before;
    remove_priority_level(&ctx, &[&controller_fs, &flooder_fs]).await;

    assert!(
        shed > 0.0,
        "the API server never shed the controller's requests, so this test showed nothing"
    );
    for i in 0..SEALED {
        let secret = secrets.get(&format!("app-{i}")).await.unwrap();
        assert_eq!(secret.labels()[sigil_types::SEALED_SECRET_LABEL], "true");
        let data = secret.data.unwrap();
        assert_eq!(
            data["password"].0,
            format!("pw-{i}").into_bytes(),
            "app-{i}"
        );
        assert_eq!(data["user"].0, format!("user-{i}").into_bytes(), "app-{i}");
    }
    assert!(
        controller
            .get("/healthz")
            .is_some_and(|(code, _)| code == 200),
        "the controller survived the flood"
    );
}

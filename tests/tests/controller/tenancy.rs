//! A tenant who holds only the rights of its own namespace tries to turn Sigil against
//! the cluster: stores pointed at a server the tenant owns (a listener of the test's),
//! a sealing-key Rotation in its namespace, a Rotation status written by hand. Each test
//! asserts what reached the listener, what the object's status says, and that nothing
//! was written or rolled.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sigil_tests::TestContext;
use sigil_types::{ClusterSecretStore, Rotation, RotationPhase, SecretStore};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::rotation::{finished, password_mirror, ready_reason, rotation};
use crate::support::*;
use crate::sync::{apply_obj, external, put_secret, store, vault_put, vault_token_store, wait_es};

/// An AWS access key the controller holds in its environment: it must never reach a
/// server named by a SecretStore.
const CONTROLLER_KEY: &str = "AKIACONTROLLERCANARY1";

/// A server the tenant owns: records every request, answers 403.
struct Listener {
    url: String,
    requests: Arc<Mutex<Vec<String>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Listener {
    async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let requests = Arc::new(Mutex::new(Vec::new()));
        let seen = requests.clone();
        let task = tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                let seen = seen.clone();
                tokio::spawn(async move {
                    let mut request = Vec::new();
                    let mut buf = [0u8; 8192];
                    // Headers and a small body arrive within a moment.
                    while let Ok(Ok(n)) =
                        tokio::time::timeout(Duration::from_millis(300), stream.read(&mut buf))
                            .await
                    {
                        if n == 0 {
                            break;
                        }
                        request.extend_from_slice(&buf[..n]);
                    }
                    seen.lock()
                        .unwrap()
                        .push(String::from_utf8_lossy(&request).into_owned());
                    let _ = stream
                        .write_all(b"HTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
                        .await;
                });
            }
        });
        Listener {
            url,
            requests,
            task,
        }
    }

    fn requests(&self) -> Vec<String> {
        self.requests.lock().unwrap().clone()
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// A SecretStore's `Ready` condition (status, reason, message) once it describes its
/// generation.
async fn store_ready(api: Api<SecretStore>, name: &str) -> (String, String, String) {
    eventually(Duration::from_secs(30), || async {
        let obj = api.get(name).await.ok()?;
        let c = obj
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (c.observed_generation == obj.metadata.generation)
            .then_some((c.status, c.reason, c.message))
    })
    .await
}

/// The JSON body of the first request to `path` that reached `listener`.
async fn body_sent_to(listener: &Listener, path: &str) -> Value {
    let request = eventually(Duration::from_secs(30), || async {
        listener
            .requests()
            .into_iter()
            .find(|r| r.contains(&format!("POST {path} ")))
    })
    .await;
    let body = request.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap()
}

/// Whether the Kubernetes API server accepts `token` as its own audience.
async fn apiserver_accepts(ctx: &TestContext, token: &str) -> bool {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(token.to_owned()),
            audiences: None,
        },
        ..TokenReview::default()
    };
    Api::<TokenReview>::all(ctx.kube.clone())
        .create(&PostParams::default(), &review)
        .await
        .unwrap()
        .status
        .and_then(|s| s.authenticated)
        .unwrap_or(false)
}

#[tokio::test]
async fn a_secret_store_never_borrows_the_controllers_identity() {
    let ctx = TestContext::new("tenancy-identity").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start_with_env(
        &ctx,
        "a",
        &[],
        &[
            ("AWS_ACCESS_KEY_ID", CONTROLLER_KEY),
            ("AWS_SECRET_ACCESS_KEY", "controller-secret-canary"),
        ],
    );
    controller.wait_ready().await;
    let listener = Listener::start().await;
    store(
        &ctx,
        "vault-as-controller",
        json!({"vault": {"server": listener.url, "path": "secret", "version": "v2",
            "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "anything"}}}}),
    )
    .await;
    store(
        &ctx,
        "aws-as-controller",
        json!({"aws": {"service": "SecretsManager", "region": "us-east-1", "endpoint": listener.url}}),
    )
    .await;
    external(
        &ctx,
        "grab",
        json!({"secretStoreRef": {"name": "aws-as-controller"},
            "data": [{"secretKey": "x", "remoteRef": {"key": "anything"}}]}),
    )
    .await;
    let stores = Api::<SecretStore>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let (status, reason, message) = store_ready(stores.clone(), "vault-as-controller").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidConfig")
    );
    assert!(
        message.contains("serviceAccountRef") && message.contains("Only a ClusterSecretStore"),
        "{message}"
    );
    let (status, reason, message) = store_ready(stores, "aws-as-controller").await;
    assert_eq!(
        (status.as_str(), reason.as_str()),
        ("False", "InvalidConfig")
    );
    assert!(
        message.contains("spec.provider.aws.auth") && message.contains("secretRef"),
        "{message}"
    );
    wait_es(&ctx, "grab", "StoreNotReady").await;
    // The stores' checks ran (their status says so): no login was tried at all.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(listener.requests(), Vec::<String>::new());
    assert!(
        Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .get_opt("grab")
            .await
            .unwrap()
            .is_none()
    );

    // A ClusterSecretStore is the cluster admin's: it may use the controller's own.
    let name = format!("{}-admin", ctx.id);
    ctx.track_cluster_store(&name);
    apply_obj::<ClusterSecretStore>(
        Api::all(ctx.kube.clone()),
        "ClusterSecretStore",
        json!({"metadata": {"name": name}, "spec": {"provider": {"aws": {
            "service": "SecretsManager", "region": "us-east-1", "endpoint": listener.url}}}}),
    )
    .await;
    let signed = eventually(Duration::from_secs(30), || async {
        listener
            .requests()
            .into_iter()
            .find(|r| r.contains(CONTROLLER_KEY))
    })
    .await;
    assert!(
        signed
            .to_lowercase()
            .contains("authorization: aws4-hmac-sha256")
    );
}

#[tokio::test]
async fn store_tokens_never_carry_an_audience_the_api_server_accepts() {
    let ctx = TestContext::new("tenancy-audience").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    ctx.create_service_account("reader", &[]).await.unwrap();
    let listener = Listener::start().await;
    store(
        &ctx,
        "vault-default",
        json!({"vault": {"server": listener.url, "path": "secret", "version": "v2",
            "auth": {"kubernetes": {"mountPath": "kubernetes", "role": "r",
                "serviceAccountRef": {"name": "reader"}}}}}),
    )
    .await;
    let sent = body_sent_to(&listener, "/v1/auth/kubernetes/login").await;
    let jwt = sent["jwt"].as_str().unwrap();
    assert!(
        !apiserver_accepts(&ctx, jwt).await,
        "the token sent to the store's server works against the Kubernetes API"
    );

    // Naming the API server's own audience is refused before any token is minted.
    let apiserver_audience = {
        let token = ctx.service_account_token("probe").await.unwrap();
        audiences_of(&token).remove(0)
    };
    let before = listener.requests().len();
    store(
        &ctx,
        "vault-apiserver-audience",
        json!({"vault": {"server": listener.url, "path": "secret", "version": "v2",
            "auth": {"kubernetes": {"mountPath": "other", "role": "r",
                "serviceAccountRef": {"name": "reader", "audiences": [apiserver_audience]}}}}}),
    )
    .await;
    store(
        &ctx,
        "aws-apiserver-audience",
        json!({"aws": {"service": "SecretsManager", "region": "us-east-1", "endpoint": listener.url,
            "role": "arn:aws:iam::123456789012:role/x",
            "auth": {"jwt": {"serviceAccountRef": {"name": "reader", "audiences": [apiserver_audience]}}}}}),
    )
    .await;
    let stores = Api::<SecretStore>::namespaced(ctx.kube.clone(), &ctx.namespace);
    for name in ["vault-apiserver-audience", "aws-apiserver-audience"] {
        let (status, reason, message) = store_ready(stores.clone(), name).await;
        assert_eq!(
            (status.as_str(), reason.as_str()),
            ("False", "InvalidConfig"),
            "{name}: {message}"
        );
        assert!(
            message.contains(&format!("`{apiserver_audience}`"))
                && message.contains("an audience the Kubernetes API server accepts"),
            "{name}: {message}"
        );
    }
    assert!(
        !listener
            .requests()
            .iter()
            .skip(before)
            .any(|r| r.contains("/v1/auth/other/login")),
        "no login was tried with the refused audience"
    );
}

#[tokio::test]
async fn with_opt_in_required_a_store_mints_tokens_only_for_annotated_accounts() {
    let ctx = TestContext::new("tenancy-opt-in").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &["--store-tokens-need-opt-in"]);
    controller.wait_ready().await;
    ctx.create_service_account("bystander", &[]).await.unwrap();
    ctx.create_service_account(
        "volunteer",
        &[(sigil_types::ALLOW_STORE_TOKENS_ANNOTATION, "true")],
    )
    .await
    .unwrap();
    let listener = Listener::start().await;
    for (name, account) in [("borrow", "bystander"), ("agreed", "volunteer")] {
        store(
            &ctx,
            name,
            json!({"vault": {"server": listener.url, "path": "secret", "version": "v2",
                "auth": {"kubernetes": {"mountPath": name, "role": "r",
                    "serviceAccountRef": {"name": account}}}}}),
        )
        .await;
    }
    let stores = Api::<SecretStore>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let (status, _, message) = store_ready(stores, "borrow").await;
    assert_eq!(status, "False");
    assert!(
        message.contains(sigil_types::ALLOW_STORE_TOKENS_ANNOTATION)
            && message.contains("bystander"),
        "{message}"
    );
    body_sent_to(&listener, "/v1/auth/agreed/login").await;
    assert!(
        !listener
            .requests()
            .iter()
            .any(|r| r.contains("/v1/auth/borrow/login"))
    );
}

/// The `aud` claim of a token, as a list.
fn audiences_of(token: &str) -> Vec<String> {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    match &claims["aud"] {
        Value::String(one) => vec![one.clone()],
        Value::Array(many) => many
            .iter()
            .map(|a| a.as_str().unwrap().to_owned())
            .collect(),
        other => panic!("no aud: {other}"),
    }
}

#[tokio::test]
async fn a_sealing_key_rotation_outside_the_controllers_namespace_makes_nothing() {
    let sigil = TestContext::new("tenancy-keys").await.unwrap();
    let tenant = TestContext::new("tenancy-tenant").await.unwrap();
    install_crds(&sigil.kube).await;
    let controller =
        Controller::start_in(&sigil, &sigil.namespace, &tenant.namespace, "a", &[], &[]);
    controller.wait_ready().await;
    let key_secrets = || async {
        Api::<Secret>::namespaced(sigil.kube.clone(), &sigil.namespace)
            .list(&ListParams::default().labels(sigil_types::KEY_LABEL))
            .await
            .unwrap()
            .items
            .len()
    };
    let keys_before = key_secrets().await;
    assert_eq!(keys_before, 1);
    rotation(
        &tenant,
        "mine-now",
        json!({"sealingKey": {}, "reason": "tenant"}),
    )
    .await;
    let done = finished(&tenant, "mine-now").await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        Some(RotationPhase::Failed)
    );
    let (reason, message) = ready_reason(&done);
    assert_eq!(reason, "WrongNamespace");
    assert!(message.contains(&sigil.namespace), "{message}");
    assert_eq!(key_secrets().await, keys_before, "no key was made");
}

/// Writes `status` of Rotation `name` as its status subresource, as anyone with
/// `rotations/status` could.
async fn forge_status(ctx: &TestContext, name: &str, status: Value) {
    Api::<Rotation>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .patch_status(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"status": status})),
        )
        .await
        .unwrap();
}

/// Vault KV metadata's current version of `key` under the test's prefix.
async fn current_version(ctx: &TestContext, key: &str) -> u64 {
    crate::rotation::kv_meta(ctx, key).await.0
}

/// A Rotation `name` of ExternalSecret `db`, left with `step` recorded by a controller
/// that exits right after it.
async fn rotation_stopped_after(ctx: &TestContext, name: &str, step: &str) {
    let mut doomed = Controller::stopping_after(ctx, &format!("doomed-{name}"), step);
    doomed.wait_ready().await;
    wait_es(ctx, "db", "SecretSynced").await;
    rotation(ctx, name, json!({"externalSecretRef": {"name": "db"}})).await;
    assert_eq!(doomed.wait_exit(Duration::from_secs(60)).await, Some(86));
}

#[tokio::test]
async fn a_forged_rotation_status_redirects_no_write_and_no_rollout() {
    let ctx = TestContext::new("tenancy-status").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(&ctx, "db", json!({"password": "p0"})).await;
    vault_put(&ctx, "victim", json!({"password": "theirs"})).await;
    vault_token_store(&ctx, "vault").await;
    password_mirror(&ctx, "db", "vault", &format!("{}/db", ctx.vault_prefix)).await;
    put_secret(&ctx, "bystander-secret", &[("password", "unrelated")], &[]).await;
    crate::rotation::deployment(&ctx, "bystander", "bystander-secret", "env").await;

    // The target is rewritten between resolve and stage.
    rotation_stopped_after(&ctx, "redirected", "resolve").await;
    let recorded = Api::<Rotation>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("redirected")
        .await
        .unwrap();
    let mut target = serde_json::to_value(recorded.status.unwrap().target.unwrap()).unwrap();
    target["key"] = json!(format!("{}/victim", ctx.vault_prefix));
    forge_status(&ctx, "redirected", json!({"target": target})).await;
    let (db_before, victim_before) = (
        current_version(&ctx, "db").await,
        current_version(&ctx, "victim").await,
    );
    let controller = Controller::start(&ctx, "a", &[]);
    let failed = finished(&ctx, "redirected").await;
    assert_eq!(
        failed.status.as_ref().unwrap().phase,
        Some(RotationPhase::Failed)
    );
    let (reason, message) = ready_reason(&failed);
    assert_eq!(reason, "InvalidStatus", "{message}");
    assert_eq!(current_version(&ctx, "victim").await, victim_before);
    assert_eq!(current_version(&ctx, "db").await, db_before);
    drop(controller);

    // The Secrets to restart are rewritten between propagate and restart.
    rotation_stopped_after(&ctx, "widened", "propagate").await;
    forge_status(
        &ctx,
        "widened",
        json!({"secrets": [format!("{}/bystander-secret", ctx.namespace)]}),
    )
    .await;
    let _controller = Controller::start(&ctx, "b", &[]);
    let done = finished(&ctx, "widened").await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        Some(RotationPhase::Completed),
        "{:?}",
        done.status
    );
    let bystander =
        Api::<k8s_openapi::api::apps::v1::Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .get("bystander")
            .await
            .unwrap();
    let annotations = bystander
        .spec
        .unwrap()
        .template
        .metadata
        .unwrap_or_default()
        .annotations
        .unwrap_or_default();
    assert!(
        !annotations.contains_key(sigil_types::RESTARTED_FOR_ANNOTATION),
        "a Deployment that reads no mirror was rolled: {annotations:?}"
    );
}

#[tokio::test]
async fn aws_stores_of_two_accounts_on_one_endpoint_share_no_mirrors() {
    let ctx = TestContext::new("tenancy-accounts").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let endpoint = ctx.env.var("AWS_ENDPOINT_URL").unwrap().to_owned();
    let key = format!("{}db", ctx.aws_prefix);
    for (store_name, account) in [("mine", "111111111111"), ("theirs", "222222222222")] {
        let (id, secret, token) = ctx.env.account_credentials(account).await.unwrap();
        ctx.env
            .secretsmanager_with(Some((&id, &secret, &token)))
            .unwrap()
            .create_secret()
            .name(&key)
            .secret_string(format!(r#"{{"password":"{account}"}}"#))
            .send()
            .await
            .unwrap();
        put_secret(
            &ctx,
            &format!("{store_name}-keys"),
            &[("id", &id), ("secret", &secret), ("token", &token)],
            &[],
        )
        .await;
        store(
            &ctx,
            store_name,
            json!({"aws": {"service": "SecretsManager", "region": "us-east-1", "endpoint": endpoint,
                "auth": {"secretRef": {
                    "accessKeyIDSecretRef": {"name": format!("{store_name}-keys"), "key": "id"},
                    "secretAccessKeySecretRef": {"name": format!("{store_name}-keys"), "key": "secret"},
                    "sessionTokenSecretRef": {"name": format!("{store_name}-keys"), "key": "token"}}}}}),
        )
        .await;
        password_mirror(&ctx, store_name, store_name, &key).await;
    }
    for name in ["mine", "theirs"] {
        wait_es(&ctx, name, "SecretSynced").await;
    }
    rotation(
        &ctx,
        "plan",
        json!({"externalSecretRef": {"name": "mine"}, "dryRun": true}),
    )
    .await;
    let planned = finished(&ctx, "plan").await.status.unwrap();
    assert_eq!(planned.phase, Some(RotationPhase::Completed));
    assert_eq!(
        planned.external_secrets,
        [format!("{}/mine", ctx.namespace)],
        "another account's mirror was listed"
    );
    assert!(
        planned
            .target
            .as_ref()
            .is_some_and(|t| t.server.ends_with(" account 111111111111")),
        "{:?}",
        planned.target
    );
}

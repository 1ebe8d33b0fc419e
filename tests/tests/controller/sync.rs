//! ExternalSecrets on the real servers: OpenBao (KV v2; token, kubernetes and AppRole
//! auth), moto (Secrets Manager; static keys and web identity through its STS) and
//! kube-apiserver, each test with its own controller, namespace and remote prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams};
use kube::{Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use sigil_tests::TestContext;
use sigil_types::{ClusterSecretStore, ExternalSecret, SecretStore};

use crate::support::*;

// ---------------------------------------------------------------------------
// helpers

/// Server-side applies a Sigil object written as JSON (without apiVersion/kind).
pub(crate) async fn apply_obj<K>(api: Api<K>, kind: &str, body: Value)
where
    K: Resource<DynamicType = ()> + Clone + DeserializeOwned + Serialize + std::fmt::Debug,
{
    let mut body = body;
    body["apiVersion"] = json!("sigil.dev/v1");
    body["kind"] = json!(kind);
    let obj: K = serde_json::from_value(body).unwrap();
    let name = obj.meta().name.clone().unwrap();
    api.patch(
        &name,
        &PatchParams::apply("gitops").force(),
        &Patch::Apply(&obj),
    )
    .await
    .unwrap();
}

pub(crate) async fn store(ctx: &TestContext, name: &str, provider: Value) {
    apply_obj::<SecretStore>(
        Api::namespaced(ctx.kube.clone(), &ctx.namespace),
        "SecretStore",
        json!({"metadata": {"name": name, "namespace": ctx.namespace}, "spec": {"provider": provider}}),
    )
    .await;
}

pub(crate) async fn external(ctx: &TestContext, name: &str, spec: Value) {
    apply_obj::<ExternalSecret>(
        Api::namespaced(ctx.kube.clone(), &ctx.namespace),
        "ExternalSecret",
        json!({"metadata": {"name": name, "namespace": ctx.namespace}, "spec": spec}),
    )
    .await;
}

pub(crate) async fn put_secret(
    ctx: &TestContext,
    name: &str,
    data: &[(&str, &str)],
    annotations: &[(&str, &str)],
) {
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.to_owned()),
            namespace: Some(ctx.namespace.clone()),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            ..ObjectMeta::default()
        },
        string_data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        ),
        ..Secret::default()
    };
    Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .patch(
            name,
            &PatchParams::apply("person").force(),
            &Patch::Apply(&secret),
        )
        .await
        .unwrap();
}

/// A Secret holding the root token of OpenBao, and a store that uses it.
pub(crate) async fn vault_token_store(ctx: &TestContext, name: &str) {
    let token = ctx.env.var("VAULT_TOKEN").unwrap().to_owned();
    put_secret(ctx, "vault-token", &[("token", &token)], &[]).await;
    store(
        ctx,
        name,
        json!({"vault": {"server": ctx.env.var("VAULT_ADDR").unwrap(), "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}),
    )
    .await;
}

/// A store for moto with static keys from a Secret, at `endpoint`.
pub(crate) async fn aws_store(ctx: &TestContext, name: &str, endpoint: &str) {
    put_secret(
        ctx,
        "aws-credentials",
        &[
            ("access-key-id", "testing"),
            ("secret-access-key", "testing"),
        ],
        &[],
    )
    .await;
    store(
        ctx,
        name,
        json!({"aws": {"service": "SecretsManager", "region": "us-east-1", "endpoint": endpoint,
            "auth": {"secretRef": {
                "accessKeyIDSecretRef": {"name": "aws-credentials", "key": "access-key-id"},
                "secretAccessKeySecretRef": {"name": "aws-credentials", "key": "secret-access-key"}}}}}),
    )
    .await;
}

pub(crate) async fn vault_put(ctx: &TestContext, key: &str, data: Value) -> u64 {
    let vault = ctx.env.vault_client(None).unwrap();
    let path = format!("{}/{key}", ctx.vault_prefix);
    vaultrs::kv2::set(&vault, "secret", &path, &data)
        .await
        .unwrap()
        .version
}

/// Creates or updates an AWS secret; returns the new VersionId.
pub(crate) async fn aws_put(ctx: &TestContext, key: &str, value: &str) -> String {
    let sm = ctx.env.secretsmanager().unwrap();
    let name = format!("{}{key}", ctx.aws_prefix);
    match sm
        .put_secret_value()
        .secret_id(&name)
        .secret_string(value)
        .send()
        .await
    {
        Ok(out) => out.version_id().unwrap().to_owned(),
        Err(_) => sm
            .create_secret()
            .name(&name)
            .secret_string(value)
            .send()
            .await
            .unwrap()
            .version_id()
            .unwrap()
            .to_owned(),
    }
}

pub(crate) async fn secret_data(ctx: &TestContext, name: &str) -> Option<BTreeMap<String, String>> {
    let secret = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get_opt(name)
        .await
        .unwrap()?;
    Some(
        secret
            .data
            .unwrap_or_default()
            .into_iter()
            .map(|(k, ByteString(v))| (k, String::from_utf8(v).unwrap()))
            .collect(),
    )
}

pub(crate) fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// The Ready condition (status, reason, message) once it describes the current generation.
pub(crate) async fn es_ready(ctx: &TestContext, name: &str) -> Option<(String, String, String)> {
    let obj = Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get(name)
        .await
        .ok()?;
    let status = obj.status?;
    if status.observed_generation != obj.metadata.generation {
        return None;
    }
    let c = status.conditions.into_iter().find(|c| c.type_ == "Ready")?;
    Some((c.status, c.reason, c.message))
}

pub(crate) async fn wait_es(ctx: &TestContext, name: &str, reason: &str) -> String {
    eventually(Duration::from_secs(40), || async {
        let (_, r, message) = es_ready(ctx, name).await?;
        (r == reason).then_some(message)
    })
    .await
}

pub(crate) async fn wait_data(ctx: &TestContext, name: &str, want: &BTreeMap<String, String>) {
    eventually(Duration::from_secs(40), || async {
        (secret_data(ctx, name).await.as_ref() == Some(want)).then_some(())
    })
    .await;
}

pub(crate) async fn events(ctx: &TestContext) -> Vec<Event> {
    Api::<Event>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
}

/// The value of a metric line `name{labels}` (labels as printed, e.g. `outcome="hit"`).
pub(crate) fn metric(controller: &Controller, name: &str, labels: &[&str]) -> f64 {
    let (_, body) = controller.get("/metrics").unwrap();
    body.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| labels.iter().all(|label| l.contains(label)))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

pub(crate) async fn started(ctx: &TestContext) -> Controller {
    install_crds(&ctx.kube).await;
    let controller = Controller::start(ctx, "a", &[]);
    controller.wait_ready().await;
    controller
}

// ---------------------------------------------------------------------------
// tests

#[tokio::test]
async fn vault_token_property_template_and_versions() {
    let ctx = TestContext::new("sync-vault-token").await.unwrap();
    let controller = started(&ctx).await;
    let canary = format!("canary-{}-value", ctx.id);
    vault_put(
        &ctx,
        "app/db",
        json!({"user": "app", "password": canary, "nested": {"port": "5432"}}),
    )
    .await;
    vault_put(&ctx, "app/flags", json!({"beta": "on", "limit": "7"})).await;
    let version = vault_put(
        &ctx,
        "app/db",
        json!({"user": "app", "password": canary, "nested": {"port": "5433"}}),
    )
    .await;
    assert_eq!(version, 2);
    vault_token_store(&ctx, "vault").await;
    let prefix = &ctx.vault_prefix;
    external(
        &ctx,
        "app",
        json!({
            "refreshInterval": "1h",
            "secretStoreRef": {"name": "vault", "kind": "SecretStore"},
            "target": {"name": "app-secret", "template": {
                "type": "kubernetes.io/basic-auth",
                "metadata": {"labels": {"team": "a"}, "annotations": {"note": "templated"}},
                "data": {
                    "username": "{{ .user }}",
                    "password": "{{ .password }}",
                    "url": "postgres://{{ .user }}:{{ .password }}@db:{{ .port }}/app?beta={{ .beta }}",
                    "oldport": "{{ index . \"old-port\" }}"
                }}},
            "data": [
                {"secretKey": "user", "remoteRef": {"key": format!("{prefix}/app/db"), "property": "user"}},
                {"secretKey": "password", "remoteRef": {"key": format!("{prefix}/app/db"), "property": "password"}},
                {"secretKey": "port", "remoteRef": {"key": format!("{prefix}/app/db"), "property": "nested.port"}},
                {"secretKey": "old-port", "remoteRef": {"key": format!("{prefix}/app/db"), "property": "nested.port", "version": "1"}}
            ],
            "dataFrom": [{"extract": {"key": format!("{prefix}/app/flags")}}]
        }),
    )
    .await;
    wait_es(&ctx, "app", "SecretSynced").await;
    let secret = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("app-secret")
        .await
        .unwrap();
    assert_eq!(secret.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(secret.labels().get("team").map(String::as_str), Some("a"));
    assert_eq!(
        secret.annotations().get("note").map(String::as_str),
        Some("templated")
    );
    let owner = &secret.owner_references()[0];
    assert_eq!(
        (owner.kind.as_str(), owner.name.as_str()),
        ("ExternalSecret", "app")
    );
    assert_eq!(
        secret_data(&ctx, "app-secret").await.unwrap(),
        map(&[
            ("username", "app"),
            ("password", &canary),
            (
                "url",
                &format!("postgres://app:{canary}@db:5433/app?beta=on")
            ),
            ("oldport", "5432"),
        ])
    );
    let es = Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("app")
        .await
        .unwrap();
    let status = es.status.unwrap();
    assert_eq!(
        status
            .synced_versions
            .get(&format!("{prefix}/app/db"))
            .map(String::as_str),
        Some("2")
    );
    assert_eq!(
        status
            .synced_versions
            .get(&format!("{prefix}/app/db@1"))
            .map(String::as_str),
        Some("1")
    );
    assert_eq!(
        status
            .synced_versions
            .get(&format!("{prefix}/app/flags"))
            .map(String::as_str),
        Some("1")
    );
    assert!(status.refresh_time.is_some());

    // The canary is in the Secret and nowhere else.
    let status_text = serde_json::to_string(
        &Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .get("app")
            .await
            .unwrap(),
    )
    .unwrap();
    assert!(!status_text.contains(&canary));
    let events_text = serde_json::to_string(&events(&ctx).await).unwrap();
    assert!(!events_text.contains(&canary));
    assert!(!controller.logs().contains(&canary));
    let token = ctx.env.var("VAULT_TOKEN").unwrap();
    assert!(
        !controller.logs().contains(token),
        "the store's credential is not logged"
    );
    assert!(!controller.get("/metrics").unwrap().1.contains(&canary));
    assert!(
        metric(
            &controller,
            "sigil_sync_total",
            &["result=\"SecretSynced\""]
        ) >= 1.0
    );
    assert!(
        metric(
            &controller,
            "sigil_provider_requests_total",
            &[
                "provider=\"vault\"",
                "operation=\"read\"",
                "result=\"success\""
            ]
        ) >= 3.0
    );
}

#[tokio::test]
async fn vault_kubernetes_and_approle_auth() {
    let ctx = TestContext::new("sync-vault-auth").await.unwrap();
    let _controller = started(&ctx).await;
    vault_put(&ctx, "db", json!({"password": "from-vault"})).await;
    ctx.create_service_account("reader", &[]).await.unwrap();
    let server = ctx.env.var("VAULT_ADDR").unwrap();
    store(
        &ctx,
        "vault-k8s",
        json!({"vault": {"server": server, "path": "secret", "version": "v2", "auth": {"kubernetes": {
            "mountPath": ctx.env.var("SIGIL_VAULT_KUBE_MOUNT").unwrap(),
            "role": ctx.env.var("SIGIL_VAULT_KUBE_ROLE").unwrap(),
            "serviceAccountRef": {"name": "reader"}}}}}),
    )
    .await;
    put_secret(
        &ctx,
        "approle",
        &[(
            "secret-id",
            ctx.env.var("SIGIL_VAULT_APPROLE_SECRET_ID").unwrap(),
        )],
        &[],
    )
    .await;
    store(
        &ctx,
        "vault-approle",
        json!({"vault": {"server": server, "path": "secret", "version": "v2", "auth": {"appRole": {
            "path": ctx.env.var("SIGIL_VAULT_APPROLE_MOUNT").unwrap(),
            "roleId": ctx.env.var("SIGIL_VAULT_APPROLE_ROLE_ID").unwrap(),
            "secretRef": {"name": "approle", "key": "secret-id"}}}}}),
    )
    .await;
    for (name, store) in [("via-k8s", "vault-k8s"), ("via-approle", "vault-approle")] {
        external(
            &ctx,
            name,
            json!({"secretStoreRef": {"name": store},
                "data": [{"secretKey": "password", "remoteRef": {"key": format!("{}/db", ctx.vault_prefix), "property": "password"}}]}),
        )
        .await;
    }
    for name in ["via-k8s", "via-approle"] {
        wait_es(&ctx, name, "SecretSynced").await;
        assert_eq!(
            secret_data(&ctx, name).await.unwrap(),
            map(&[("password", "from-vault")])
        );
    }
    // The stores report Ready.
    for name in ["vault-k8s", "vault-approle"] {
        let reason = eventually(Duration::from_secs(20), || async {
            let s = Api::<SecretStore>::namespaced(ctx.kube.clone(), &ctx.namespace)
                .get(name)
                .await
                .ok()?;
            let c = s
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "True").then_some(c.reason)
        })
        .await;
        assert_eq!(reason, "Valid");
    }
}

#[tokio::test]
async fn aws_static_keys_extract_versions_and_batching() {
    let ctx = TestContext::new("sync-aws").await.unwrap();
    let controller = started(&ctx).await;
    let endpoint = ctx.env.var("AWS_ENDPOINT_URL").unwrap().to_owned();
    let v1 = aws_put(&ctx, "db", r#"{"username":"admin","password":"one"}"#).await;
    let _v2 = aws_put(&ctx, "db", r#"{"username":"admin","password":"two"}"#).await;
    aws_put(&ctx, "plain", "not json at all").await;
    for i in 0..25 {
        aws_put(&ctx, &format!("many/{i}"), &format!("value-{i}")).await;
    }
    aws_store(&ctx, "aws", &endpoint).await;
    let p = &ctx.aws_prefix;
    external(
        &ctx,
        "db",
        json!({"refreshInterval": "15m", "secretStoreRef": {"name": "aws"},
            "data": [
                {"secretKey": "plain", "remoteRef": {"key": format!("{p}plain")}},
                {"secretKey": "first", "remoteRef": {"key": format!("{p}db"), "property": "password", "version": format!("uuid/{v1}")}},
                {"secretKey": "previous", "remoteRef": {"key": format!("{p}db"), "property": "password", "version": "AWSPREVIOUS"}}
            ],
            "dataFrom": [{"extract": {"key": format!("{p}db")}}]}),
    )
    .await;
    wait_es(&ctx, "db", "SecretSynced").await;
    assert_eq!(
        secret_data(&ctx, "db").await.unwrap(),
        map(&[
            ("username", "admin"),
            ("password", "two"),
            ("plain", "not json at all"),
            ("first", "one"),
            ("previous", "one")
        ])
    );
    // 25 ExternalSecrets over 25 keys created at once: a handful of batch calls.
    let reads_before = metric(
        &controller,
        "sigil_provider_requests_total",
        &["provider=\"aws\"", "operation=\"read\""],
    );
    // Created at once, as a GitOps sync would.
    futures::future::join_all((0..25).map(|i| {
        let ctx = &ctx;
        let spec = json!({"secretStoreRef": {"name": "aws"},
            "data": [{"secretKey": "v", "remoteRef": {"key": format!("{p}many/{i}")}}]});
        async move { external(ctx, &format!("many-{i}"), spec).await }
    }))
    .await;
    for i in 0..25 {
        wait_data(
            &ctx,
            &format!("many-{i}"),
            &map(&[("v", &format!("value-{i}"))]),
        )
        .await;
    }
    let batches = metric(
        &controller,
        "sigil_provider_requests_total",
        &["provider=\"aws\"", "operation=\"batch_read\""],
    );
    let reads = metric(
        &controller,
        "sigil_provider_requests_total",
        &["provider=\"aws\"", "operation=\"read\""],
    ) - reads_before;
    assert_eq!(
        metric(
            &controller,
            "sigil_sync_total",
            &["result=\"ProviderUnavailable\""]
        ),
        0.0,
        "no key of a full batch is lost"
    );
    // At least 2 (20 ids per call); a busy machine spreads the creates over a few
    // more 100 ms lingers. One read per key would be 26.
    assert!(
        batches <= 8.0,
        "{batches} BatchGetSecretValue calls for 26 keys"
    );
    assert_eq!(reads, 0.0, "current versions are read in batches only");
}

#[tokio::test]
async fn aws_web_identity_through_sts() {
    let ctx = TestContext::new("sync-aws-jwt").await.unwrap();
    let _controller = started(&ctx).await;
    aws_put(&ctx, "token", "from-web-identity").await;
    ctx.create_service_account(
        "irsa",
        &[(
            "eks.amazonaws.com/role-arn",
            "arn:aws:iam::123456789012:role/sigil",
        )],
    )
    .await
    .unwrap();
    store(
        &ctx,
        "aws-jwt",
        json!({"aws": {"service": "SecretsManager", "region": "us-east-1",
            "endpoint": ctx.env.var("AWS_ENDPOINT_URL").unwrap(),
            "auth": {"jwt": {"serviceAccountRef": {"name": "irsa"}}}}}),
    )
    .await;
    external(
        &ctx,
        "token",
        json!({"secretStoreRef": {"name": "aws-jwt"},
            "data": [{"secretKey": "token", "remoteRef": {"key": format!("{}token", ctx.aws_prefix)}}]}),
    )
    .await;
    wait_es(&ctx, "token", "SecretSynced").await;
    assert_eq!(
        secret_data(&ctx, "token").await.unwrap(),
        map(&[("token", "from-web-identity")])
    );
}

#[tokio::test]
async fn changes_are_picked_up_on_the_interval_at_once_with_force_sync_and_edits_are_restored() {
    let ctx = TestContext::new("sync-refresh").await.unwrap();
    let _controller = started(&ctx).await;
    vault_token_store(&ctx, "vault").await;
    vault_put(&ctx, "fast", json!({"v": "1"})).await;
    vault_put(&ctx, "slow", json!({"v": "1"})).await;
    let spec = |key: &str, interval: &str| {
        json!({"refreshInterval": interval, "secretStoreRef": {"name": "vault"},
            "data": [{"secretKey": "v", "remoteRef": {"key": format!("{}/{key}", ctx.vault_prefix), "property": "v"}}]})
    };
    external(&ctx, "fast", spec("fast", "3s")).await;
    external(&ctx, "slow", spec("slow", "1h")).await;
    wait_data(&ctx, "fast", &map(&[("v", "1")])).await;
    wait_data(&ctx, "slow", &map(&[("v", "1")])).await;

    vault_put(&ctx, "fast", json!({"v": "2"})).await;
    vault_put(&ctx, "slow", json!({"v": "2"})).await;
    // The next interval (3 s ± 10%, plus one cache window) brings the change.
    let started_at = std::time::Instant::now();
    wait_data(&ctx, "fast", &map(&[("v", "2")])).await;
    assert!(
        started_at.elapsed() < Duration::from_secs(8),
        "{:?}",
        started_at.elapsed()
    );
    assert_eq!(secret_data(&ctx, "slow").await.unwrap(), map(&[("v", "1")]));

    // force-sync: at once, past the cache.
    let annotate = |value: &str| json!({"metadata": {"annotations": {sigil_types::FORCE_SYNC_ANNOTATION: value}}});
    Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .patch(
            "slow",
            &PatchParams::default(),
            &Patch::Merge(annotate("1")),
        )
        .await
        .unwrap();
    let started_at = std::time::Instant::now();
    wait_data(&ctx, "slow", &map(&[("v", "2")])).await;
    assert!(started_at.elapsed() < Duration::from_secs(5));

    // A hand edit is undone at once, not at the next interval (1 h).
    put_secret(&ctx, "slow", &[("v", "edited")], &[]).await;
    let started_at = std::time::Instant::now();
    wait_data(&ctx, "slow", &map(&[("v", "2")])).await;
    assert!(started_at.elapsed() < Duration::from_secs(5));

    // So is a deletion, every time: the reconcile it triggers must not judge from a cache
    // that still holds the deleted Secret.
    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    for round in 0..5 {
        secrets
            .delete("slow", &DeleteParams::default())
            .await
            .unwrap();
        let started_at = std::time::Instant::now();
        wait_data(&ctx, "slow", &map(&[("v", "2")])).await;
        assert!(
            started_at.elapsed() < Duration::from_secs(10),
            "round {round}: restored after {:?}",
            started_at.elapsed()
        );
    }
}

#[tokio::test]
async fn creation_and_deletion_policies() {
    let ctx = TestContext::new("sync-policies").await.unwrap();
    let _controller = started(&ctx).await;
    vault_token_store(&ctx, "vault").await;
    vault_put(&ctx, "k", json!({"a": "1", "b": "2"})).await;
    let key = format!("{}/k", ctx.vault_prefix);
    let data = |secret_key: &str, property: &str| json!([{"secretKey": secret_key, "remoteRef": {"key": key, "property": property}}]);

    // Owner never takes over a Secret it did not create...
    put_secret(&ctx, "taken", &[("mine", "hands off")], &[]).await;
    external(&ctx, "owner", json!({"secretStoreRef": {"name": "vault"}, "target": {"name": "taken"}, "data": data("a", "a")})).await;
    let message = wait_es(&ctx, "owner", "SecretNotOwned").await;
    assert!(
        message.contains(sigil_types::MANAGED_ANNOTATION),
        "{message}"
    );
    assert_eq!(
        secret_data(&ctx, "taken").await.unwrap(),
        map(&[("mine", "hands off")])
    );
    // ...unless it opts in.
    put_secret(
        &ctx,
        "taken",
        &[("mine", "hands off")],
        &[(sigil_types::MANAGED_ANNOTATION, "true")],
    )
    .await;
    wait_data(&ctx, "taken", &map(&[("a", "1")])).await;

    // A second Owner of the same Secret: Conflict, nothing written.
    external(&ctx, "rival", json!({"secretStoreRef": {"name": "vault"}, "target": {"name": "taken"}, "data": data("b", "b")})).await;
    wait_es(&ctx, "rival", "Conflict").await;
    // Nor may another ExternalSecret merge into it: its owner would undo that.
    external(
        &ctx,
        "merge-into-owned",
        json!({"secretStoreRef": {"name": "vault"}, "target": {"name": "taken", "creationPolicy": "Merge"}, "data": data("b", "b")}),
    )
    .await;
    let message = wait_es(&ctx, "merge-into-owned", "Conflict").await;
    assert!(message.contains("ExternalSecret owner"), "{message}");
    assert_eq!(
        secret_data(&ctx, "taken").await.unwrap(),
        map(&[("a", "1")])
    );

    // Merge adds only its keys to an existing Secret, and never creates one.
    put_secret(&ctx, "shared", &[("keep", "me")], &[]).await;
    external(&ctx, "merge", json!({"secretStoreRef": {"name": "vault"}, "target": {"name": "shared", "creationPolicy": "Merge"}, "data": data("b", "b")})).await;
    wait_data(&ctx, "shared", &map(&[("keep", "me"), ("b", "2")])).await;
    external(&ctx, "merge-missing", json!({"secretStoreRef": {"name": "vault"}, "target": {"name": "nowhere", "creationPolicy": "Merge"}, "data": data("b", "b")})).await;
    wait_es(&ctx, "merge-missing", "SecretNotOwned").await;
    assert!(secret_data(&ctx, "nowhere").await.is_none());

    // Orphan: the Secret carries no owner reference, so it outlives the ExternalSecret.
    external(&ctx, "orphan", json!({"secretStoreRef": {"name": "vault"}, "target": {"creationPolicy": "Orphan"}, "data": data("a", "a")})).await;
    wait_data(&ctx, "orphan", &map(&[("a", "1")])).await;
    let orphan = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("orphan")
        .await
        .unwrap();
    assert!(orphan.owner_references().is_empty());
    Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .delete("orphan", &DeleteParams::default())
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        secret_data(&ctx, "orphan").await.unwrap(),
        map(&[("a", "1")])
    );

    // deletionPolicy Delete: the Secret goes when the remote key is gone; Retain keeps it.
    vault_put(&ctx, "doomed", json!({"a": "1"})).await;
    let doomed = format!("{}/doomed", ctx.vault_prefix);
    for (name, policy) in [("deleted", "Delete"), ("retained", "Retain")] {
        external(
            &ctx,
            name,
            json!({"refreshInterval": "2s", "secretStoreRef": {"name": "vault"},
            "target": {"deletionPolicy": policy},
            "data": [{"secretKey": "a", "remoteRef": {"key": doomed, "property": "a"}}]}),
        )
        .await;
        wait_data(&ctx, name, &map(&[("a", "1")])).await;
    }
    let vault = ctx.env.vault_client(None).unwrap();
    vaultrs::kv2::delete_metadata(&vault, "secret", &doomed)
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        secret_data(&ctx, "deleted").await.is_none().then_some(())
    })
    .await;
    wait_es(&ctx, "retained", "RemoteKeyNotFound").await;
    assert_eq!(
        secret_data(&ctx, "retained").await.unwrap(),
        map(&[("a", "1")])
    );
}

#[tokio::test]
async fn stores_are_boundaries() {
    let ctx = TestContext::new("sync-boundaries").await.unwrap();
    let controller = started(&ctx).await;
    vault_put(&ctx, "k", json!({"a": "1"})).await;
    let key = format!("{}/k", ctx.vault_prefix);
    let token = ctx.env.var("VAULT_TOKEN").unwrap().to_owned();
    put_secret(&ctx, "vault-token", &[("token", &token)], &[]).await;
    let server = ctx.env.var("VAULT_ADDR").unwrap();
    // A ClusterSecretStore that serves another namespace only.
    let cluster_store = format!("{}-only-payments", ctx.id);
    ctx.track_cluster_store(&cluster_store);
    apply_obj::<ClusterSecretStore>(
        Api::all(ctx.kube.clone()),
        "ClusterSecretStore",
        json!({"metadata": {"name": cluster_store}, "spec": {
            "conditions": [{"namespaces": ["payments"]}],
            "provider": {"vault": {"server": server, "path": "secret", "version": "v2",
                "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token", "namespace": ctx.namespace}}}}}}),
    )
    .await;
    let reads_before = metric(
        &controller,
        "sigil_provider_requests_total",
        &["provider=\"vault\"", "operation=\"read\""],
    );
    external(
        &ctx,
        "excluded",
        json!({"secretStoreRef": {"name": cluster_store, "kind": "ClusterSecretStore"},
        "data": [{"secretKey": "a", "remoteRef": {"key": key, "property": "a"}}]}),
    )
    .await;
    let message = wait_es(&ctx, "excluded", "StoreNotAllowed").await;
    assert!(message.contains(&ctx.namespace), "{message}");
    assert!(secret_data(&ctx, "excluded").await.is_none());
    assert_eq!(
        metric(
            &controller,
            "sigil_provider_requests_total",
            &["provider=\"vault\"", "operation=\"read\""]
        ),
        reads_before,
        "no read for a namespace the store excludes"
    );

    // A namespaced SecretStore cannot use credentials from another namespace.
    store(
        &ctx,
        "borrowing",
        json!({"vault": {"server": server, "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token", "namespace": "sigil-system"}}}}),
    )
    .await;
    external(
        &ctx,
        "borrower",
        json!({"secretStoreRef": {"name": "borrowing"},
        "data": [{"secretKey": "a", "remoteRef": {"key": key, "property": "a"}}]}),
    )
    .await;
    let message = wait_es(&ctx, "borrower", "StoreNotReady").await;
    assert!(message.contains("its own namespace"), "{message}");
    // Missing keys and properties say which.
    vault_token_store(&ctx, "vault").await;
    external(
        &ctx,
        "no-prop",
        json!({"secretStoreRef": {"name": "vault"},
        "data": [{"secretKey": "a", "remoteRef": {"key": key, "property": "nope"}}]}),
    )
    .await;
    let message = wait_es(&ctx, "no-prop", "PropertyNotFound").await;
    assert!(message.contains("`nope`"), "{message}");
    external(
        &ctx,
        "no-key",
        json!({"secretStoreRef": {"name": "vault"},
        "data": [{"secretKey": "a", "remoteRef": {"key": format!("{key}-missing")}}]}),
    )
    .await;
    wait_es(&ctx, "no-key", "RemoteKeyNotFound").await;
    // Events are published after the status is written.
    eventually(Duration::from_secs(20), || async {
        let warnings: Vec<String> = events(&ctx)
            .await
            .into_iter()
            .filter(|e| e.type_.as_deref() == Some("Warning"))
            .filter_map(|e| e.reason)
            .collect();
        [
            "StoreNotAllowed",
            "StoreNotReady",
            "PropertyNotFound",
            "RemoteKeyNotFound",
        ]
        .iter()
        .all(|reason| warnings.iter().any(|r| r == reason))
        .then_some(())
    })
    .await;
}

/// A TCP proxy on loopback in front of a real server, to take it away and bring it back
/// without touching the server other tests share.
struct Outage {
    port: u16,
    upstream: String,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl Outage {
    async fn new(upstream_url: &str) -> Self {
        let upstream = upstream_url
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_owned();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let mut proxy = Outage {
            port,
            upstream,
            task: None,
        };
        proxy.restore().await;
        proxy
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Serves again on the same port.
    async fn restore(&mut self) {
        let listener = tokio::net::TcpListener::bind(("127.0.0.1", self.port))
            .await
            .unwrap();
        let upstream = self.upstream.clone();
        self.task = Some(tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            while let Ok((mut client, _)) = listener.accept().await {
                let upstream = upstream.clone();
                connections.spawn(async move {
                    if let Ok(mut server) = tokio::net::TcpStream::connect(&upstream).await {
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut server).await;
                    }
                });
            }
        }));
    }

    /// Refuses connections and cuts the open ones.
    fn cut(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.cut();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_outage_keeps_every_secret_and_recovers_within_one_interval() {
    let ctx = TestContext::new("sync-outage").await.unwrap();
    let controller = started(&ctx).await;
    let mut vault = Outage::new(ctx.env.var("VAULT_ADDR").unwrap()).await;
    let mut aws = Outage::new(ctx.env.var("AWS_ENDPOINT_URL").unwrap()).await;
    let token = ctx.env.var("VAULT_TOKEN").unwrap().to_owned();
    put_secret(&ctx, "vault-token", &[("token", &token)], &[]).await;
    store(
        &ctx,
        "vault",
        json!({"vault": {"server": vault.url(), "path": "secret", "version": "v2",
            "auth": {"tokenSecretRef": {"name": "vault-token", "key": "token"}}}}),
    )
    .await;
    aws_store(&ctx, "aws", &aws.url()).await;
    vault_put(&ctx, "db", json!({"password": "before"})).await;
    aws_put(&ctx, "db", "before").await;
    let interval = Duration::from_secs(3);
    let vault_spec = json!({"refreshInterval": "3s", "secretStoreRef": {"name": "vault"},
        "data": [{"secretKey": "password", "remoteRef": {"key": format!("{}/db", ctx.vault_prefix), "property": "password"}}]});
    let aws_spec = json!({"refreshInterval": "3s", "secretStoreRef": {"name": "aws"},
        "data": [{"secretKey": "password", "remoteRef": {"key": format!("{}db", ctx.aws_prefix)}}]});
    external(&ctx, "from-vault", vault_spec).await;
    external(&ctx, "from-aws", aws_spec).await;
    let before = map(&[("password", "before")]);
    wait_data(&ctx, "from-vault", &before).await;
    wait_data(&ctx, "from-aws", &before).await;
    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let versions = |name: &'static str| {
        let secrets = secrets.clone();
        async move { secrets.get(name).await.unwrap().resource_version() }
    };
    let (vault_rv, aws_rv) = (versions("from-vault").await, versions("from-aws").await);

    // Both providers go away for more than two intervals; the values change meanwhile.
    vault.cut();
    aws.cut();
    vault_put(&ctx, "db", json!({"password": "after"})).await;
    aws_put(&ctx, "db", "after").await;
    for name in ["from-vault", "from-aws"] {
        let message = wait_es(&ctx, name, "ProviderUnavailable").await;
        assert!(message.contains("left as it was"), "{message}");
    }
    tokio::time::sleep(interval * 2 + Duration::from_secs(1)).await;
    for name in ["from-vault", "from-aws"] {
        assert_eq!(
            secret_data(&ctx, name).await.unwrap(),
            before,
            "{name} kept its data"
        );
        let (_, reason, _) = es_ready(&ctx, name).await.unwrap();
        assert_eq!(reason, "ProviderUnavailable");
    }
    assert_eq!(
        versions("from-vault").await,
        vault_rv,
        "no write during the outage"
    );
    assert_eq!(
        versions("from-aws").await,
        aws_rv,
        "no write during the outage"
    );
    let unavailable = |e: &&Event| {
        e.type_.as_deref() == Some("Warning") && e.reason.as_deref() == Some("ProviderUnavailable")
    };
    // A Warning Event for each ExternalSecret.
    events_once(&ctx, |events| {
        events.iter().filter(unavailable).count() >= 2
    })
    .await;

    // Back: each Secret is current within one interval (plus the last backoff step,
    // which is capped at the interval).
    vault.restore().await;
    aws.restore().await;
    let back = std::time::Instant::now();
    let after = map(&[("password", "after")]);
    wait_data(&ctx, "from-vault", &after).await;
    wait_data(&ctx, "from-aws", &after).await;
    assert!(
        back.elapsed() <= interval * 2,
        "current again after {:?}",
        back.elapsed()
    );
    wait_es(&ctx, "from-vault", "SecretSynced").await;
    assert!(
        metric(
            &controller,
            "sigil_sync_total",
            &["result=\"ProviderUnavailable\""]
        ) >= 2.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_login_per_store_across_twenty_refresh_cycles_of_fifty_external_secrets() {
    let ctx = TestContext::new("sync-logins").await.unwrap();
    let controller = started(&ctx).await;
    // The test's own AppRole role, with a short token TTL so that renewals happen.
    let vault = ctx.env.vault_client(None).unwrap();
    let role = ctx.id.clone();
    let mount = ctx.env.var("SIGIL_VAULT_APPROLE_MOUNT").unwrap();
    vaultrs::auth::approle::role::set(
        &vault,
        mount,
        &role,
        Some(
            &mut vaultrs::api::auth::approle::requests::SetAppRoleRequest::builder()
                .token_policies(vec!["sigil-test".to_owned()])
                .token_ttl("6s")
                .token_max_ttl("1h"),
        ),
    )
    .await
    .unwrap();
    let role_id = vaultrs::auth::approle::role::read_id(&vault, mount, &role)
        .await
        .unwrap()
        .role_id;
    let secret_id = vaultrs::auth::approle::role::secret::generate(&vault, mount, &role, None)
        .await
        .unwrap()
        .secret_id;
    put_secret(&ctx, "approle", &[("secret-id", &secret_id)], &[]).await;
    store(
        &ctx,
        "vault",
        json!({"vault": {"server": ctx.env.var("VAULT_ADDR").unwrap(), "path": "secret", "version": "v2",
            "auth": {"appRole": {"path": mount, "roleId": role_id, "secretRef": {"name": "approle", "key": "secret-id"}}}}}),
    )
    .await;
    let keys = 5;
    for k in 0..keys {
        vault_put(&ctx, &format!("k{k}"), json!({"v": format!("{k}")})).await;
    }
    // Reads start with the first ExternalSecret: the clock too, or a slow apply of the
    // fifty would count its reads against a shorter time.
    let started_at = std::time::Instant::now();
    for i in 0..50 {
        external(
            &ctx,
            &format!("es-{i}"),
            json!({"refreshInterval": "1s", "secretStoreRef": {"name": "vault"},
                "data": [{"secretKey": "v", "remoteRef": {"key": format!("{}/k{}", ctx.vault_prefix, i % keys), "property": "v"}}]}),
        )
        .await;
    }
    eventually(Duration::from_secs(90), || async {
        (metric(
            &controller,
            "sigil_sync_total",
            &["result=\"SecretSynced\""],
        ) >= 50.0 * 20.0)
            .then_some(())
    })
    .await;
    let elapsed = started_at.elapsed().as_secs_f64();
    let logins = ctx
        .env
        .vault_audited_responses(&format!("auth/{mount}/login"), "role_name", &role)
        .unwrap();
    let renewals = ctx
        .env
        .vault_audited_responses("auth/token/renew-self", "role_name", &role)
        .unwrap();
    assert_eq!(
        logins, 1,
        "one login for the store in 20 cycles of 50 ExternalSecrets"
    );
    assert!(renewals >= 1, "the 6 s token was renewed, not replaced");
    // The server's own count of reads: about one per remote key per interval.
    let reads = ctx
        .env
        .vault_audited_requests(&format!("secret/data/{}/", ctx.vault_prefix))
        .unwrap();
    let per_key_per_interval = reads as f64 / (keys as f64 * elapsed);
    let cache: Vec<f64> = ["hit", "miss", "coalesced"]
        .iter()
        .map(|o| {
            metric(
                &controller,
                "sigil_read_cache_total",
                &[&format!("outcome=\"{o}\"")],
            )
        })
        .collect();
    assert!(
        per_key_per_interval <= 1.3,
        "{reads} reads of {keys} keys in {elapsed:.1} s = {per_key_per_interval:.2} per key per 1 s interval (cache hit/miss/coalesced: {cache:?})"
    );
    assert_eq!(
        metric(
            &controller,
            "sigil_provider_requests_total",
            &["operation=\"login\""]
        ),
        1.0
    );
    eventually(Duration::from_secs(15), || async {
        (metric(
            &controller,
            "sigil_externalsecrets",
            &["condition=\"SecretSynced\""],
        ) == 50.0)
            .then_some(())
    })
    .await;
    assert!(
        !controller.logs().contains(&secret_id),
        "the AppRole secret id is not logged"
    );
}

//! `sigil-api` on the real servers: callers authenticated by the kube-apiserver's
//! TokenReview and authorized by its SubjectAccessReview (the environment's privileged
//! and unprivileged users and a ServiceAccount bound by a RoleBinding), Rotations the
//! controller then carries out, retries made safe by `Idempotency-Key`, bad input that
//! creates nothing, and an audit line for every call.

use std::time::Duration;

use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sigil_tests::TestContext;
use sigil_types::api::{ErrorBody, RotationList};
use sigil_types::{Rotation, RotationPhase};

use crate::rotation::password_mirror;
use crate::support::*;
use crate::sync::{events, started, vault_put, vault_token_store, wait_es};

/// The environment's tokens: `sigil-admin` (system:masters) and `sigil-unprivileged`.
fn token(ctx: &TestContext, which: &str) -> String {
    ctx.env.var(which).unwrap().to_owned()
}

/// A ServiceAccount `runbook` allowed to create, get and list Rotations in the test's
/// namespace only; its token.
async fn runbook_token(ctx: &TestContext) -> String {
    let ns = &ctx.namespace;
    let token = ctx.service_account_token("runbook").await.unwrap();
    let role: Role = serde_json::from_value(json!({
        "metadata": {"name": "rotator"},
        "rules": [{"apiGroups": ["sigil.dev"], "resources": ["rotations"], "verbs": ["create", "get", "list"]}]
    }))
    .unwrap();
    Api::<Role>::namespaced(ctx.kube.clone(), ns)
        .create(&PostParams::default(), &role)
        .await
        .unwrap();
    let binding: RoleBinding = serde_json::from_value(json!({
        "metadata": {"name": "runbook-rotates"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rotator"},
        "subjects": [{"kind": "ServiceAccount", "name": "runbook", "namespace": ns}]
    }))
    .unwrap();
    Api::<RoleBinding>::namespaced(ctx.kube.clone(), ns)
        .create(&PostParams::default(), &binding)
        .await
        .unwrap();
    token
}

/// A Vault-backed ExternalSecret `db` mirroring `password`, synced.
async fn mirrored(ctx: &TestContext) {
    vault_put(ctx, "db", json!({"password": "p0"})).await;
    vault_token_store(ctx, "vault").await;
    password_mirror(ctx, "db", "vault", &format!("{}/db", ctx.vault_prefix)).await;
    wait_es(ctx, "db", "SecretSynced").await;
}

struct Call {
    method: reqwest::Method,
    path: String,
    token: Option<String>,
    content_type: Option<&'static str>,
    idempotency_key: Option<&'static str>,
    body: Vec<u8>,
}

impl Call {
    fn new(method: reqwest::Method, path: impl Into<String>) -> Self {
        Self {
            method,
            path: path.into(),
            token: None,
            content_type: None,
            idempotency_key: None,
            body: Vec::new(),
        }
    }

    fn post(path: impl Into<String>, token: &str, body: Value) -> Self {
        Self::new(reqwest::Method::POST, path)
            .token(token)
            .json(body)
    }

    fn get(path: impl Into<String>, token: &str) -> Self {
        Self::new(reqwest::Method::GET, path).token(token)
    }

    fn token(mut self, token: &str) -> Self {
        self.token = Some(token.to_owned());
        self
    }

    fn json(mut self, body: Value) -> Self {
        self.content_type = Some("application/json");
        self.body = serde_json::to_vec(&body).unwrap();
        self
    }

    fn raw(mut self, content_type: Option<&'static str>, body: impl Into<Vec<u8>>) -> Self {
        self.content_type = content_type;
        self.body = body.into();
        self
    }

    fn key(mut self, key: &'static str) -> Self {
        self.idempotency_key = Some(key);
        self
    }

    async fn send(self, api: &ApiServer) -> (StatusCode, Value) {
        let mut request = reqwest::Client::new()
            .request(self.method, format!("{}{}", api.url, self.path))
            .body(self.body);
        if let Some(token) = self.token {
            request = request.bearer_auth(token);
        }
        if let Some(content_type) = self.content_type {
            request = request.header("content-type", content_type);
        }
        if let Some(key) = self.idempotency_key {
            request = request.header("idempotency-key", key);
        }
        let response = request.send().await.unwrap();
        let status = response.status();
        let body = response.json::<Value>().await.unwrap_or(Value::Null);
        (status, body)
    }
}

/// The error code of a refusal, asserting the body is an `ErrorBody`.
fn code(body: &Value) -> String {
    serde_json::from_value::<ErrorBody>(body.clone())
        .unwrap_or_else(|err| panic!("not an error body ({err}): {body}"))
        .code
}

async fn rotation_names(ctx: &TestContext) -> Vec<String> {
    Api::<Rotation>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .iter()
        .map(|r| r.name_any())
        .collect()
}

#[tokio::test]
async fn a_runbook_rotates_through_the_api_safely_retried_and_audited() {
    let ctx = TestContext::new("api-rotate").await.unwrap();
    let controller = started(&ctx).await;
    mirrored(&ctx).await;
    let api = ApiServer::start(&ctx, &controller, &[]).await;
    let admin = token(&ctx, "SIGIL_KUBE_ADMIN_TOKEN");
    let path = format!("/v1/namespaces/{}/rotations", ctx.namespace);
    let spec = json!({"externalSecretRef": {"name": "db"}, "reason": "INC-123"});

    let (status, first) = Call::post(&path, &admin, spec.clone())
        .key("inc-123")
        .send(&api)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{first}");
    let name = first["metadata"]["name"].as_str().unwrap().to_owned();
    assert_eq!(first["spec"]["requestedBy"], "sigil-admin");

    // A retry (the runbook did not see the answer) meets the same Rotation.
    let (status, again) = Call::post(&path, &admin, spec.clone())
        .key("inc-123")
        .send(&api)
        .await;
    assert_eq!(status, StatusCode::OK, "{again}");
    assert_eq!(again["metadata"]["uid"], first["metadata"]["uid"]);
    // The same key for another request is a mistake worth stopping.
    let (status, conflict) = Call::post(
        &path,
        &admin,
        json!({"externalSecretRef": {"name": "db"}, "reason": "INC-999"}),
    )
    .key("inc-123")
    .send(&api)
    .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert_eq!(code(&conflict), "idempotency_conflict");
    assert_eq!(rotation_names(&ctx).await, std::slice::from_ref(&name));

    // The controller carries it out; the API shows its progress.
    let done = eventually(Duration::from_secs(60), || async {
        let (status, body) = Call::get(format!("{path}/{name}"), &admin).send(&api).await;
        assert_eq!(status, StatusCode::OK, "{body}");
        let rotation: Rotation = serde_json::from_value(body).unwrap();
        rotation
            .status
            .as_ref()?
            .phase?
            .is_final()
            .then_some(rotation)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RotationPhase::Completed));
    assert_eq!(status.new_version.as_deref(), Some("2"));

    // A dry run is listed first: newest first (creation times have whole seconds).
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (status, dry) = Call::post(format!("{path}?dryRun=true"), &admin, spec.clone())
        .send(&api)
        .await;
    assert_eq!(status, StatusCode::CREATED, "{dry}");
    assert_eq!(dry["spec"]["dryRun"], true);
    let (status, list) = Call::get(&path, &admin).send(&api).await;
    assert_eq!(status, StatusCode::OK);
    let list: RotationList = serde_json::from_value(list).unwrap();
    let listed: Vec<String> = list.items.iter().map(|r| r.name_any()).collect();
    assert_eq!(listed, [dry["metadata"]["name"].as_str().unwrap(), &name]);

    let requested: Vec<String> = events(&ctx)
        .await
        .into_iter()
        .filter(|e| e.reason.as_deref() == Some("RotationRequested"))
        .filter_map(|e| e.message)
        .collect();
    assert!(
        requested
            .iter()
            .any(|m| m == "requested by sigil-admin through sigil-api (reason: INC-123)"),
        "{requested:?}"
    );

    let audit = api.audit();
    let creates: Vec<(u64, &str, &str)> = audit
        .iter()
        .filter(|line| line["method"] == "POST")
        .map(|line| {
            (
                line["result"].as_u64().unwrap(),
                line["decision"].as_str().unwrap(),
                line["rotation"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        creates[..3],
        [
            (201, "allow", name.as_str()),
            (200, "allow", name.as_str()),
            (409, "allow", name.as_str())
        ]
    );
    for line in &audit {
        assert_eq!(line["user"], "sigil-admin", "{line}");
        assert!(
            line["source"].as_str().unwrap().starts_with("127.0.0.1:"),
            "{line}"
        );
        assert!(
            line["time"].is_string() || line["timestamp"].is_string(),
            "{line}"
        );
    }
}

#[tokio::test]
async fn rbac_decides_and_bad_input_creates_nothing() {
    let ctx = TestContext::new("api-authz").await.unwrap();
    let controller = started(&ctx).await;
    mirrored(&ctx).await;
    let mut api = ApiServer::start(&ctx, &controller, &[]).await;
    let path = format!("/v1/namespaces/{}/rotations", ctx.namespace);
    let spec = json!({"externalSecretRef": {"name": "db"}, "reason": "drill", "dryRun": true});
    let admin = token(&ctx, "SIGIL_KUBE_ADMIN_TOKEN");
    let unprivileged = token(&ctx, "SIGIL_KUBE_USER_TOKEN");
    let runbook = runbook_token(&ctx).await;

    // A ServiceAccount bound by a RoleBinding may rotate here, as itself.
    let (status, created) = Call::post(&path, &runbook, spec.clone()).send(&api).await;
    assert_eq!(status, StatusCode::CREATED, "{created}");
    assert_eq!(
        created["spec"]["requestedBy"],
        format!("system:serviceaccount:{}:runbook", ctx.namespace)
    );
    let created_name = created["metadata"]["name"].as_str().unwrap().to_owned();

    let refusals: Vec<(&str, Call, StatusCode, &str)> = vec![
        (
            "no token",
            Call::new(reqwest::Method::POST, &path).json(spec.clone()),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "bad token",
            Call::post(&path, "not-a-token", spec.clone()),
            StatusCode::UNAUTHORIZED,
            "unauthenticated",
        ),
        (
            "valid token without RBAC",
            Call::post(&path, &unprivileged, spec.clone()),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "another namespace",
            Call::post("/v1/namespaces/default/rotations", &runbook, spec.clone()),
            StatusCode::FORBIDDEN,
            "forbidden",
        ),
        (
            "huge body",
            Call::post(&path, &admin, json!({"reason": "x".repeat(2 << 20)})),
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
        ),
        (
            "bad JSON",
            Call::post(&path, &admin, Value::Null)
                .raw(Some("application/json"), "{\"externalSecretRef\":"),
            StatusCode::BAD_REQUEST,
            "invalid_json",
        ),
        (
            "wrong content type",
            Call::post(&path, &admin, Value::Null)
                .raw(Some("text/yaml"), "externalSecretRef: {name: db}"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
        ),
        (
            "unknown ExternalSecret",
            Call::post(
                &path,
                &admin,
                json!({"externalSecretRef": {"name": "nope"}}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "unknown_external_secret",
        ),
        (
            "unknown fields",
            Call::post(
                &path,
                &admin,
                json!({"externalSecretRef": {"name": "db"}, "restart": false, "resart": true}),
            ),
            StatusCode::BAD_REQUEST,
            "unknown_field",
        ),
        (
            "requestedBy in the body",
            Call::post(
                &path,
                &admin,
                json!({"externalSecretRef": {"name": "db"}, "requestedBy": "someone-else"}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
        (
            "a value the CRD schema refuses",
            Call::post(
                &path,
                &admin,
                json!({"externalSecretRef": {"name": "db"}, "generate": {"length": 0}}),
            ),
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid",
        ),
    ];
    for (what, call, want_status, want_code) in refusals {
        let (status, body) = call.send(&api).await;
        assert_eq!(
            (status, code(&body).as_str()),
            (want_status, want_code),
            "{what}: {body}"
        );
    }
    assert_eq!(
        rotation_names(&ctx).await,
        [created_name],
        "bad input created nothing"
    );

    let audit = api.audit();
    let denied = audit
        .iter()
        .filter(|l| l["decision"] == "deny")
        .map(|l| l["user"].as_str().unwrap().to_owned())
        .collect::<Vec<_>>();
    assert_eq!(
        denied,
        [
            "sigil-unprivileged".to_owned(),
            format!("system:serviceaccount:{}:runbook", ctx.namespace)
        ]
    );
    let unauthenticated = audit
        .iter()
        .filter(|l| l["result"] == 401 && l["user"] == "")
        .count();
    assert_eq!(unauthenticated, 2);
    assert_eq!(audit.len(), 12, "one line per call");

    // SIGTERM: drains and exits cleanly.
    api.terminate();
    assert_eq!(api.wait_exit(Duration::from_secs(30)).await, Some(0));
}

/// The key ID every value of `sealed` is sealed to.
fn sealed_to(sealed: &Value) -> Vec<String> {
    sealed["spec"]["encryptedData"]
        .as_object()
        .unwrap()
        .values()
        .flat_map(|text| {
            sigil_core::Envelope::decode(text.as_str().unwrap())
                .unwrap()
                .key_ids()
        })
        .map(|id| id.to_string())
        .collect()
}

/// The active key's ID, as the API publishes it.
async fn active_key(api: &ApiServer) -> String {
    let text = reqwest::get(format!("{}/v1/publickeys", api.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys = sigil_core::keyfile::parse_public(&text).unwrap();
    keys[0].key.id().to_string()
}

#[tokio::test]
async fn verify_reseal_and_a_new_sealing_key_through_the_controller() {
    let ctx = TestContext::new("api-sealed").await.unwrap();
    let controller = started(&ctx).await;
    let api = ApiServer::start(&ctx, &controller, &[]).await;
    let admin = token(&ctx, "SIGIL_KUBE_ADMIN_TOKEN");
    let dir = tempfile::tempdir().unwrap();
    let canary = format!("canary-{}", ctx.id);
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(
            &ctx.namespace,
            "db",
            &[("password", &canary), ("user", "app")],
        ),
    );
    let sealed = serde_json::to_value(&sealed).unwrap();
    let old_key = active_key(&api).await;
    assert_eq!(sealed_to(&sealed), [old_key.clone(), old_key.clone()]);

    let (status, report) = Call::post("/v1/verify", &admin, sealed.clone())
        .send(&api)
        .await;
    assert_eq!(status, StatusCode::OK, "{report}");
    assert_eq!(
        report,
        json!({"namespace": ctx.namespace, "name": "db",
               "keys": [{"key": "password", "opens": true}, {"key": "user", "opens": true}]})
    );
    // Someone who may not read SealedSecrets there learns nothing.
    let unprivileged = token(&ctx, "SIGIL_KUBE_USER_TOKEN");
    let (status, _) = Call::post("/v1/verify", &unprivileged, sealed.clone())
        .send(&api)
        .await;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, rotation) =
        Call::post("/v1/sealingkey/rotate", &admin, json!({"reason": "drill"}))
            .send(&api)
            .await;
    assert_eq!(status, StatusCode::CREATED, "{rotation}");
    assert_eq!(rotation["spec"]["sealingKey"], json!({}));
    assert_eq!(rotation["spec"]["requestedBy"], "sigil-admin");
    let name = rotation["metadata"]["name"].as_str().unwrap().to_owned();
    let path = format!("/v1/namespaces/{}/rotations/{name}", ctx.namespace);
    eventually(Duration::from_secs(60), || async {
        let (_, body) = Call::get(&path, &admin).send(&api).await;
        (body["status"]["phase"] == "Completed").then_some(())
    })
    .await;
    // The API serves the key file it read at most a few seconds ago.
    let new_key = eventually(Duration::from_secs(15), || async {
        Some(active_key(&api).await).filter(|key| *key != old_key)
    })
    .await;

    // Re-sealed inside the controller, to the new key; it still opens for the same Secret.
    let resealed = eventually(Duration::from_secs(30), || async {
        let (status, body) = Call::post("/v1/reseal", &admin, sealed.clone())
            .send(&api)
            .await;
        assert_eq!(status, StatusCode::OK, "{body}");
        (sealed_to(&body) == [new_key.clone(), new_key.clone()]).then_some(body)
    })
    .await;
    assert_eq!(resealed["metadata"]["name"], "db");
    let (status, report) = Call::post("/v1/verify", &admin, resealed.clone())
        .send(&api)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["keys"][0]["opens"], true, "{report}");

    // The same through the CLI: files in, files out, exit codes.
    let cli = |args: &[&str]| {
        let mut args = args.to_vec();
        args.extend(["--server", api.url.as_str()]);
        sigil(&ctx, dir.path(), &args, "")
    };
    std::fs::write(dir.path().join("sealed.json"), sealed.to_string()).unwrap();
    let out = cli(&["reseal", "-f", "sealed.json", "-w", "resealed.json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let file: Value =
        serde_json::from_slice(&std::fs::read(dir.path().join("resealed.json")).unwrap()).unwrap();
    assert_eq!(sealed_to(&file), [new_key.clone(), new_key.clone()]);
    let out = cli(&["verify", "-f", "resealed.json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Sealed for another namespace: the reason, never the value.
    let mut moved = sealed.clone();
    moved["metadata"]["namespace"] = json!("default");
    let (status, report) = Call::post("/v1/verify", &admin, moved.clone())
        .send(&api)
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(report["keys"][0]["reason"], "WrongBinding", "{report}");
    std::fs::write(dir.path().join("moved.json"), moved.to_string()).unwrap();
    let out = cli(&["verify", "-f", "moved.json"]);
    assert_eq!(out.status.code(), Some(1));
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(said.contains("WrongBinding"), "{said}");
    let (status, refused) = Call::post("/v1/reseal", &admin, moved).send(&api).await;
    assert_eq!(
        (status, code(&refused).as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, "invalid")
    );

    let everything = format!(
        "{}{}{}",
        api.logs(),
        controller.logs(),
        serde_json::to_string(&api.audit()).unwrap()
    );
    assert!(!everything.contains(&canary), "the value leaked into a log");
}

/// `sigil` output with what differs between runs replaced: the namespace, the remote
/// prefix, the Rotation's name suffix and the durations.
fn normalised(ctx: &TestContext, output: &[u8]) -> String {
    let text = String::from_utf8_lossy(output)
        .replace(&ctx.vault_prefix, "PREFIX")
        .replace(&ctx.namespace, "NS");
    text.lines()
        .map(|line| {
            let line = match line.split_once("Rotation NS/db-") {
                Some((before, after)) => {
                    let rest = after.split_once(':').map_or("", |(_, r)| r);
                    format!("{before}Rotation NS/db-[hash]:{rest}")
                }
                None => line.to_owned(),
            };
            // `  ✓ resolve     <1s  message`: the duration has a fixed column.
            if let Some(step) = line.strip_prefix("  ✓ ") {
                let (name, rest) = step.split_at(13);
                let message = rest.get(8..).unwrap_or_default();
                return format!("  ✓ {name} [dur]  {message}");
            }
            match line.split_once(" in ") {
                Some((what, _)) if what == "Completed" || what == "Dry run completed" => {
                    format!(
                        "{what} in [dur]{}",
                        line.split_once(':')
                            .map_or(String::new(), |(_, r)| format!(":{r}"))
                    )
                }
                _ => line,
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

#[tokio::test]
async fn sigil_rotate_through_the_api_golden() {
    let ctx = TestContext::new("api-cli").await.unwrap();
    let controller = started(&ctx).await;
    mirrored(&ctx).await;
    let api = ApiServer::start(&ctx, &controller, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let rotate = |extra: &[&str], env_token: Option<String>| {
        let mut args = vec!["rotate", "-n", &ctx.namespace, "db", "--server", &api.url];
        args.extend_from_slice(extra);
        let mut args: Vec<String> = args.into_iter().map(str::to_owned).collect();
        if let Some(token) = env_token {
            args.extend(["--token".to_owned(), token]);
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        sigil(&ctx, dir.path(), &args, "")
    };

    let dry = rotate(&["--dry-run"], None);
    assert_eq!(
        dry.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    assert_eq!(
        normalised(&ctx, &dry.stdout),
        "\
Rotation NS/db-[hash]: ExternalSecret db (dry run)
  ✓ resolve       [dur]  dry run: would write a new version of Vault key `PREFIX/db` property `password` on top of version 1, refresh 1 ExternalSecret(s) and 1 Secret(s), and restart 0 workload(s); nothing was changed
Dry run completed in [dur]: nothing was changed
  version:          1, a new one would replace it
  ExternalSecrets:  1 would be refreshed: NS/db
  Secrets:          1 would be refreshed: NS/db
  workloads:        none would be restarted"
    );

    let done = rotate(&["--key", "password", "--reason", "INC-7"], None);
    assert_eq!(
        done.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&done.stderr)
    );
    assert_eq!(
        normalised(&ctx, &done.stdout),
        "\
Rotation NS/db-[hash]: ExternalSecret db, key password
  ✓ resolve       [dur]  rotating Vault key `PREFIX/db` property `password`, now at version 1
  ✓ stage         [dur]  wrote version 2 of Vault key `PREFIX/db` property `password`
  ✓ promote       [dur]  version 2 of Vault key `PREFIX/db` property `password` is current; version 1 stays readable
  ✓ propagate     [dur]  1 Secret(s) of 1 ExternalSecret(s) hold version 2 of Vault key `PREFIX/db` property `password`
  ✓ restart       [dur]  restarted 0 workload(s) that consume the refreshed Secrets
  ✓ await-rollout [dur]  0 workload(s) finished their rollout
  ✓ complete      [dur]  rotation completed
Completed in [dur]
  version:          1 -> 2
  ExternalSecrets:  1 refreshed: NS/db
  Secrets:          1 refreshed: NS/db
  workloads:        none restarted"
    );

    let refused = rotate(&[], Some(token(&ctx, "SIGIL_KUBE_USER_TOKEN")));
    assert_eq!(refused.status.code(), Some(1));
    assert!(refused.stdout.is_empty());
    assert_eq!(
        normalised(&ctx, &refused.stderr),
        "\
error: user `sigil-unprivileged` may not create rotations.sigil.dev in namespace `NS`: RBAC must grant verb `create` on resource `rotations` in API group `sigil.dev` (a Role and RoleBinding in that namespace)
hint: you need `create rotations.sigil.dev` in namespace NS: check with `kubectl auth can-i create rotations.sigil.dev -n NS`, and ask a cluster admin for a Role and RoleBinding that grant it"
    );

    let unknown = sigil(
        &ctx,
        dir.path(),
        &[
            "rotate",
            "-n",
            &ctx.namespace,
            "nope",
            "--server",
            &api.url,
            "-o",
            "json",
        ],
        "",
    );
    assert_eq!(unknown.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&unknown.stderr).contains(
            "ExternalSecret `NS/nope` does not exist"
                .replace("NS", &ctx.namespace)
                .as_str()
        ),
        "{}",
        String::from_utf8_lossy(&unknown.stderr)
    );
    assert_eq!(
        rotation_names(&ctx).await.len(),
        2,
        "the refused calls created nothing"
    );
}

/// A CA and a certificate for 127.0.0.1 signed by it, written as `NAME-ca.pem`,
/// `NAME.pem` and `NAME.key` in `dir` (with openssl, as an operator or cert-manager
/// would provide them).
fn issue_certificate(dir: &std::path::Path, name: &str) -> Vec<u8> {
    let script = format!(
        "set -e
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 1 \
  -subj /CN={name}-ca -keyout {name}-ca.key -out {name}-ca.pem 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=sigil-api \
  -keyout {name}.key.new -out {name}.csr 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\\nbasicConstraints=CA:FALSE\\n' > {name}.ext
openssl x509 -req -in {name}.csr -CA {name}-ca.pem -CAkey {name}-ca.key -CAcreateserial \
  -days 1 -extfile {name}.ext -out {name}.pem.new 2>/dev/null"
    );
    let status = std::process::Command::new("bash")
        .args(["-c", &script])
        .current_dir(dir)
        .status()
        .unwrap();
    assert!(status.success(), "openssl failed");
    std::fs::read(dir.join(format!("{name}-ca.pem"))).unwrap()
}

/// Moves a freshly issued pair into place (`tls.crt`, `tls.key`) as a Secret volume
/// update would: each file replaced whole.
fn install_certificate(dir: &std::path::Path, name: &str) {
    std::fs::rename(dir.join(format!("{name}.key.new")), dir.join("tls.key")).unwrap();
    std::fs::rename(dir.join(format!("{name}.pem.new")), dir.join("tls.crt")).unwrap();
}

/// GET /healthz over HTTPS trusting only `ca`, on a new connection.
async fn healthz_trusting(port: u16, ca: &[u8]) -> Result<StatusCode, reqwest::Error> {
    let client = reqwest::Client::builder()
        .tls_certs_only([reqwest::Certificate::from_pem(ca).unwrap()])
        .build()
        .unwrap();
    Ok(client
        .get(format!("https://127.0.0.1:{port}/healthz"))
        .send()
        .await?
        .status())
}

#[tokio::test]
async fn https_with_a_certificate_reloaded_when_it_changes() {
    let ctx = TestContext::new("api-tls").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let first_ca = issue_certificate(dir.path(), "first");
    install_certificate(dir.path(), "first");
    let cert = dir.path().join("tls.crt");
    let key = dir.path().join("tls.key");
    let api = ApiServer::spawn(
        &ctx,
        "http://127.0.0.1:9",
        &[
            "--tls-cert",
            cert.to_str().unwrap(),
            "--tls-key",
            key.to_str().unwrap(),
        ],
    );
    eventually(Duration::from_secs(30), || async {
        (healthz_trusting(api.port(), &first_ca).await.ok()? == StatusCode::OK).then_some(())
    })
    .await;
    // Plain HTTP is not served beside TLS.
    assert!(
        reqwest::get(format!("http://127.0.0.1:{}/healthz", api.port()))
            .await
            .is_err()
    );

    let second_ca = issue_certificate(dir.path(), "second");
    assert!(healthz_trusting(api.port(), &second_ca).await.is_err());
    install_certificate(dir.path(), "second");
    eventually(Duration::from_secs(20), || async {
        healthz_trusting(api.port(), &second_ca)
            .await
            .ok()
            .map(|_| ())
    })
    .await;
    assert!(
        healthz_trusting(api.port(), &first_ca).await.is_err(),
        "the old certificate is no longer served"
    );
    assert!(api.logs().contains("reloaded the TLS certificate"));

    // Without a certificate, plain HTTP must be asked for by name.
    let mut bare = ApiServer::spawn(&ctx, "http://127.0.0.1:9", &[]);
    assert_eq!(bare.wait_exit(Duration::from_secs(10)).await, Some(2));
    assert!(bare.logs().contains("--tls-cert"), "{}", bare.logs());
}

#[tokio::test]
async fn a_review_cache_longer_than_five_minutes_is_refused() {
    let ctx = TestContext::new("api-review-ttl").await.unwrap();
    let mut api = ApiServer::spawn(
        &ctx,
        "http://127.0.0.1:9",
        &["--insecure-http", "--review-cache-ttl", "1h"],
    );
    assert_eq!(api.wait_exit(Duration::from_secs(10)).await, Some(2));
    assert!(
        api.logs().contains("1h is longer than 5m"),
        "{}",
        api.logs()
    );
}

#[tokio::test]
async fn a_value_from_a_file_travels_sealed_and_only_for_its_own_key() {
    const SUPPLIED: &str = "vendor-reissued-Key-7Q";
    let ctx = TestContext::new("api-value").await.unwrap();
    let controller = started(&ctx).await;
    mirrored(&ctx).await;
    let api = ApiServer::start(&ctx, &controller, &[]).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("new.txt");
    std::fs::write(&file, format!("{SUPPLIED}\n")).unwrap();
    let ns = ctx.namespace.clone();
    let args = [
        "rotate",
        "-n",
        &ns,
        "db",
        "--key",
        "password",
        "--value-from-file",
        file.to_str().unwrap(),
        "--server",
        &api.url,
        "--idempotency-key",
        "inc-9-vendor-key",
    ];
    // The same command twice (a runbook retried): each run seals afresh, and the second
    // follows the Rotation the first made instead of failing or making another.
    for _ in 0..2 {
        let out = sigil(&ctx, dir.path(), &args, "");
        assert_eq!(
            out.status.code(),
            Some(0),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // The mirror holds the value as supplied, without the file's newline.
    assert_eq!(
        crate::sync::secret_data(&ctx, "db").await.unwrap()["password"],
        SUPPLIED
    );
    // Only the ciphertext travelled: not in the Rotation, sigil-api's logs or audit lines.
    let rotations = Api::<Rotation>::namespaced(ctx.kube.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap();
    assert_eq!(rotations.items.len(), 1);
    let sealed = rotations.items[0].spec.value.clone().expect("spec.value");
    let everything = format!(
        "{}{}{:?}{}",
        serde_json::to_string(&rotations.items).unwrap(),
        api.logs(),
        api.audit(),
        controller.logs()
    );
    assert!(!everything.contains(SUPPLIED));

    // The same ciphertext for another key, and a SealedSecret's value for this very
    // one (copied from Git), both fail without writing anything.
    let version_before = vault_current_version(&ctx).await;
    let public = reqwest::get(format!("{}/v1/publickeys", api.url))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let keys: Vec<_> = sigil_core::keyfile::parse_public(&public)
        .unwrap()
        .into_iter()
        .map(|entry| entry.key)
        .collect();
    let binding =
        sigil_core::Binding::new(sigil_core::Scope::Strict, &ns, "db", "password").unwrap();
    let from_git = sigil_core::seal(&keys, &binding, b"replayed").unwrap();
    for (name, key, value) in [
        ("other-key", "user", sealed),
        ("from-git", "password", from_git),
    ] {
        crate::rotation::rotation(
            &ctx,
            name,
            json!({"externalSecretRef": {"name": "db", "secretKey": key}, "value": value}),
        )
        .await;
        let done = crate::rotation::finished(&ctx, name).await;
        let (reason, message) = crate::rotation::ready_reason(&done);
        assert_eq!(reason, "InvalidValue", "{name}: {message}");
        assert!(message.contains("does not open"), "{name}: {message}");
    }
    assert_eq!(vault_current_version(&ctx).await, version_before);
    assert_eq!(
        crate::sync::secret_data(&ctx, "db").await.unwrap()["password"],
        SUPPLIED
    );
}

/// The current KV version of the test's `db` key.
async fn vault_current_version(ctx: &TestContext) -> u64 {
    let vault = ctx.env.vault_client(None).unwrap();
    let path = format!("{}/db", ctx.vault_prefix);
    vaultrs::kv2::read_metadata(&vault, "secret", &path)
        .await
        .unwrap()
        .current_version
}

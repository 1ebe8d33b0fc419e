//! Rotations that end the incident, on the real servers: a RotationPolicy names the
//! environment's PostgreSQL (or an HTTPS webhook) as where the credential is checked,
//! OpenBao or moto holds it, kwok's nodes run the pods that consume it. Each test has
//! its own namespace, remote prefix and PostgreSQL roles (named after its id).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use jiff::Timestamp;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::ResourceExt;
use kube::api::{Api, ListParams, PostParams};
use serde_json::{Value, json};
use sigil_tests::TestContext;
use sigil_types::{Rotation, RotationPhase, RotationPolicy};

use crate::rotation::{finished, kv_meta, ready_reason};
use crate::support::*;
use crate::sync::{
    apply_obj, aws_put, aws_store, external, put_secret, secret_data, vault_put, vault_token_store,
    wait_es,
};

/// Flags of every controller here: a stuck rollout holds its slot briefly, and a
/// schedule may be seconds apart.
const FLAGS: &[&str] = &["--rollout-deadline", "1s", "--min-rotation-interval", "1s"];

/// The PostgreSQL role of this test: unique in the run, a valid identifier.
fn role(ctx: &TestContext) -> String {
    ctx.id.replace('-', "_")
}

/// A connection to the environment's PostgreSQL as `user`.
async fn connect(
    ctx: &TestContext,
    user: &str,
    password: &str,
    database: &str,
) -> Result<tokio_postgres::Client, tokio_postgres::Error> {
    let port: u16 = ctx.env.var("SIGIL_POSTGRES_PORT").unwrap().parse().unwrap();
    let (client, connection) = tokio_postgres::Config::new()
        .host(ctx.env.var("SIGIL_POSTGRES_HOST").unwrap())
        .port(port)
        .user(user)
        .password(password)
        .dbname(database)
        .connect_timeout(Duration::from_secs(10))
        .connect(tokio_postgres::NoTls)
        .await?;
    tokio::spawn(connection);
    Ok(client)
}

/// Whether `user` / `password` logs in and runs `SELECT 1`.
async fn logs_in(ctx: &TestContext, user: &str, password: &str) -> bool {
    match connect(ctx, user, password, "postgres").await {
        Ok(client) => client.query_one("SELECT 1", &[]).await.is_ok(),
        Err(_) => false,
    }
}

async fn admin_sql(ctx: &TestContext, sql: &str) {
    let admin = connect(
        ctx,
        ctx.env.var("SIGIL_POSTGRES_USER").unwrap(),
        ctx.env.var("SIGIL_POSTGRES_PASSWORD").unwrap(),
        "postgres",
    )
    .await
    .unwrap();
    admin.batch_execute(sql).await.unwrap();
}

/// The leaked credential: role `user` with `password`, in the store as one JSON value
/// (`username`, `password`, `host`), mirrored whole into Secret `app` by ExternalSecret
/// `app`.
async fn leaked(ctx: &TestContext, provider: &str, user: &str, password: &str) {
    admin_sql(
        ctx,
        &format!("CREATE ROLE \"{user}\" LOGIN PASSWORD '{password}'"),
    )
    .await;
    let value = json!({"username": user, "password": password, "host": "db"});
    let key = match provider {
        "vault" => {
            vault_put(ctx, "db", value).await;
            vault_token_store(ctx, "store").await;
            format!("{}/db", ctx.vault_prefix)
        }
        _ => {
            aws_put(ctx, "db", &value.to_string()).await;
            aws_store(ctx, "store", ctx.env.var("AWS_ENDPOINT_URL").unwrap()).await;
            format!("{}db", ctx.aws_prefix)
        }
    };
    external(
        ctx,
        "app",
        json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1h",
               "dataFrom": [{"extract": {"key": key}}]}),
    )
    .await;
}

/// RotationPolicy `app-db` for ExternalSecret `app`, the environment's superuser as
/// its admin, with `extra` merged into its `postgres`.
async fn policy(ctx: &TestContext, strategy: &str, extra: Value) {
    put_secret(
        ctx,
        "pg-admin",
        &[
            ("username", ctx.env.var("SIGIL_POSTGRES_USER").unwrap()),
            ("password", ctx.env.var("SIGIL_POSTGRES_PASSWORD").unwrap()),
        ],
        &[],
    )
    .await;
    let mut postgres = json!({
        "host": ctx.env.var("SIGIL_POSTGRES_HOST").unwrap(),
        "port": ctx.env.var("SIGIL_POSTGRES_PORT").unwrap().parse::<u16>().unwrap(),
        "database": "postgres",
        "sslMode": "disable",
        "adminSecretRef": {"name": "pg-admin"},
        "strategy": strategy,
    });
    for (k, v) in extra.as_object().into_iter().flatten() {
        postgres[k] = v.clone();
    }
    apply_policy(
        ctx,
        "app-db",
        json!({"externalSecretRef": {"name": "app"}, "generate": {"length": 24},
               "postgres": postgres, "rolloutTimeout": "90s"}),
    )
    .await;
}

async fn apply_policy(ctx: &TestContext, name: &str, spec: Value) {
    apply_obj::<RotationPolicy>(
        Api::namespaced(ctx.kube.clone(), &ctx.namespace),
        "RotationPolicy",
        json!({"metadata": {"name": name, "namespace": ctx.namespace}, "spec": spec}),
    )
    .await;
}

/// Deployment `app`, 2 replicas, reading Secret `app` through `envFrom`; `pod` is merged
/// into its pod spec.
async fn app_deployment(ctx: &TestContext, pod: Value) {
    let mut spec = json!({"containers": [{"name": "app", "image": "example.invalid/app:1",
                          "envFrom": [{"secretRef": {"name": "app"}}]}]});
    for (k, v) in pod.as_object().into_iter().flatten() {
        spec[k] = v.clone();
    }
    let body: Deployment = serde_json::from_value(json!({
        "metadata": {"name": "app", "namespace": ctx.namespace},
        "spec": {"replicas": 2, "selector": {"matchLabels": {"app": "app"}},
                 "template": {"metadata": {"labels": {"app": "app"}}, "spec": spec}}
    }))
    .unwrap();
    Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .create(&PostParams::default(), &body)
        .await
        .unwrap();
}

fn rolled_out(d: &Deployment) -> bool {
    let Some(status) = &d.status else {
        return false;
    };
    status.observed_generation >= d.metadata.generation
        && status.updated_replicas == Some(2)
        && status.replicas == Some(2)
        && status.available_replicas == Some(2)
}

async fn wait_rolled_out(ctx: &TestContext) -> Deployment {
    let api = Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace);
    eventually(Duration::from_secs(90), || async {
        let d = api.get("app").await.ok()?;
        rolled_out(&d).then_some(d)
    })
    .await
}

/// Creates Rotation `name` with the project's kubectl, as a runbook would.
fn kubectl_rotate(ctx: &TestContext, name: &str) {
    let manifest = format!(
        "apiVersion: sigil.dev/v1\nkind: Rotation\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {{externalSecretRef: {{name: app}}, reason: INC-42}}\n",
        ns = ctx.namespace
    );
    let out = run_with_stdin(
        std::process::Command::new(ctx.env.var("SIGIL_KUBECTL").unwrap())
            .arg("--kubeconfig")
            .arg(ctx.env.kubeconfig_path())
            .args(["--context", "sigil", "apply", "-f", "-"]),
        &manifest,
    );
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The login Secret `app` holds now.
async fn mirrored(ctx: &TestContext) -> (String, String) {
    let data = secret_data(ctx, "app").await.unwrap();
    (data["username"].clone(), data["password"].clone())
}

/// One look at the mirror: when, which login, whether PostgreSQL took it.
#[derive(Debug)]
struct Sample {
    at: Timestamp,
    username: String,
    accepted: bool,
}

/// Logs in with whatever Secret `app` holds, every 100 ms, until stopped.
fn sample_mirror(
    ctx: &Arc<TestContext>,
) -> (Arc<AtomicBool>, tokio::task::JoinHandle<Vec<Sample>>) {
    let stop = Arc::new(AtomicBool::new(false));
    let ctx = ctx.clone();
    let stopped = stop.clone();
    let task = tokio::spawn(async move {
        let mut samples = Vec::new();
        while !stopped.load(Ordering::Relaxed) {
            let (username, password) = mirrored(&ctx).await;
            let accepted = logs_in(&ctx, &username, &password).await;
            samples.push(Sample {
                at: Timestamp::now(),
                username,
                accepted,
            });
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        samples
    });
    (stop, task)
}

fn step<'a>(done: &'a Rotation, name: &str) -> &'a sigil_types::RotationStep {
    done.status
        .as_ref()
        .unwrap()
        .steps
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no step {name}"))
}

/// The store's versions of `db`: (Vault: the current KV version; AWS: how many).
async fn store_versions(ctx: &TestContext, provider: &str) -> usize {
    match provider {
        "vault" => kv_meta(ctx, "db").await.0 as usize,
        _ => ctx
            .env
            .secretsmanager()
            .unwrap()
            .list_secret_version_ids()
            .secret_id(format!("{}db", ctx.aws_prefix))
            .send()
            .await
            .unwrap()
            .versions()
            .len(),
    }
}

/// The whole incident, as a runbook sees it: the leaked password of a database role
/// consumed by a running Deployment, `kubectl apply` of a Rotation naming only the
/// ExternalSecret, and then: the new credential logs in, the leaked one does not, its
/// open session was ended, every pod runs the new template, exactly one new store
/// version, `retire` after the rollout; and, sampled throughout, the mirror's login
/// refused only where the strategy allows it.
async fn incident(provider: &str, strategy: &str) {
    let ctx = Arc::new(
        TestContext::new(&format!("pg-{}-{provider}", &strategy[..3].to_lowercase()))
            .await
            .unwrap(),
    );
    install_crds(&ctx.kube).await;
    let user = role(&ctx);
    let leaked_password = format!("leaked-{}", ctx.id);
    leaked(&ctx, provider, &user, &leaked_password).await;
    let _controller = Controller::start(&ctx, "a", FLAGS);
    wait_es(&ctx, "app", "SecretSynced").await;
    app_deployment(&ctx, json!({})).await;
    let before = wait_rolled_out(&ctx).await;
    policy(&ctx, strategy, json!({})).await;
    let versions_before = store_versions(&ctx, provider).await;
    // An attacker's session, opened with the leaked password.
    let attacker = connect(&ctx, &user, &leaked_password, "postgres")
        .await
        .unwrap();

    let (stop, sampler) = sample_mirror(&ctx);
    kubectl_rotate(&ctx, "incident");
    let done = finished(&ctx, "incident").await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        Some(RotationPhase::Completed),
        "{:?}",
        ready_reason(&done)
    );

    let (new_user, new_password) = mirrored(&ctx).await;
    let expected_user = if strategy == "AlternatingUsers" {
        format!("{user}_clone")
    } else {
        user.clone()
    };
    assert_eq!(new_user, expected_user);
    assert_eq!(new_password.len(), 24);
    assert!(
        logs_in(&ctx, &new_user, &new_password).await,
        "the new login works"
    );
    assert!(
        !logs_in(&ctx, &user, &leaked_password).await,
        "the leaked password is refused"
    );
    let status = done.status.clone().unwrap();
    // pg_terminate_backend signals; the backend ends a moment later.
    eventually(Duration::from_secs(10), || async {
        attacker
            .query_one("SELECT 1", &[])
            .await
            .is_err()
            .then_some(())
    })
    .await;
    let credential = status.credential.clone().unwrap();
    assert!(
        credential.sessions_terminated.unwrap() >= 1,
        "{credential:?}"
    );
    assert!(!credential.retired.is_empty());
    assert_eq!(
        store_versions(&ctx, provider).await,
        versions_before + 1,
        "exactly one new store version"
    );

    // Every pod runs the new template.
    let after = wait_rolled_out(&ctx).await;
    assert_ne!(
        after.spec.as_ref().unwrap().template,
        before.spec.as_ref().unwrap().template
    );
    let template_restarted = after
        .spec
        .as_ref()
        .unwrap()
        .template
        .metadata
        .as_ref()
        .unwrap()
        .annotations
        .clone()
        .unwrap()[sigil_types::RESTARTED_FOR_ANNOTATION]
        .clone();
    let pods = eventually(Duration::from_secs(60), || async {
        let pods = Api::<Pod>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .list(&ListParams::default().labels("app=app"))
            .await
            .ok()?;
        let live: Vec<Pod> = pods
            .items
            .into_iter()
            .filter(|p| p.metadata.deletion_timestamp.is_none())
            .collect();
        (live.len() == 2
            && live.iter().all(|p| {
                p.annotations().get(sigil_types::RESTARTED_FOR_ANNOTATION)
                    == Some(&template_restarted)
            }))
        .then_some(live)
    })
    .await;
    assert_eq!(pods.len(), 2);

    // retire began only after every rollout had completed.
    let rolled = step(&done, "await-rollout").finished_at.clone().unwrap();
    let retire = step(&done, "retire");
    assert!(retire.started_at.0 >= rolled.0, "{:?}", status.steps);
    let set_started = step(&done, "set").started_at.0;
    let propagated = step(&done, "propagate").finished_at.clone().unwrap().0;

    // The invariant, sampled.
    assert!(samples.len() >= 3, "{} samples", samples.len());
    let refused: Vec<&Sample> = samples.iter().filter(|s| !s.accepted).collect();
    if strategy == "AlternatingUsers" {
        assert!(
            refused.is_empty(),
            "a mirror held a login the database refused: {refused:?}"
        );
        assert!(credential.mirrors_refused_for.is_none());
    } else {
        for sample in &refused {
            assert!(
                sample.at >= set_started && sample.at <= propagated + Duration::from_secs(1),
                "refused outside set..propagate: {sample:?} (set {set_started}, propagated {propagated})"
            );
        }
        assert!(credential.mirrors_refused_for.is_some(), "{credential:?}");
    }
    assert!(samples.iter().any(|s| s.username == new_user && s.accepted));
    let recorded = serde_json::to_string(&done).unwrap();
    assert!(!recorded.contains(&new_password) && !recorded.contains(&leaked_password));
}

#[tokio::test]
async fn alternating_users_on_vault_end_the_incident_without_a_refused_login() {
    incident("vault", "AlternatingUsers").await;
}

#[tokio::test]
async fn alternating_users_on_aws_end_the_incident_without_a_refused_login() {
    incident("aws", "AlternatingUsers").await;
}

#[tokio::test]
async fn single_user_on_vault_refuses_the_leaked_password_at_set() {
    incident("vault", "SingleUser").await;
}

#[tokio::test]
async fn single_user_on_aws_refuses_the_leaked_password_at_set() {
    incident("aws", "SingleUser").await;
}

/// The store's current value of `db`, as JSON.
async fn current_value(ctx: &TestContext, provider: &str) -> Value {
    match provider {
        "vault" => {
            let current = kv_meta(ctx, "db").await.0;
            crate::rotation::kv_version(ctx, "db", current).await
        }
        _ => serde_json::from_str(&crate::rotation::aws_value(ctx, "db", "AWSCURRENT").await.1)
            .unwrap(),
    }
}

/// A new login the database refuses: the Rotation fails `TestFailed`, the store's
/// current value is the old one again, no mirror ever held the new one, nobody was
/// rolled, and the old login works.
async fn refused_test(provider: &str, strategy: &str) {
    let ctx = Arc::new(
        TestContext::new(&format!("pg-refused-{provider}"))
            .await
            .unwrap(),
    );
    install_crds(&ctx.kube).await;
    let user = role(&ctx);
    let old_password = format!("old-{}", ctx.id);
    leaked(&ctx, provider, &user, &old_password).await;
    let database = format!("{user}_db");
    let extra = if strategy == "SingleUser" {
        // The role may not connect to the database the policy names.
        admin_sql(&ctx, &format!("CREATE DATABASE \"{database}\"")).await;
        admin_sql(
            &ctx,
            &format!("REVOKE CONNECT ON DATABASE \"{database}\" FROM PUBLIC"),
        )
        .await;
        json!({"database": database})
    } else {
        // The twin exists already, its password expired long ago.
        admin_sql(
            &ctx,
            &format!("CREATE ROLE \"{user}_clone\" LOGIN VALID UNTIL '2000-01-01'"),
        )
        .await;
        json!({})
    };
    let _controller = Controller::start(&ctx, "a", FLAGS);
    wait_es(&ctx, "app", "SecretSynced").await;
    app_deployment(&ctx, json!({})).await;
    let before = wait_rolled_out(&ctx).await;
    policy(&ctx, strategy, extra).await;
    let value_before = current_value(&ctx, provider).await;

    let (stop, sampler) = sample_mirror(&ctx);
    kubectl_rotate(&ctx, "doomed");
    let done = finished(&ctx, "doomed").await;
    stop.store(true, Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let (reason, message) = ready_reason(&done);
    assert_eq!(reason, "TestFailed", "{message}");
    assert!(message.contains("did not log in"), "{message}");
    if strategy == "SingleUser" {
        assert!(message.contains("previous password"), "{message}");
    }
    assert!(message.contains("what it was before"), "{message}");
    let value_after = current_value(&ctx, provider).await;
    assert_eq!(
        value_after, value_before,
        "the store's current value is the old one"
    );
    if provider == "aws" {
        let versions = crate::rotation::aws_versions(&ctx, "db").await;
        assert!(
            versions.values().flatten().all(|s| s != "AWSPENDING"),
            "{versions:?}"
        );
    }
    assert!(samples.iter().all(|s| s.username == user), "{samples:?}");
    // SingleUser: refused only while the new password was set and not yet taken back.
    let set_started = step(&done, "set").started_at.0;
    let test_finished = step(&done, "test").finished_at.clone().unwrap().0;
    for sample in samples.iter().filter(|s| !s.accepted) {
        assert!(
            strategy == "SingleUser"
                && sample.at >= set_started
                && sample.at <= test_finished + Duration::from_secs(1),
            "refused outside set..test: {sample:?}"
        );
    }
    assert!(
        logs_in(&ctx, &user, &old_password).await,
        "the old login still works"
    );
    assert_eq!(mirrored(&ctx).await, (user.clone(), old_password.clone()));
    let now = Api::<Deployment>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("app")
        .await
        .unwrap();
    assert_eq!(
        now.metadata.generation, before.metadata.generation,
        "nobody rolled"
    );
}

#[tokio::test]
async fn single_user_refused_by_the_database_gets_its_password_back_on_vault() {
    refused_test("vault", "SingleUser").await;
}

#[tokio::test]
async fn alternating_users_refused_by_the_database_keep_the_old_version_on_aws() {
    refused_test("aws", "AlternatingUsers").await;
}

#[tokio::test]
async fn a_rollout_that_cannot_complete_retires_nothing() {
    let ctx = TestContext::new("pg-stuck").await.unwrap();
    install_crds(&ctx.kube).await;
    let user = role(&ctx);
    let old_password = format!("old-{}", ctx.id);
    leaked(&ctx, "vault", &user, &old_password).await;
    let _controller = Controller::start(&ctx, "a", FLAGS);
    wait_es(&ctx, "app", "SecretSynced").await;
    app_deployment(
        &ctx,
        json!({"nodeSelector": {"sigil.dev/test-node": "none"}}),
    )
    .await;
    policy(&ctx, "AlternatingUsers", json!({})).await;
    apply_policy(
        &ctx,
        "app-db",
        json!({"externalSecretRef": {"name": "app"}, "rolloutTimeout": "5s",
               "postgres": {"host": ctx.env.var("SIGIL_POSTGRES_HOST").unwrap(),
                            "port": ctx.env.var("SIGIL_POSTGRES_PORT").unwrap().parse::<u16>().unwrap(),
                            "database": "postgres", "sslMode": "disable",
                            "adminSecretRef": {"name": "pg-admin"}, "strategy": "AlternatingUsers"}}),
    )
    .await;
    kubectl_rotate(&ctx, "stuck");
    let done = finished(&ctx, "stuck").await;
    let (reason, message) = ready_reason(&done);
    assert_eq!(reason, "RolloutTimedOut", "{message}");
    assert!(
        done.status
            .as_ref()
            .unwrap()
            .steps
            .iter()
            .all(|s| s.name != "retire")
    );
    assert!(
        logs_in(&ctx, &user, &old_password).await,
        "nothing was retired: the old login still works"
    );
    let (new_user, new_password) = mirrored(&ctx).await;
    assert_eq!(new_user, format!("{user}_clone"));
    assert!(logs_in(&ctx, &new_user, &new_password).await);
}

/// Kills the controller right after each step of a policy's Rotation; a fresh
/// controller finishes it exactly once, and the database takes what the store holds.
async fn crash_at_every_credential_step(provider: &str, fail_points: &[&str]) {
    let ctx = Arc::new(
        TestContext::new(&format!("pg-crash-{provider}"))
            .await
            .unwrap(),
    );
    install_crds(&ctx.kube).await;
    let user = role(&ctx);
    let first_password = format!("first-{}", ctx.id);
    leaked(&ctx, provider, &user, &first_password).await;
    app_deployment(&ctx, json!({})).await;
    policy(&ctx, "AlternatingUsers", json!({})).await;
    for (i, fail_point) in fail_points.iter().enumerate() {
        let name = format!("r{i}");
        let (old_user, old_password) = if i == 0 {
            (user.clone(), first_password.clone())
        } else {
            mirrored(&ctx).await
        };
        let versions_before = store_versions(&ctx, provider).await;
        let generation = wait_rolled_out(&ctx).await.metadata.generation.unwrap();
        let failpoints = format!("{fail_point}=return");
        let mut doomed =
            Controller::start_with_env(&ctx, "doomed", FLAGS, &[("FAILPOINTS", &failpoints)]);
        doomed.wait_ready().await;
        wait_es(&ctx, "app", "SecretSynced").await;
        let (stop, sampler) = sample_mirror(&ctx);
        kubectl_rotate(&ctx, &name);
        let code = doomed.wait_exit(Duration::from_secs(90)).await;
        assert_eq!(code, Some(86), "{provider}: did not stop at {fail_point}");
        drop(doomed);
        let fresh = Controller::start(&ctx, "fresh", FLAGS);
        let done = finished(&ctx, &name).await;
        stop.store(true, Ordering::Relaxed);
        let samples = sampler.await.unwrap();
        assert_eq!(
            done.status.as_ref().unwrap().phase,
            Some(RotationPhase::Completed),
            "{fail_point}: {:?}",
            ready_reason(&done)
        );
        assert_eq!(
            store_versions(&ctx, provider).await,
            versions_before + 1,
            "{fail_point}: exactly one new store version"
        );
        let (new_user, new_password) = eventually(Duration::from_secs(20), || async {
            let login = mirrored(&ctx).await;
            (login.0 != old_user).then_some(login)
        })
        .await;
        assert!(
            logs_in(&ctx, &new_user, &new_password).await,
            "{fail_point}"
        );
        assert!(
            !logs_in(&ctx, &old_user, &old_password).await,
            "{fail_point}"
        );
        assert!(
            samples.iter().all(|s| s.accepted),
            "{fail_point}: a mirror held a refused login: {:?}",
            samples.iter().find(|s| !s.accepted)
        );
        let rolled = wait_rolled_out(&ctx).await;
        assert_eq!(
            rolled.metadata.generation,
            Some(generation + 1),
            "{fail_point}: rolled exactly once"
        );
        drop(fresh);
    }
}

#[tokio::test]
async fn a_policy_rotation_on_vault_survives_a_crash_at_every_new_step() {
    crash_at_every_credential_step(
        "vault",
        &[
            "rotation-after-stage",
            "rotation-after-set",
            "rotation-after-test",
            "rotation-after-await-rollout",
            "rotation-after-retire",
        ],
    )
    .await;
}

#[tokio::test]
async fn a_policy_rotation_on_aws_survives_a_crash_at_every_new_step() {
    crash_at_every_credential_step(
        "aws",
        &[
            "rotation-after-set",
            "rotation-after-test",
            "rotation-after-retire",
        ],
    )
    .await;
}

/// What the test webhook received: phase, rotation, username, password, bearer token.
type Calls = Arc<std::sync::Mutex<Vec<(Value, Option<String>)>>>;

/// An HTTPS server on loopback with a fresh self-signed certificate: answers the first
/// `set` with 503, `retire` with 409, every call of phase `broken` with 500 (with
/// `broken` = `redirect`, every `set` with a 307 to `/elsewhere`, whose calls are
/// recorded as phase `followed`) and the rest with 204. Returns its URL, CA and what it
/// received.
async fn webhook_server(broken: &'static str) -> (String, String, Calls) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let certified = rcgen::generate_simple_self_signed(vec!["127.0.0.1".to_owned()]).unwrap();
    let cert_pem = certified.cert.pem();
    let key_pem = certified.signing_key.serialize_pem();
    let calls: Calls = Arc::default();
    let seen = calls.clone();
    let followed = calls.clone();
    let router = axum::Router::new()
        .route(
            "/rotate",
            axum::routing::post(
                move |headers: axum::http::HeaderMap, axum::Json(body): axum::Json<Value>| {
                    let seen = seen.clone();
                    async move {
                        let token = headers
                            .get("authorization")
                            .and_then(|v| v.to_str().ok())
                            .map(str::to_owned);
                        let mut calls = seen.lock().unwrap();
                        let first_set = body["phase"] == "set"
                            && !calls.iter().any(|(c, _)| c["phase"] == "set");
                        let phase = body["phase"].clone();
                        calls.push((body, token));
                        use axum::http::StatusCode;
                        use axum::response::IntoResponse as _;
                        if broken == "redirect" && phase == "set" {
                            (StatusCode::TEMPORARY_REDIRECT, [("location", "/elsewhere")])
                                .into_response()
                        } else if phase == broken {
                            StatusCode::INTERNAL_SERVER_ERROR.into_response()
                        } else if first_set {
                            StatusCode::SERVICE_UNAVAILABLE.into_response()
                        } else if phase == "retire" {
                            StatusCode::CONFLICT.into_response()
                        } else {
                            StatusCode::NO_CONTENT.into_response()
                        }
                    }
                },
            ),
        )
        .route(
            "/elsewhere",
            axum::routing::post(move || {
                let followed = followed.clone();
                async move {
                    followed
                        .lock()
                        .unwrap()
                        .push((json!({"phase": "followed"}), None));
                    axum::http::StatusCode::NO_CONTENT
                }
            }),
        );
    let tls = axum_server::tls_rustls::RustlsConfig::from_pem(
        cert_pem.clone().into_bytes(),
        key_pem.into_bytes(),
    )
    .await
    .unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let server = axum_server::from_tcp_rustls(listener, tls).unwrap();
    tokio::spawn(server.serve(router.into_make_service()));
    (format!("https://{addr}/rotate"), cert_pem, calls)
}

#[tokio::test]
async fn a_webhook_sets_tests_and_retires_idempotently_with_retries() {
    let ctx = TestContext::new("pg-webhook").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(
        &ctx,
        "svc",
        json!({"username": "svc", "password": "leaked-token"}),
    )
    .await;
    vault_token_store(&ctx, "store").await;
    external(
        &ctx,
        "app",
        json!({"secretStoreRef": {"name": "store"}, "refreshInterval": "1h",
               "data": [{"secretKey": "token", "remoteRef": {"key": format!("{}/svc", ctx.vault_prefix), "property": "password"}}]}),
    )
    .await;
    let (url, ca, calls) = webhook_server("").await;
    put_secret(&ctx, "hook-token", &[("token", "hook-secret")], &[]).await;
    apply_policy(
        &ctx,
        "vendor",
        json!({"externalSecretRef": {"name": "app"},
               "webhook": {"url": url, "caBundle": ca, "tokenSecretRef": {"name": "hook-token", "key": "token"}}}),
    )
    .await;
    let _controller = Controller::start(&ctx, "a", FLAGS);
    wait_es(&ctx, "app", "SecretSynced").await;
    kubectl_rotate(&ctx, "vendor-key");
    let done = finished(&ctx, "vendor-key").await;
    assert_eq!(
        done.status.as_ref().unwrap().phase,
        Some(RotationPhase::Completed),
        "{:?}",
        ready_reason(&done)
    );
    let new_token = secret_data(&ctx, "app").await.unwrap()["token"].clone();
    let calls = calls.lock().unwrap().clone();
    let phases: Vec<&str> = calls
        .iter()
        .map(|(c, _)| c["phase"].as_str().unwrap())
        .collect();
    assert_eq!(
        phases,
        ["set", "set", "test", "retire"],
        "the 503 was retried"
    );
    let uid = done.uid().unwrap();
    for (call, token) in &calls {
        assert_eq!(call["rotation"], uid.as_str());
        assert_eq!(token.as_deref(), Some("Bearer hook-secret"));
        assert_eq!(call["username"], "svc");
    }
    assert_eq!(calls[1].0["password"], new_token.as_str());
    assert_eq!(calls[2].0["password"], new_token.as_str());
    assert!(
        calls[3].0.get("password").is_none(),
        "no password on retire"
    );
    let credential = done.status.unwrap().credential.unwrap();
    assert!(
        credential.target.starts_with("webhook https://127.0.0.1:"),
        "{credential:?}"
    );
}

#[tokio::test]
async fn a_schedule_rotates_on_its_own_never_twice_at_once_and_one_policy_governs() {
    let ctx = TestContext::new("pg-schedule").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(&ctx, "db", json!({"password": "p0"})).await;
    vault_token_store(&ctx, "store").await;
    crate::rotation::password_mirror(&ctx, "app", "store", &format!("{}/db", ctx.vault_prefix))
        .await;
    let _controller = Controller::start(&ctx, "a", FLAGS);
    wait_es(&ctx, "app", "SecretSynced").await;
    apply_policy(
        &ctx,
        "every-3s",
        json!({"externalSecretRef": {"name": "app"}, "schedule": {"every": "3s"},
               "generate": {"length": 16}}),
    )
    .await;
    let rotations = Api::<Rotation>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let mut most_at_once = 0;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let made = loop {
        let listed = rotations.list(&ListParams::default()).await.unwrap().items;
        let under_way = listed
            .iter()
            .filter(|r| {
                !r.status
                    .as_ref()
                    .and_then(|s| s.phase)
                    .is_some_and(|p| p.is_final())
            })
            .count();
        most_at_once = most_at_once.max(under_way);
        let completed = listed
            .iter()
            .filter(|r| r.status.as_ref().and_then(|s| s.phase) == Some(RotationPhase::Completed))
            .count();
        if completed >= 2 {
            break listed;
        }
        assert!(tokio::time::Instant::now() < deadline, "{listed:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(most_at_once <= 1, "{most_at_once} Rotations ran at once");
    for r in &made {
        assert_eq!(r.spec.requested_by.as_deref(), Some("schedule/every-3s"));
        assert!(r.name_any().starts_with("every-3s-scheduled-"));
    }
    let policies = Api::<RotationPolicy>::namespaced(ctx.kube.clone(), &ctx.namespace);
    // The generated values follow the policy's `generate`.
    assert_eq!(
        secret_data(&ctx, "app").await.unwrap()["password"].len(),
        16
    );

    // A second policy of the same ExternalSecret governs nothing; a schedule under the
    // controller's minimum is refused.
    apply_policy(&ctx, "late", json!({"externalSecretRef": {"name": "app"}})).await;
    let condition = |name: &'static str| {
        let policies = policies.clone();
        async move {
            let p = policies.get(name).await.ok()?;
            let c = p
                .status?
                .conditions
                .into_iter()
                .find(|c| c.type_ == "Ready")?;
            (c.status == "False").then_some((c.reason, c.message))
        }
    };
    let (reason, message) = eventually(Duration::from_secs(20), || condition("late")).await;
    assert_eq!(reason, "Conflict", "{message}");
    assert!(message.contains("every-3s"), "{message}");
    let other = TestContext::new("pg-schedule-min").await.unwrap();
    let _strict = Controller::start(&other, "b", &["--min-rotation-interval", "1h"]);
    apply_policy(
        &other,
        "often",
        json!({"externalSecretRef": {"name": "x"}, "schedule": {"every": "30m"}}),
    )
    .await;
    let (reason, message) = eventually(Duration::from_secs(30), || async {
        let p = Api::<RotationPolicy>::namespaced(other.kube.clone(), &other.namespace)
            .get("often")
            .await
            .ok()?;
        let c = p
            .status?
            .conditions
            .into_iter()
            .find(|c| c.type_ == "Ready")?;
        (c.status == "False").then_some((c.reason, c.message))
    })
    .await;
    assert_eq!(reason, "InvalidSpec");
    assert!(message.contains("--min-rotation-interval"), "{message}");
}

#[tokio::test]
async fn a_policy_reads_its_secrets_only_from_its_own_namespace() {
    let ctx = TestContext::new("pg-tenant").await.unwrap();
    let elsewhere = TestContext::new("pg-tenant-admin").await.unwrap();
    install_crds(&ctx.kube).await;
    let user = role(&ctx);
    leaked(&ctx, "vault", &user, "pw-tenant").await;
    // The admin Secret exists, but in another namespace.
    put_secret(
        &elsewhere,
        "pg-admin",
        &[
            ("username", ctx.env.var("SIGIL_POSTGRES_USER").unwrap()),
            ("password", ctx.env.var("SIGIL_POSTGRES_PASSWORD").unwrap()),
        ],
        &[],
    )
    .await;
    apply_policy(
        &ctx,
        "app-db",
        json!({"externalSecretRef": {"name": "app"},
               "postgres": {"host": ctx.env.var("SIGIL_POSTGRES_HOST").unwrap(), "database": "postgres",
                            "sslMode": "disable", "adminSecretRef": {"name": "pg-admin"},
                            "strategy": "SingleUser"}}),
    )
    .await;
    let _controller = Controller::start(&ctx, "a", FLAGS);
    wait_es(&ctx, "app", "SecretSynced").await;
    let versions = store_versions(&ctx, "vault").await;
    kubectl_rotate(&ctx, "borrow");
    let done = finished(&ctx, "borrow").await;
    let (reason, message) = ready_reason(&done);
    assert_eq!(reason, "InvalidPolicy", "{message}");
    assert!(
        message.contains(&format!("Secret {}/pg-admin", ctx.namespace)),
        "{message}"
    );
    assert_eq!(
        store_versions(&ctx, "vault").await,
        versions,
        "nothing was written"
    );
    assert!(logs_in(&ctx, &user, "pw-tenant").await);
}

#[tokio::test]
async fn bad_policies_are_refused_with_a_message_that_says_how_to_fix() {
    let ctx = TestContext::new("pg-cel").await.unwrap();
    install_crds(&ctx.kube).await;
    let api = Api::<kube::core::DynamicObject>::namespaced_with(
        ctx.kube.clone(),
        &ctx.namespace,
        &kube::discovery::ApiResource::erase::<RotationPolicy>(&()),
    );
    let postgres = json!({"host": "db", "database": "app", "adminSecretRef": {"name": "pg-admin"},
                          "strategy": "SingleUser"});
    let cases = [
        (
            json!({"postgres": postgres, "webhook": {"url": "https://hooks.example/rotate"}}),
            "set one of spec.postgres or spec.webhook",
        ),
        (
            json!({"webhook": {"url": "http://hooks.example/rotate"}}),
            "webhook.url must start with https://",
        ),
        (
            json!({"schedule": {"every": "0"}}),
            "Go duration above zero",
        ),
        (
            json!({"rolloutTimeout": "ten minutes"}),
            "Go duration above zero",
        ),
        (
            json!({"postgres": {"host": "db", "database": "app", "adminSecretRef": {"name": "pg-admin"},
                                "strategy": "SingleUser", "sslMode": "require",
                                "caSecretRef": {"name": "ca", "key": "ca.crt"}}}),
            "caSecretRef is used only with sslMode: verify-full",
        ),
        (
            json!({"postgres": {"host": "db", "database": "app", "adminSecretRef": {"name": "pg-admin"},
                                "strategy": "BothUsers"}}),
            "AlternatingUsers",
        ),
    ];
    for (i, (extra, expected)) in cases.into_iter().enumerate() {
        let mut spec = json!({"externalSecretRef": {"name": "app"}});
        for (k, v) in extra.as_object().unwrap() {
            spec[k] = v.clone();
        }
        // Sent as raw JSON: the client type could not hold every bad value.
        let obj: kube::core::DynamicObject = serde_json::from_value(json!({
            "apiVersion": "sigil.dev/v1", "kind": "RotationPolicy",
            "metadata": {"name": format!("bad-{i}")}, "spec": spec}))
        .unwrap();
        let refused = api.create(&PostParams::default(), &obj).await.unwrap_err();
        let message = refused.to_string();
        assert!(message.contains(expected), "case {i}: {message}");
    }
}

#[tokio::test]
async fn a_webhook_that_keeps_failing_fails_the_rotation_at_the_timeout_and_keeps_the_value() {
    let ctx = TestContext::new("pg-webhook-down").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(&ctx, "db", json!({"password": "still-good"})).await;
    vault_token_store(&ctx, "store").await;
    crate::rotation::password_mirror(&ctx, "app", "store", &format!("{}/db", ctx.vault_prefix))
        .await;
    let (url, ca, calls) = webhook_server("test").await;
    apply_policy(
        &ctx,
        "vendor",
        json!({"externalSecretRef": {"name": "app"}, "rolloutTimeout": "3s",
               "webhook": {"url": url, "caBundle": ca}}),
    )
    .await;
    let _controller = Controller::start(&ctx, "a", FLAGS);
    wait_es(&ctx, "app", "SecretSynced").await;
    let before = store_versions(&ctx, "vault").await;
    kubectl_rotate(&ctx, "vendor-key");
    let done = finished(&ctx, "vendor-key").await;
    let (reason, message) = ready_reason(&done);
    assert_eq!(reason, "TestFailed", "{message}");
    assert!(
        message.contains("500") && message.contains("rolloutTimeout"),
        "{message}"
    );
    let tests = calls
        .lock()
        .unwrap()
        .iter()
        .filter(|(c, _)| c["phase"] == "test")
        .count();
    assert!(tests >= 2, "the failing test was retried ({tests} calls)");
    assert_eq!(
        current_value(&ctx, "vault").await["password"],
        "still-good",
        "the store's current value is the old one again"
    );
    assert_eq!(
        store_versions(&ctx, "vault").await,
        before + 2,
        "staged, then written back"
    );
    assert_eq!(
        secret_data(&ctx, "app").await.unwrap()["password"],
        "still-good"
    );
}

#[tokio::test]
async fn a_webhook_redirect_is_not_followed_with_the_password() {
    let ctx = TestContext::new("pg-webhook-redirect").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(&ctx, "db", json!({"password": "still-good"})).await;
    vault_token_store(&ctx, "store").await;
    crate::rotation::password_mirror(&ctx, "app", "store", &format!("{}/db", ctx.vault_prefix))
        .await;
    let (url, ca, calls) = webhook_server("redirect").await;
    apply_policy(
        &ctx,
        "vendor",
        json!({"externalSecretRef": {"name": "app"}, "rolloutTimeout": "3s",
               "webhook": {"url": url, "caBundle": ca}}),
    )
    .await;
    let _controller = Controller::start(&ctx, "a", FLAGS);
    wait_es(&ctx, "app", "SecretSynced").await;
    kubectl_rotate(&ctx, "vendor-key");
    let done = finished(&ctx, "vendor-key").await;
    let (reason, message) = ready_reason(&done);
    assert_eq!(reason, "SetFailed", "{message}");
    assert!(message.contains("307"), "{message}");
    let phases: Vec<Value> = calls
        .lock()
        .unwrap()
        .iter()
        .map(|(c, _)| c["phase"].clone())
        .collect();
    assert!(
        phases.iter().all(|p| p == "set"),
        "the redirect was followed: {phases:?}"
    );
    assert_eq!(
        current_value(&ctx, "vault").await["password"],
        "still-good",
        "the staged version was taken back"
    );
    assert_eq!(
        secret_data(&ctx, "app").await.unwrap()["password"],
        "still-good"
    );
}

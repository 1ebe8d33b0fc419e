//! Vault sessions on the real OpenBao: every auth method reads KV v2 (latest and a
//! pinned version), logins are single-flight and counted (by the session, by the
//! Observer and in OpenBao's audit log), short-lived tokens are renewed rather than
//! replaced, a revoked token is replaced once, and errors have the right kind.
//! Rotation's writes: check-and-set writes keep the previous version and refuse a
//! stale version without writing, and marks merge into `custom_metadata`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use secrecy::SecretString;
use sigil_providers::vault::{VaultAuth, VaultConfig, VaultSession};
use sigil_providers::{Error, ErrorKind, NoObserver, Operation, TokenSource};
use sigil_tests::{Env, TestContext};
use vaultrs::api::auth::approle::requests::SetAppRoleRequest;
use vaultrs::api::auth::kubernetes::requests::CreateKubernetesRoleRequest;
use vaultrs::api::kv2::requests::SetSecretMetadataRequest;
use vaultrs::client::VaultClient;

use crate::common::Counter;

const POLICY: &str = "sigil-test";

fn config(env: &Env, auth: VaultAuth) -> Result<VaultConfig> {
    Ok(VaultConfig {
        server: env.var("VAULT_ADDR")?.to_owned(),
        mount: env.var("SIGIL_VAULT_KV_MOUNT")?.to_owned(),
        namespace: None,
        ca_pem: None,
        auth,
        timeout: Duration::from_secs(10),
    })
}

async fn write(vault: &VaultClient, path: &str, password: &str) -> Result<u64> {
    let data = HashMap::from([("password", password)]);
    Ok(vaultrs::kv2::set(vault, "secret", path, &data)
        .await?
        .version)
}

fn json(bytes: &[u8]) -> serde_json::Value {
    serde_json::from_slice(bytes).expect("the value is the KV data as JSON")
}

/// Auth roles and mounts a test made, removed when it ends (also on panic).
struct Cleanup {
    env: &'static Env,
    approles: Vec<(String, String)>,
    kube_roles: Vec<String>,
    mounts: Vec<String>,
}

impl Cleanup {
    fn new(env: &'static Env) -> Self {
        Cleanup {
            env,
            approles: Vec::new(),
            kube_roles: Vec::new(),
            mounts: Vec::new(),
        }
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let env = self.env;
        let approles = std::mem::take(&mut self.approles);
        let kube_roles = std::mem::take(&mut self.kube_roles);
        let mounts = std::mem::take(&mut self.mounts);
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleanup");
            rt.block_on(async {
                let Ok(root) = env.vault_client(None) else {
                    return;
                };
                for (mount, role) in approles {
                    let _ = vaultrs::auth::approle::role::delete(&root, &mount, &role).await;
                }
                for role in kube_roles {
                    let _ =
                        vaultrs::auth::kubernetes::role::delete(&root, "kubernetes", &role).await;
                }
                for mount in mounts {
                    let _ = vaultrs::sys::auth::disable(&root, &mount).await;
                }
            });
        })
        .join();
    }
}

/// Creates the AppRole `role` on `mount` with the test policy and token TTLs, and
/// returns its RoleID and a fresh SecretID.
async fn approle(
    root: &VaultClient,
    cleanup: &mut Cleanup,
    mount: &str,
    role: &str,
    ttl: &str,
    max_ttl: &str,
) -> Result<(String, String)> {
    vaultrs::auth::approle::role::set(
        root,
        mount,
        role,
        Some(
            &mut SetAppRoleRequest::builder()
                .token_policies(vec![POLICY.to_owned()])
                .token_ttl(ttl)
                .token_max_ttl(max_ttl),
        ),
    )
    .await?;
    cleanup.approles.push((mount.to_owned(), role.to_owned()));
    let role_id = vaultrs::auth::approle::role::read_id(root, mount, role)
        .await?
        .role_id;
    let secret_id = vaultrs::auth::approle::role::secret::generate(root, mount, role, None)
        .await?
        .secret_id;
    Ok((role_id, secret_id))
}

fn approle_auth(mount: &str, role_id: &str, secret_id: &str) -> VaultAuth {
    VaultAuth::AppRole {
        mount_path: mount.to_owned(),
        role_id: role_id.to_owned(),
        secret_id: SecretString::from(secret_id),
    }
}

/// A TokenSource that mints a TokenRequest token for the ServiceAccount `app` of the
/// test's namespace on every call, as the controller does.
async fn service_account_tokens(ctx: &TestContext) -> Result<TokenSource> {
    ctx.create_service_account("app", &[]).await?;
    let sas = Api::<ServiceAccount>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let audience = ctx.env.var("SIGIL_KUBE_SERVER")?.to_owned();
    Ok(Arc::new(move || {
        let sas = sas.clone();
        let audience = audience.clone();
        Box::pin(async move {
            let request = TokenRequest {
                spec: TokenRequestSpec {
                    audiences: vec![audience],
                    expiration_seconds: Some(600),
                    ..Default::default()
                },
                ..Default::default()
            };
            let minted = sas
                .create_token_request("app", &PostParams::default(), &request)
                .await
                .map_err(|e| format!("TokenRequest for ServiceAccount app failed: {e}"))?;
            let token = minted
                .status
                .ok_or_else(|| "TokenRequest returned no status".to_owned())?
                .token;
            Ok(SecretString::from(token))
        })
    }))
}

#[tokio::test]
async fn token_auth_reads_latest_pinned_and_missing() -> Result<()> {
    let ctx = TestContext::new("vault_token_auth").await?;
    let root = ctx.env.vault_client(None)?;
    let key = format!("{}/db", ctx.vault_prefix);
    write(&root, &key, "one").await?;
    write(&root, &key, "two").await?;
    write(&root, &key, "three").await?;

    let counter = Arc::new(Counter::default());
    let token = SecretString::from(ctx.env.var("VAULT_TOKEN")?);
    let session = VaultSession::new(config(ctx.env, VaultAuth::Token(token))?, counter.clone())?;
    session.check().await?;

    let latest = session.read(&key, None).await?;
    assert_eq!(
        json(latest.bytes()),
        serde_json::json!({"password": "three"})
    );
    assert_eq!(latest.version(), "3");
    let pinned = session.read(&key, Some(1)).await?;
    assert_eq!(pinned.bytes(), br#"{"password":"one"}"#);
    assert_eq!(pinned.version(), "1");

    // A missing key, a version past the last, a deleted and a destroyed version.
    let missing = session
        .read(&format!("{}/nope", ctx.vault_prefix), None)
        .await;
    assert!(
        matches!(missing, Err(Error::NotFound { ref version, .. }) if version.is_none()),
        "{missing:?}"
    );
    let past = session.read(&key, Some(9)).await;
    assert!(
        matches!(past, Err(Error::NotFound { ref version, .. }) if version.as_deref() == Some("9")),
        "{past:?}"
    );
    vaultrs::kv2::delete_versions(&root, "secret", &key, vec![2]).await?;
    let deleted = session.read(&key, Some(2)).await;
    assert_eq!(deleted.unwrap_err().kind(), ErrorKind::NotFound);
    vaultrs::kv2::destroy_versions(&root, "secret", &key, vec![1]).await?;
    let destroyed = session.read(&key, Some(1)).await;
    assert_eq!(destroyed.unwrap_err().kind(), ErrorKind::NotFound);
    // The latest is still there.
    assert_eq!(session.read(&key, None).await?.version(), "3");

    // A static token never logs in; every request was reported.
    assert_eq!(session.logins(), 0);
    assert_eq!(counter.total(Operation::Login), 0);
    assert_eq!(counter.ok(Operation::Check), 1);
    assert_eq!(counter.ok(Operation::Read), 3);
    assert_eq!(counter.failed(Operation::Read, ErrorKind::NotFound), 4);

    // A wrong mount names the field.
    let mut wrong = config(
        ctx.env,
        VaultAuth::Token(SecretString::from(ctx.env.var("VAULT_TOKEN")?)),
    )?;
    wrong.mount = format!("{}-no-such-mount", ctx.id);
    let session = VaultSession::new(wrong, Arc::new(NoObserver))?;
    match session.read(&key, None).await {
        Err(Error::InvalidConfig { field: "path", .. }) => {}
        other => bail!("a missing mount was not InvalidConfig(path): {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn approle_session_logs_in_once_for_50_concurrent_reads() -> Result<()> {
    let ctx = TestContext::new("vault_approle_once").await?;
    let root = ctx.env.vault_client(None)?;
    let mut cleanup = Cleanup::new(ctx.env);
    let mount = ctx.env.var("SIGIL_VAULT_APPROLE_MOUNT")?;
    let role = ctx.id.clone();
    let (role_id, secret_id) = approle(&root, &mut cleanup, mount, &role, "1h", "2h").await?;
    let key = format!("{}/app", ctx.vault_prefix);
    write(&root, &key, "v1").await?;
    write(&root, &key, "v2").await?;

    let counter = Arc::new(Counter::default());
    let session = Arc::new(VaultSession::new(
        config(ctx.env, approle_auth(mount, &role_id, &secret_id))?,
        counter.clone(),
    )?);
    assert_eq!(session.logins(), 0, "logins are lazy");
    let reads = (0..50).map(|_| {
        let session = session.clone();
        let key = key.clone();
        async move { session.read(&key, None).await }
    });
    for value in futures::future::join_all(reads).await {
        let value = value?;
        assert_eq!(value.version(), "2");
        assert_eq!(json(value.bytes())["password"], "v2");
    }
    let pinned = session.read(&key, Some(1)).await?;
    assert_eq!(json(pinned.bytes())["password"], "v1");
    session.check().await?;

    assert_eq!(session.logins(), 1, "50 concurrent reads share one login");
    assert_eq!(counter.ok(Operation::Login), 1);
    assert_eq!(counter.total(Operation::Login), 1);
    assert_eq!(counter.ok(Operation::Read), 51);
    let audited =
        ctx.env
            .vault_audited_responses(&format!("auth/{mount}/login"), "role_name", &role)?;
    assert_eq!(
        audited, 1,
        "OpenBao's audit log shows one login by role {role}"
    );
    Ok(())
}

#[tokio::test]
async fn kubernetes_session_reads_with_one_login() -> Result<()> {
    let ctx = TestContext::new("vault_kubernetes_once").await?;
    let root = ctx.env.vault_client(None)?;
    let mut cleanup = Cleanup::new(ctx.env);
    let mount = ctx.env.var("SIGIL_VAULT_KUBE_MOUNT")?;
    let role = ctx.id.clone();
    vaultrs::auth::kubernetes::role::create(
        &root,
        mount,
        &role,
        Some(
            &mut CreateKubernetesRoleRequest::builder()
                .bound_service_account_names(vec!["app".to_owned()])
                .bound_service_account_namespaces(vec![ctx.namespace.clone()])
                .token_policies(vec![POLICY.to_owned()])
                .token_ttl("1h"),
        ),
    )
    .await?;
    cleanup.kube_roles.push(role.clone());
    let key = format!("{}/from-kube", ctx.vault_prefix);
    write(&root, &key, "k1").await?;
    write(&root, &key, "k2").await?;

    let counter = Arc::new(Counter::default());
    let auth = VaultAuth::Kubernetes {
        mount_path: mount.to_owned(),
        role: role.clone(),
        jwt: service_account_tokens(&ctx).await?,
    };
    let session = VaultSession::new(config(ctx.env, auth)?, counter.clone())?;
    session.check().await?;
    for _ in 0..10 {
        let latest = session.read(&key, None).await?;
        assert_eq!(json(latest.bytes())["password"], "k2");
        assert_eq!(latest.version(), "2");
    }
    let pinned = session.read(&key, Some(1)).await?;
    assert_eq!(json(pinned.bytes())["password"], "k1");
    let missing = session
        .read(&format!("{}/none", ctx.vault_prefix), None)
        .await;
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);

    assert_eq!(session.logins(), 1);
    assert_eq!(counter.ok(Operation::Login), 1);
    let path = format!("auth/{mount}/login");
    assert_eq!(ctx.env.vault_audited_responses(&path, "role", &role)?, 1);
    assert_eq!(
        ctx.env
            .vault_audited_responses(&path, "service_account_namespace", &ctx.namespace)?,
        1
    );

    // A ServiceAccount the role is not bound to is refused.
    let other = VaultAuth::Kubernetes {
        mount_path: mount.to_owned(),
        role: ctx.env.var("SIGIL_VAULT_KUBE_ROLE")?.to_owned(),
        jwt: Arc::new(|| Box::pin(async { Ok(SecretString::from("not.a.jwt")) })),
    };
    let refused = VaultSession::new(config(ctx.env, other)?, Arc::new(NoObserver))?;
    assert_eq!(
        refused.read(&key, None).await.unwrap_err().kind(),
        ErrorKind::AuthFailed
    );
    // A failing token source is an auth failure that names it, without a login request.
    let broken = VaultAuth::Kubernetes {
        mount_path: mount.to_owned(),
        role,
        jwt: Arc::new(|| Box::pin(async { Err("no ServiceAccount sigil".to_owned()) })),
    };
    let broken = VaultSession::new(config(ctx.env, broken)?, Arc::new(NoObserver))?;
    let err = broken.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthFailed);
    assert!(err.to_string().contains("no ServiceAccount sigil"), "{err}");
    assert_eq!(broken.logins(), 0);
    Ok(())
}

#[tokio::test]
async fn wrong_approle_secret_id_is_auth_failed() -> Result<()> {
    let ctx = TestContext::new("vault_approle_wrong").await?;
    let counter = Arc::new(Counter::default());
    let auth = approle_auth(
        ctx.env.var("SIGIL_VAULT_APPROLE_MOUNT")?,
        ctx.env.var("SIGIL_VAULT_APPROLE_ROLE_ID")?,
        "00000000-0000-0000-0000-000000000000",
    );
    let session = VaultSession::new(config(ctx.env, auth)?, counter.clone())?;
    let err = session
        .read(&format!("{}/x", ctx.vault_prefix), None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthFailed, "{err}");
    assert!(!err.to_string().contains("00000000-0000"), "{err}");
    assert_eq!(
        session.check().await.unwrap_err().kind(),
        ErrorKind::AuthFailed
    );
    assert_eq!(session.logins(), 2, "each call tried to log in once");
    assert_eq!(counter.failed(Operation::Login, ErrorKind::AuthFailed), 2);
    assert_eq!(counter.total(Operation::Read), 0, "no read without a token");
    Ok(())
}

#[tokio::test]
async fn short_lived_token_is_renewed_not_replaced() -> Result<()> {
    let ctx = TestContext::new("vault_renewal").await?;
    let root = ctx.env.vault_client(None)?;
    let mut cleanup = Cleanup::new(ctx.env);
    let mount = ctx.env.var("SIGIL_VAULT_APPROLE_MOUNT")?;
    let role = ctx.id.clone();
    let (role_id, secret_id) = approle(&root, &mut cleanup, mount, &role, "6s", "1h").await?;
    let key = format!("{}/renewed", ctx.vault_prefix);
    write(&root, &key, "r").await?;

    let counter = Arc::new(Counter::default());
    let session = VaultSession::new(
        config(ctx.env, approle_auth(mount, &role_id, &secret_id))?,
        counter.clone(),
    )?;
    let started = Instant::now();
    let mut reads = 0;
    while started.elapsed() < Duration::from_secs(11) {
        session.read(&key, None).await?;
        reads += 1;
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    // A 6 s token lived for 11 s of reads: renewed at 4 s and 8 s, never replaced.
    assert_eq!(session.logins(), 1);
    assert_eq!(counter.total(Operation::Login), 1);
    let renewals = counter.ok(Operation::Renew);
    assert!((2..=3).contains(&renewals), "{renewals} renewals");
    assert_eq!(
        counter.total(Operation::Renew),
        renewals,
        "no renewal failed"
    );
    assert_eq!(counter.ok(Operation::Read), reads);
    assert_eq!(
        ctx.env
            .vault_audited_responses(&format!("auth/{mount}/login"), "role_name", &role)?,
        1
    );
    let audited_renewals =
        ctx.env
            .vault_audited_responses("auth/token/renew-self", "role_name", &role)?;
    assert_eq!(audited_renewals as u64, renewals);
    Ok(())
}

#[tokio::test]
async fn revoked_token_is_replaced_by_one_login() -> Result<()> {
    let ctx = TestContext::new("vault_revoked").await?;
    let root = ctx.env.vault_client(None)?;
    let mut cleanup = Cleanup::new(ctx.env);
    // An AppRole mount of the test's own, so that revoking its logins touches no other test.
    let mount = ctx.id.clone();
    vaultrs::sys::auth::enable(&root, &mount, "approle", None).await?;
    cleanup.mounts.push(mount.clone());
    let (role_id, secret_id) = approle(&root, &mut cleanup, &mount, "app", "1h", "2h").await?;
    let key = format!("{}/revoked", ctx.vault_prefix);
    write(&root, &key, "x").await?;

    let counter = Arc::new(Counter::default());
    let session = VaultSession::new(
        config(ctx.env, approle_auth(&mount, &role_id, &secret_id))?,
        counter.clone(),
    )?;
    session.read(&key, None).await?;
    assert_eq!(session.logins(), 1);

    let out = std::process::Command::new(ctx.env.var("SIGIL_BAO")?)
        .args(["lease", "revoke", "-prefix", &format!("auth/{mount}/login")])
        .env("BAO_ADDR", ctx.env.var("VAULT_ADDR")?)
        .env("BAO_TOKEN", ctx.env.var("VAULT_TOKEN")?)
        .output()
        .context("running bao lease revoke")?;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // The next read is refused (403), logs in again and succeeds.
    session.read(&key, None).await?;
    assert_eq!(session.logins(), 2);
    assert_eq!(counter.failed(Operation::Read, ErrorKind::AuthFailed), 1);
    assert_eq!(counter.ok(Operation::Read), 2);
    // And the new token keeps working without another login.
    session.read(&key, None).await?;
    assert_eq!(session.logins(), 2);
    Ok(())
}

#[tokio::test]
async fn unreachable_vault_is_unavailable_quickly() -> Result<()> {
    let ctx = TestContext::new("vault_unreachable").await?;
    let mut cfg = config(ctx.env, VaultAuth::Token(SecretString::from("s.whatever")))?;
    cfg.server = "http://127.0.0.1:1".to_owned();
    cfg.timeout = Duration::from_secs(2);
    let counter = Arc::new(Counter::default());
    let session = VaultSession::new(cfg.clone(), counter.clone())?;
    let started = Instant::now();
    let err = session.read("app/db", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counter.failed(Operation::Read, ErrorKind::Unavailable), 1);

    cfg.auth = approle_auth("approle", "role", "secret");
    let session = VaultSession::new(cfg, counter.clone())?;
    let started = Instant::now();
    let err = session.check().await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(counter.failed(Operation::Login, ErrorKind::Unavailable), 1);
    Ok(())
}

#[tokio::test]
async fn write_with_cas_keeps_the_previous_version_and_refuses_a_stale_one() -> Result<()> {
    let ctx = TestContext::new("vault_write_cas").await?;
    let root = ctx.env.vault_client(None)?;
    let key = format!("{}/rotated", ctx.vault_prefix);
    write(&root, &key, "one").await?;

    let counter = Arc::new(Counter::default());
    let token = SecretString::from(ctx.env.var("VAULT_TOKEN")?);
    let session = VaultSession::new(config(ctx.env, VaultAuth::Token(token))?, counter.clone())?;
    let meta = session.metadata(&key).await?;
    assert_eq!(meta.current_version, 1);
    let old = session.read(&key, None).await?;

    // A write against the version read adds the next one; the previous stays readable.
    let new = br#"{"password":"two","user":"app"}"#;
    assert_eq!(session.write(&key, new, meta.current_version).await?, 2);
    let latest = session.read(&key, None).await?;
    assert_eq!(latest.version(), "2");
    assert_eq!(
        json(latest.bytes()),
        serde_json::json!({"password": "two", "user": "app"})
    );
    assert_eq!(session.read(&key, Some(1)).await?.bytes(), old.bytes());
    // The bytes of a read are valid data for a write (a rollback).
    assert_eq!(session.write(&key, old.bytes(), 2).await?, 3);
    assert_eq!(
        json(session.read(&key, None).await?.bytes())["password"],
        "one"
    );

    // A stale check-and-set version is a conflict and writes nothing.
    let stale = session
        .write(&key, br#"{"password":"lost-update"}"#, 2)
        .await
        .unwrap_err();
    assert!(matches!(stale, Error::Conflict { .. }), "{stale:?}");
    assert!(stale.to_string().contains("nothing was written"), "{stale}");
    assert!(!stale.to_string().contains("lost-update"), "{stale}");
    assert_eq!(session.metadata(&key).await?.current_version, 3);
    let latest = session.read(&key, None).await?;
    assert_eq!(latest.version(), "3");
    assert_eq!(json(latest.bytes())["password"], "one");

    // Check-and-set 0 creates a key that does not exist, and only that.
    let fresh = format!("{}/fresh", ctx.vault_prefix);
    assert_eq!(session.write(&fresh, br#"{"k":"v"}"#, 0).await?, 1);
    let exists = session.write(&fresh, br#"{"k":"w"}"#, 0).await.unwrap_err();
    assert_eq!(exists.kind(), ErrorKind::Conflict, "{exists}");
    assert_eq!(json(session.read(&fresh, None).await?.bytes())["k"], "v");

    // Data that is not a JSON object is refused without a request, and not quoted.
    let writes = counter.total(Operation::Write);
    for bad in [
        &br#"["hunter2"]"#[..],
        br#""hunter2""#,
        br#"{"p":"hunter2""#,
    ] {
        let err = session.write(&key, bad, 3).await.unwrap_err();
        assert!(
            matches!(err, Error::InvalidConfig { field: "value", .. }),
            "{err:?}"
        );
        assert!(!format!("{err} {err:?}").contains("hunter2"), "{err}");
    }
    assert_eq!(counter.total(Operation::Write), writes);

    assert_eq!(counter.ok(Operation::Write), 3);
    assert_eq!(counter.failed(Operation::Write, ErrorKind::Conflict), 2);
    assert_eq!(counter.ok(Operation::Describe), 2);
    Ok(())
}

#[tokio::test]
async fn mark_merges_custom_metadata_and_missing_keys_are_not_found() -> Result<()> {
    let ctx = TestContext::new("vault_mark").await?;
    let root = ctx.env.vault_client(None)?;
    let key = format!("{}/marked", ctx.vault_prefix);
    write(&root, &key, "one").await?;
    vaultrs::kv2::set_metadata(
        &root,
        "secret",
        &key,
        Some(
            SetSecretMetadataRequest::builder()
                .custom_metadata(HashMap::from([("owner".to_owned(), "team-a".to_owned())])),
        ),
    )
    .await?;

    // The environment's AppRole (policy sigil-test) may read, write and patch metadata.
    let counter = Arc::new(Counter::default());
    let auth = approle_auth(
        ctx.env.var("SIGIL_VAULT_APPROLE_MOUNT")?,
        ctx.env.var("SIGIL_VAULT_APPROLE_ROLE_ID")?,
        ctx.env.var("SIGIL_VAULT_APPROLE_SECRET_ID")?,
    );
    let session = Arc::new(VaultSession::new(config(ctx.env, auth)?, counter.clone())?);
    session
        .mark(
            &key,
            &[
                (sigil_types::ROTATION_CLAIM, "pending"),
                ("sigil.dev/pending", "2"),
            ],
        )
        .await?;
    let meta = session.metadata(&key).await?;
    assert_eq!(meta.current_version, 1, "a mark adds no version");
    let entries = |pairs: &[(&str, &str)]| {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect::<std::collections::BTreeMap<_, _>>()
    };
    assert_eq!(
        meta.custom_metadata,
        entries(&[
            ("owner", "team-a"),
            (sigil_types::ROTATION_CLAIM, "pending"),
            ("sigil.dev/pending", "2"),
        ])
    );
    session
        .mark(&key, &[(sigil_types::ROTATION_CLAIM, "done")])
        .await?;
    assert_eq!(
        session.metadata(&key).await?.custom_metadata,
        entries(&[
            ("owner", "team-a"),
            (sigil_types::ROTATION_CLAIM, "done"),
            ("sigil.dev/pending", "2"),
        ])
    );

    // Concurrent marks of different entries are merged by OpenBao: none is lost.
    let marks = (0..8).map(|i| {
        let session = session.clone();
        let key = key.clone();
        async move {
            let name = format!("concurrent-{i}");
            session.mark(&key, &[(name.as_str(), "x")]).await
        }
    });
    for result in futures::future::join_all(marks).await {
        result?;
    }
    let meta = session.metadata(&key).await?;
    assert_eq!(
        meta.custom_metadata.len(),
        3 + 8,
        "{:?}",
        meta.custom_metadata
    );
    assert_eq!(meta.custom_metadata["owner"], "team-a");

    // A write through the same session is allowed too.
    assert_eq!(session.write(&key, br#"{"password":"two"}"#, 1).await?, 2);
    assert_eq!(session.metadata(&key).await?.custom_metadata.len(), 11);

    // A key that does not exist.
    let missing = format!("{}/missing", ctx.vault_prefix);
    let err = session.metadata(&missing).await.unwrap_err();
    assert!(
        matches!(err, Error::NotFound { ref key, .. } if *key == missing),
        "{err:?}"
    );
    let err = session.mark(&missing, &[("a", "b")]).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    assert_eq!(session.logins(), 1);
    assert_eq!(counter.failed(Operation::Describe, ErrorKind::NotFound), 1);
    assert_eq!(counter.failed(Operation::Write, ErrorKind::NotFound), 1);
    assert_eq!(counter.ok(Operation::Write), 2 + 8 + 1);
    Ok(())
}

//! AWS sessions on moto: reads by stage and by VersionId, batch reads of more than one
//! call's worth of keys with missing ones among them, web identity through moto's
//! STS with cached credentials, and an unreachable endpoint. Rotation's writes: an
//! idempotent `AWSPENDING` version, staging label moves from the version named, with
//! `AWSPREVIOUS` following `AWSCURRENT`, and conflicts when a label moved elsewhere.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use aws_sdk_secretsmanager::primitives::Blob;
use secrecy::SecretString;
use sigil_providers::aws::{AwsAuth, AwsConfig, AwsSession, SecretVersion};
use sigil_providers::{Error, ErrorKind, NoObserver, Operation, TokenSource};
use sigil_tests::{Env, TestContext};

use crate::common::Counter;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/sigil";

fn static_auth(env: &Env) -> Result<AwsAuth> {
    Ok(AwsAuth::Static {
        access_key_id: env.var("AWS_ACCESS_KEY_ID")?.to_owned(),
        secret_access_key: SecretString::from(env.var("AWS_SECRET_ACCESS_KEY")?),
        session_token: None,
    })
}

fn config(env: &Env, auth: AwsAuth) -> Result<AwsConfig> {
    Ok(AwsConfig {
        region: env.var("AWS_REGION")?.to_owned(),
        endpoint: Some(env.var("AWS_ENDPOINT_URL")?.to_owned()),
        auth,
        timeout: Duration::from_secs(10),
    })
}

#[tokio::test]
async fn static_keys_read_current_previous_and_by_id() -> Result<()> {
    let ctx = TestContext::new("aws_static_read").await?;
    let sm = ctx.env.secretsmanager()?;
    let name = format!("{}db", ctx.aws_prefix);
    let v1 = sm
        .create_secret()
        .name(&name)
        .secret_string(r#"{"password":"one"}"#)
        .send()
        .await?
        .version_id
        .context("a version id")?;
    let v2 = sm
        .put_secret_value()
        .secret_id(&name)
        .secret_string(r#"{"password":"two"}"#)
        .send()
        .await?
        .version_id
        .context("a version id")?;
    let binary = format!("{}blob", ctx.aws_prefix);
    sm.create_secret()
        .name(&binary)
        .secret_binary(Blob::new(vec![0u8, 159, 146, 150]))
        .send()
        .await?;

    let counter = Arc::new(Counter::default());
    let session = AwsSession::new(config(ctx.env, static_auth(ctx.env)?)?, counter.clone()).await?;
    session.check().await?;

    let current = session.read(&name, None).await?;
    assert_eq!(current.bytes(), br#"{"password":"two"}"#);
    assert_eq!(current.version(), v2);
    let previous = session.read(&name, Some("AWSPREVIOUS")).await?;
    assert_eq!(previous.bytes(), br#"{"password":"one"}"#);
    assert_eq!(previous.version(), v1);
    let by_id = session.read(&name, Some(&format!("uuid/{v1}"))).await?;
    assert_eq!(by_id.bytes(), br#"{"password":"one"}"#);
    assert_eq!(by_id.version(), v1);
    let blob = session.read(&binary, None).await?;
    assert_eq!(blob.bytes(), [0u8, 159, 146, 150]);

    let missing = session.read(&format!("{}nope", ctx.aws_prefix), None).await;
    assert!(
        matches!(missing, Err(Error::NotFound { .. })),
        "{missing:?}"
    );
    let no_stage = session.read(&name, Some("NO-SUCH-STAGE")).await;
    assert_eq!(no_stage.unwrap_err().kind(), ErrorKind::NotFound);

    assert_eq!(session.logins(), 0);
    assert_eq!(counter.ok(Operation::Check), 1);
    assert_eq!(counter.ok(Operation::Read), 4);
    assert_eq!(counter.failed(Operation::Read, ErrorKind::NotFound), 2);
    Ok(())
}

#[tokio::test]
async fn batch_read_of_45_keys_with_2_missing() -> Result<()> {
    let ctx = TestContext::new("aws_batch_read").await?;
    let sm = ctx.env.secretsmanager()?;
    let mut keys = Vec::new();
    for i in 0..45 {
        let name = format!("{}k{i:02}", ctx.aws_prefix);
        sm.create_secret()
            .name(&name)
            .secret_string(format!("value-{i}"))
            .send()
            .await?;
        keys.push(name);
    }
    // Two missing keys among them, and one key asked twice.
    keys.insert(7, format!("{}missing-a", ctx.aws_prefix));
    keys.insert(30, format!("{}missing-b", ctx.aws_prefix));
    keys.push(keys[0].clone());

    let counter = Arc::new(Counter::default());
    let session = AwsSession::new(config(ctx.env, static_auth(ctx.env)?)?, counter.clone()).await?;
    let results = session.read_batch(&keys).await;
    assert_eq!(results.len(), keys.len());
    let mut values = 0;
    for ((key, result), asked) in results.iter().zip(&keys) {
        assert_eq!(key, asked, "results come in the order asked");
        if key.contains("missing") {
            match result {
                Err(Error::NotFound { key: k, .. }) => assert_eq!(k, key),
                other => panic!("{key}: {other:?}"),
            }
        } else {
            let value = result.as_ref().map_err(|e| anyhow::anyhow!("{key}: {e}"))?;
            let i: usize = key.rsplit('k').next().unwrap().parse()?;
            assert_eq!(value.bytes(), format!("value-{i}").as_bytes(), "{key}");
            assert!(!value.version().is_empty());
            values += 1;
        }
    }
    assert_eq!(values, 46);
    // 47 distinct ids: three calls of at most 20.
    assert_eq!(counter.ok(Operation::BatchRead), 3);
    assert_eq!(counter.total(Operation::BatchRead), 3);
    Ok(())
}

#[tokio::test]
async fn web_identity_through_sts_logs_in_once() -> Result<()> {
    let ctx = TestContext::new("aws_web_identity").await?;
    let sm = ctx.env.secretsmanager()?;
    let name = format!("{}wi", ctx.aws_prefix);
    sm.create_secret()
        .name(&name)
        .secret_string("from-web-identity")
        .send()
        .await?;

    // moto accepts any JWT; count how often the session asks for one.
    let minted = Arc::new(AtomicU64::new(0));
    let token: TokenSource = {
        let minted = minted.clone();
        Arc::new(move || {
            minted.fetch_add(1, Ordering::Relaxed);
            Box::pin(async {
                Ok(SecretString::from(
                    "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6YXBwOnNpZ2lsIn0.c2ln",
                ))
            })
        })
    };
    let counter = Arc::new(Counter::default());
    let auth = AwsAuth::WebIdentity {
        role_arn: ROLE_ARN.to_owned(),
        token,
    };
    let session = AwsSession::new(config(ctx.env, auth)?, counter.clone()).await?;
    assert_eq!(session.logins(), 0, "no login before the first request");
    session.check().await?;
    for _ in 0..10 {
        let value = session.read(&name, None).await?;
        assert_eq!(value.bytes(), b"from-web-identity");
    }
    let batch = session.read_batch(std::slice::from_ref(&name)).await;
    assert_eq!(
        batch[0]
            .1
            .as_ref()
            .map_err(|e| anyhow::anyhow!("{e}"))?
            .bytes(),
        b"from-web-identity"
    );

    assert_eq!(session.logins(), 1, "credentials are cached");
    assert_eq!(minted.load(Ordering::Relaxed), 1);
    assert_eq!(counter.ok(Operation::Login), 1);
    assert_eq!(counter.ok(Operation::Read), 10);

    // A token source that fails is an auth failure naming it.
    let broken = AwsAuth::WebIdentity {
        role_arn: ROLE_ARN.to_owned(),
        token: Arc::new(|| Box::pin(async { Err("no projected token".to_owned()) })),
    };
    let broken = AwsSession::new(config(ctx.env, broken)?, Arc::new(NoObserver)).await?;
    let err = broken.read(&name, None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::AuthFailed, "{err}");
    assert!(err.to_string().contains("no projected token"), "{err}");
    Ok(())
}

#[tokio::test]
async fn unreachable_endpoint_is_unavailable_quickly() -> Result<()> {
    let ctx = TestContext::new("aws_unreachable").await?;
    let mut cfg = config(ctx.env, static_auth(ctx.env)?)?;
    cfg.endpoint = Some("http://127.0.0.1:1".to_owned());
    cfg.timeout = Duration::from_secs(2);
    let counter = Arc::new(Counter::default());
    let session = AwsSession::new(cfg.clone(), counter.clone()).await?;

    let started = Instant::now();
    let err = session.read("app/db", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    let keys = vec!["a".to_owned(), "b".to_owned()];
    for (_, result) in session.read_batch(&keys).await {
        assert_eq!(result.unwrap_err().kind(), ErrorKind::Unavailable);
    }
    assert_eq!(
        session.check().await.unwrap_err().kind(),
        ErrorKind::Unavailable
    );
    assert_eq!(counter.failed(Operation::Read, ErrorKind::Unavailable), 1);
    assert_eq!(
        counter.failed(Operation::BatchRead, ErrorKind::Unavailable),
        1
    );

    // Web identity: the STS login cannot reach its endpoint either.
    cfg.auth = AwsAuth::WebIdentity {
        role_arn: ROLE_ARN.to_owned(),
        token: Arc::new(|| Box::pin(async { Ok(SecretString::from("a.b.c")) })),
    };
    let session = AwsSession::new(cfg, counter.clone()).await?;
    let started = Instant::now();
    let err = session.read("app/db", None).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "{:?}",
        started.elapsed()
    );
    assert!(counter.failed(Operation::Login, ErrorKind::Unavailable) >= 1);
    Ok(())
}

/// The staging labels of version `id` (sorted), or `None` when it is not listed.
fn stages(versions: &[SecretVersion], id: &str) -> Option<Vec<String>> {
    Some(versions.iter().find(|v| v.id == id)?.stages.clone())
}

fn labels(names: &[&str]) -> Option<Vec<String>> {
    Some(names.iter().map(|n| (*n).to_owned()).collect())
}

#[tokio::test]
async fn put_pending_is_idempotent_and_move_stage_promotes_it() -> Result<()> {
    let ctx = TestContext::new("aws_rotation").await?;
    let sm = ctx.env.secretsmanager()?;
    let name = format!("{}rotated", ctx.aws_prefix);
    let old = sm
        .create_secret()
        .name(&name)
        .secret_string("old-password")
        .send()
        .await?
        .version_id
        .context("a version id")?;
    let counter = Arc::new(Counter::default());
    let session = AwsSession::new(config(ctx.env, static_auth(ctx.env)?)?, counter.clone()).await?;
    let versions = session.versions(&name).await?;
    assert_eq!(versions.len(), 1);
    assert_eq!(stages(&versions, &old), labels(&["AWSCURRENT"]));

    // Twice the same token and value: one new version, staged AWSPENDING only.
    let token = "5f0c3d4e-8a7b-4c1d-9e2f-a1b2c3d4e5f6";
    assert_eq!(
        session.put_pending(&name, token, b"new-password").await?,
        token
    );
    assert_eq!(
        session.put_pending(&name, token, b"new-password").await?,
        token
    );
    let versions = session.versions(&name).await?;
    assert_eq!(versions.len(), 2, "{versions:?}");
    assert_eq!(stages(&versions, token), labels(&["AWSPENDING"]));
    assert_eq!(stages(&versions, &old), labels(&["AWSCURRENT"]));
    let current = session.read(&name, None).await?;
    assert_eq!(
        (current.bytes(), current.version()),
        (&b"old-password"[..], &*old)
    );
    let pending = session.read(&name, Some("AWSPENDING")).await?;
    assert_eq!(
        (pending.bytes(), pending.version()),
        (&b"new-password"[..], token)
    );

    // A `from` that does not hold the label: a conflict, and nothing moves.
    for from in [Some(token), None] {
        let err = session
            .move_stage(&name, "AWSCURRENT", Some(token), from)
            .await
            .unwrap_err();
        match &err {
            Error::Conflict { detail, .. } => {
                assert!(detail.contains(&format!("is on version {old}")), "{detail}")
            }
            other => bail!("a wrong `from` ({from:?}) was not a conflict: {other:?}"),
        }
        assert!(err.to_string().contains("nothing was written"), "{err}");
    }
    assert_eq!(session.versions(&name).await?, versions);

    // Promote: AWSCURRENT moves to the pending version and AWSPREVIOUS to the old one.
    session
        .move_stage(&name, "AWSCURRENT", Some(token), Some(&old))
        .await?;
    let versions = session.versions(&name).await?;
    assert_eq!(
        stages(&versions, token),
        labels(&["AWSCURRENT", "AWSPENDING"])
    );
    assert_eq!(stages(&versions, &old), labels(&["AWSPREVIOUS"]));
    let current = session.read(&name, None).await?;
    assert_eq!(
        (current.bytes(), current.version()),
        (&b"new-password"[..], token)
    );
    let previous = session.read(&name, Some("AWSPREVIOUS")).await?;
    assert_eq!(
        (previous.bytes(), previous.version()),
        (&b"old-password"[..], &*old)
    );
    // The same move again (a retry after a lost answer) is done already.
    session
        .move_stage(&name, "AWSCURRENT", Some(token), Some(&old))
        .await?;
    assert_eq!(session.versions(&name).await?, versions);

    // Remove AWSPENDING from the new current version; again is done already.
    session
        .move_stage(&name, "AWSPENDING", None, Some(token))
        .await?;
    session
        .move_stage(&name, "AWSPENDING", None, Some(token))
        .await?;
    let versions = session.versions(&name).await?;
    assert_eq!(stages(&versions, token), labels(&["AWSCURRENT"]));
    assert_eq!(stages(&versions, &old), labels(&["AWSPREVIOUS"]));
    let gone = session.read(&name, Some("AWSPENDING")).await.unwrap_err();
    assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");

    // A version to move to that does not exist.
    let nowhere = session
        .move_stage(
            &name,
            "AWSPENDING",
            Some("00000000-0000-4000-8000-000000000000"),
            None,
        )
        .await
        .unwrap_err();
    assert_eq!(nowhere.kind(), ErrorKind::NotFound, "{nowhere}");

    // The token of a finished rotation: the same value changes nothing, another
    // value is a conflict.
    assert_eq!(
        session.put_pending(&name, token, b"new-password").await?,
        token
    );
    assert_eq!(session.versions(&name).await?, versions);
    let reused = session
        .put_pending(&name, token, b"other-password")
        .await
        .unwrap_err();
    assert_eq!(reused.kind(), ErrorKind::Conflict, "{reused}");
    assert!(!reused.to_string().contains("other-password"), "{reused}");
    assert_eq!(session.read(&name, None).await?.bytes(), b"new-password");

    // A secret that does not exist.
    let missing = format!("{}missing", ctx.aws_prefix);
    let err = session
        .put_pending(&missing, token, b"x")
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = session.versions(&missing).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");
    let err = session
        .move_stage(&missing, "AWSCURRENT", Some(token), Some(&old))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "{err}");

    assert_eq!(counter.ok(Operation::Write), 3);
    assert_eq!(counter.failed(Operation::Write, ErrorKind::Conflict), 1);
    assert_eq!(counter.failed(Operation::Write, ErrorKind::NotFound), 1);
    assert_eq!(counter.ok(Operation::Stage), 4);
    assert_eq!(counter.failed(Operation::Stage, ErrorKind::Conflict), 2);
    assert_eq!(counter.failed(Operation::Stage, ErrorKind::NotFound), 2);
    assert_eq!(counter.failed(Operation::Describe, ErrorKind::NotFound), 2);
    Ok(())
}

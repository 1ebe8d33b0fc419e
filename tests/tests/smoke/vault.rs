//! OpenBao: KV v2 with check-and-set, kubernetes auth with a TokenRequest token, AppRole.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::api::{Api, PostParams};
use sigil_tests::TestContext;
use vaultrs::api::kv2::requests::SetSecretRequestOptions;
use vaultrs::error::ClientError;

type Data = HashMap<String, String>;

fn data(v: &str) -> Data {
    HashMap::from([("password".to_owned(), v.to_owned())])
}

#[tokio::test]
async fn kv2_cas_and_versions() -> Result<()> {
    let ctx = TestContext::new("kv2_cas_and_versions").await?;
    let vault = ctx.env.vault_client(None)?;
    let path = format!("{}/db", ctx.vault_prefix);

    // cas=0: create only if absent.
    let v1 = vaultrs::kv2::set_with_options(
        &vault,
        "secret",
        &path,
        &data("one"),
        SetSecretRequestOptions { cas: 0 },
    )
    .await?;
    assert_eq!(v1.version, 1);
    let v2 = vaultrs::kv2::set_with_options(
        &vault,
        "secret",
        &path,
        &data("two"),
        SetSecretRequestOptions { cas: 1 },
    )
    .await?;
    assert_eq!(v2.version, 2);
    // A stale cas is refused by the server.
    match vaultrs::kv2::set_with_options(
        &vault,
        "secret",
        &path,
        &data("three"),
        SetSecretRequestOptions { cas: 1 },
    )
    .await
    {
        Err(ClientError::APIError { code: 400, errors }) => {
            assert!(
                errors.iter().any(|e| e.contains("check-and-set")),
                "{errors:?}"
            );
        }
        other => bail!("stale cas was not refused: {other:?}"),
    }

    let old: Data = vaultrs::kv2::read_version(&vault, "secret", &path, 1).await?;
    assert_eq!(old["password"], "one");
    let latest: Data = vaultrs::kv2::read(&vault, "secret", &path).await?;
    assert_eq!(latest["password"], "two");
    let meta = vaultrs::kv2::read_metadata(&vault, "secret", &path).await?;
    assert_eq!(meta.current_version, 2);
    Ok(())
}

#[tokio::test]
async fn kubernetes_auth_with_token_request() -> Result<()> {
    let ctx = TestContext::new("kubernetes_auth_with_token_request").await?;
    ctx.create_service_account("app", &[]).await?;
    let sas = Api::<ServiceAccount>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let request = TokenRequest {
        spec: TokenRequestSpec {
            // The role's audience: a token for the API server's own is refused.
            audiences: vec!["vault".to_owned()],
            expiration_seconds: Some(600),
            ..Default::default()
        },
        ..Default::default()
    };
    let minted = sas
        .create_token_request("app", &PostParams::default(), &request)
        .await?;
    let jwt = minted.status.context("TokenRequest has a status")?.token;

    let anon = ctx.env.vault_client(Some(""))?;
    let mount = ctx.env.var("SIGIL_VAULT_KUBE_MOUNT")?;
    let role = ctx.env.var("SIGIL_VAULT_KUBE_ROLE")?;
    let auth = vaultrs::auth::kubernetes::login(&anon, mount, role, &jwt).await?;
    assert!(
        auth.token_policies.contains(&"sigil-test".to_owned()),
        "{:?}",
        auth.token_policies
    );
    let meta = auth.metadata.unwrap_or_default();
    assert_eq!(meta.get("service_account_namespace"), Some(&ctx.namespace));
    assert_eq!(
        meta.get("service_account_name").map(String::as_str),
        Some("app")
    );

    // The token it returned works for the policy's paths.
    let vault = ctx.env.vault_client(Some(&auth.client_token))?;
    let path = format!("{}/from-kube", ctx.vault_prefix);
    vaultrs::kv2::set(&vault, "secret", &path, &data("k8s")).await?;
    let back: Data = vaultrs::kv2::read(&vault, "secret", &path).await?;
    assert_eq!(back["password"], "k8s");

    // A forged token is refused by the apiserver's TokenReview.
    let forged = format!("{jwt}x");
    match vaultrs::auth::kubernetes::login(&anon, mount, role, &forged).await {
        Err(ClientError::APIError { code, .. }) => {
            assert!(code == 403 || code == 400, "code {code}")
        }
        other => bail!("forged token was not refused: {other:?}"),
    }
    Ok(())
}

#[tokio::test]
async fn approle_login() -> Result<()> {
    let ctx = TestContext::new("approle_login").await?;
    let anon = ctx.env.vault_client(Some(""))?;
    let auth = vaultrs::auth::approle::login(
        &anon,
        ctx.env.var("SIGIL_VAULT_APPROLE_MOUNT")?,
        ctx.env.var("SIGIL_VAULT_APPROLE_ROLE_ID")?,
        ctx.env.var("SIGIL_VAULT_APPROLE_SECRET_ID")?,
    )
    .await?;
    assert!(auth.token_policies.contains(&"sigil-test".to_owned()));
    let vault = ctx.env.vault_client(Some(&auth.client_token))?;
    let path = format!("{}/approle", ctx.vault_prefix);
    vaultrs::kv2::set(&vault, "secret", &path, &data("ar")).await?;
    Ok(())
}

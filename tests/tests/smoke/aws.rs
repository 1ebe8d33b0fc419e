//! moto: AWS Secrets Manager versions, staging labels and client request tokens.

use anyhow::{Context, Result};
use sigil_tests::TestContext;

#[tokio::test]
async fn rotation_stages_round_trip() -> Result<()> {
    let ctx = TestContext::new("rotation_stages_round_trip").await?;
    let sm = ctx.env.secretsmanager()?;
    let name = format!("{}db", ctx.aws_prefix);

    let created = sm
        .create_secret()
        .name(&name)
        .secret_string("one")
        .send()
        .await?;
    let v1 = created
        .version_id()
        .context("create returns a version")?
        .to_owned();

    // A new version staged as AWSPENDING, idempotent by its client request token.
    let token = format!("{}-0000-0000-0000-000000000001", &ctx.id);
    let token = &token[token.len() - 36..];
    let pending = sm
        .put_secret_value()
        .secret_id(&name)
        .client_request_token(token)
        .secret_string("two")
        .version_stages("AWSPENDING")
        .send()
        .await?;
    assert_eq!(pending.version_id(), Some(token));
    let again = sm
        .put_secret_value()
        .secret_id(&name)
        .client_request_token(token)
        .secret_string("two")
        .version_stages("AWSPENDING")
        .send()
        .await?;
    assert_eq!(again.version_id(), Some(token), "same token, same version");

    let current = sm.get_secret_value().secret_id(&name).send().await?;
    assert_eq!(current.secret_string(), Some("one"));
    let staged = sm
        .get_secret_value()
        .secret_id(&name)
        .version_stage("AWSPENDING")
        .send()
        .await?;
    assert_eq!(staged.secret_string(), Some("two"));

    // Move AWSCURRENT to the pending version.
    sm.update_secret_version_stage()
        .secret_id(&name)
        .version_stage("AWSCURRENT")
        .move_to_version_id(token)
        .remove_from_version_id(&v1)
        .send()
        .await?;
    // Ask for the stage explicitly: moto 5.2.5 keeps answering a stage-less
    // GetSecretValue with the version that was current before the move.
    let current = sm
        .get_secret_value()
        .secret_id(&name)
        .version_stage("AWSCURRENT")
        .send()
        .await?;
    assert_eq!(current.secret_string(), Some("two"));
    assert_eq!(current.version_id(), Some(token));

    let described = sm.describe_secret().secret_id(&name).send().await?;
    let stages = described.version_ids_to_stages().context("stages")?;
    assert!(
        stages[token].iter().any(|s| s == "AWSCURRENT"),
        "{stages:?}"
    );
    assert!(stages[&v1].iter().any(|s| s == "AWSPREVIOUS"), "{stages:?}");
    Ok(())
}

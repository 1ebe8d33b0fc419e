//! kube-apiserver's RBAC refuses the unprivileged user.

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, ListParams};
use sigil_tests::TestContext;

#[tokio::test]
async fn unprivileged_user_is_refused() -> Result<()> {
    let ctx = TestContext::new("unprivileged_user_is_refused").await?;
    let client = ctx.env.kube_unprivileged().await?;
    let secrets = Api::<Secret>::namespaced(client, &ctx.namespace);
    match secrets.list(&ListParams::default()).await {
        Err(kube::Error::Api(status)) => {
            assert_eq!(status.code, 403, "{}", status.message);
            assert_eq!(status.reason, "Forbidden");
            assert!(
                status
                    .message
                    .contains(ctx.env.var("SIGIL_KUBE_USER_NAME")?),
                "the refusal names the user: {}",
                status.message
            );
        }
        Err(e) => bail!("expected 403 Forbidden, got {e}"),
        Ok(list) => bail!("unprivileged user listed {} secrets", list.items.len()),
    }
    // The admin is allowed the same request.
    Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default())
        .await?;
    Ok(())
}

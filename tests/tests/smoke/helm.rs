//! helm: install a chart into the test's namespace against the real apiserver.

use std::process::Command;

use anyhow::{Result, ensure};
use sigil_tests::TestContext;

fn helm(ctx: &TestContext, args: &[&str]) -> Result<String> {
    let out = Command::new(ctx.env.var("SIGIL_HELM")?)
        .args(args)
        .env("KUBECONFIG", ctx.env.kubeconfig_path())
        .env("HELM_CACHE_HOME", ctx.env.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", ctx.env.dir().join("helm/config"))
        .env("HELM_DATA_HOME", ctx.env.dir().join("helm/data"))
        .output()?;
    ensure!(
        out.status.success(),
        "helm {args:?}: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

#[tokio::test]
async fn helm_installs_a_chart() -> Result<()> {
    let ctx = TestContext::new("helm_installs_a_chart").await?;
    let version = helm(&ctx, &["version", "--short"])?;
    ensure!(version.starts_with("v3."), "helm version {version}");

    let dir = tempfile::tempdir()?;
    let chart = dir.path().join("demo");
    let chart = chart.to_str().expect("utf-8 temp path");
    helm(&ctx, &["create", chart])?;
    helm(
        &ctx,
        &["install", "demo", chart, "--namespace", &ctx.namespace],
    )?;
    let list = helm(&ctx, &["list", "--namespace", &ctx.namespace, "--short"])?;
    ensure!(list.lines().any(|l| l == "demo"), "helm list: {list}");
    helm(&ctx, &["uninstall", "demo", "--namespace", &ctx.namespace])?;
    Ok(())
}

//! kube-apiserver: namespace, Secret, CRD, custom object and a watch.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{
    Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::runtime::wait::{await_condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use sigil_tests::TestContext;

#[tokio::test]
async fn namespace_and_secret_round_trip() -> Result<()> {
    let ctx = TestContext::new("namespace_and_secret_round_trip").await?;
    let ns = Api::<Namespace>::all(ctx.kube.clone())
        .get(&ctx.namespace)
        .await?;
    assert_eq!(ns.metadata.name.as_deref(), Some(ctx.namespace.as_str()));

    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let secret = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("db".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(b"hunter2".to_vec()),
        )])),
        ..Default::default()
    };
    secrets.create(&PostParams::default(), &secret).await?;
    let got = secrets.get("db").await?;
    let data = got.data.context("secret has data")?;
    assert_eq!(data["password"].0, b"hunter2");

    let version =
        k8s_openapi::apimachinery::pkg::version::Info::clone(&ctx.kube.apiserver_version().await?);
    assert_eq!(version.major, "1");
    assert_eq!(
        version.git_version,
        ctx.env.var("SIGIL_KUBE_VERSION")?,
        "apiserver reports the pinned version"
    );
    Ok(())
}

#[tokio::test]
async fn crd_object_is_watched() -> Result<()> {
    let ctx = TestContext::new("crd_object_is_watched").await?;
    let group = ctx.api_group();
    let crd_name = format!("widgets.{group}");
    let crd: CustomResourceDefinition = serde_json::from_value(serde_json::json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": { "name": crd_name },
        "spec": {
            "group": group,
            "names": { "kind": "Widget", "plural": "widgets", "singular": "widget" },
            "scope": "Namespaced",
            "versions": [{
                "name": "v1", "served": true, "storage": true,
                "schema": { "openAPIV3Schema": {
                    "type": "object",
                    "properties": { "spec": {
                        "type": "object",
                        "properties": { "size": { "type": "integer" } }
                    }}
                }}
            }]
        }
    }))?;
    let crds = Api::<CustomResourceDefinition>::all(ctx.kube.clone());
    ctx.track_crd(&crd_name);
    crds.create(&PostParams::default(), &crd).await?;
    tokio::time::timeout(
        Duration::from_secs(30),
        await_condition(crds, &crd_name, conditions::is_crd_established()),
    )
    .await
    .context("CRD not established within 30s")??;

    let gvk = GroupVersionKind::gvk(&group, "v1", "Widget");
    let ar = ApiResource::from_gvk(&gvk);
    let widgets = Api::<DynamicObject>::namespaced_with(ctx.kube.clone(), &ctx.namespace, &ar);
    let mut events = watcher(widgets.clone(), watcher::Config::default())
        .applied_objects()
        .boxed();

    let mut obj = DynamicObject::new("w1", &ar).within(&ctx.namespace);
    obj.data = serde_json::json!({ "spec": { "size": 3 } });
    widgets.create(&PostParams::default(), &obj).await?;
    let seen = next_widget(&mut events).await?;
    assert_eq!(seen.metadata.name.as_deref(), Some("w1"));
    assert_eq!(seen.data["spec"]["size"], 3);

    let patch = serde_json::json!({ "spec": { "size": 5 } });
    widgets
        .patch("w1", &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    let seen = next_widget(&mut events).await?;
    assert_eq!(seen.data["spec"]["size"], 5, "the watch sees the update");
    Ok(())
}

async fn next_widget(
    events: &mut (impl futures::Stream<Item = Result<DynamicObject, watcher::Error>> + Unpin),
) -> Result<DynamicObject> {
    match tokio::time::timeout(Duration::from_secs(30), events.try_next()).await {
        Ok(Ok(Some(obj))) => Ok(obj),
        Ok(Ok(None)) => bail!("watch ended"),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => bail!("no watch event within 30s"),
    }
}

/// The environment installs Bitnami's SealedSecret CRD (same plural as Sigil's), so every
/// test runs as on a cluster migrating from Bitnami; each API sees only its own objects.
#[tokio::test]
async fn sigils_sealedsecrets_live_beside_bitnamis() -> Result<()> {
    let ctx = TestContext::new("beside-bitnami").await?;
    sigil_tests::install_crds(&ctx.kube).await?;
    let crds = Api::<CustomResourceDefinition>::all(ctx.kube.clone());
    let bitnami = crds
        .get("sealedsecrets.bitnami.com")
        .await
        .context("scripts/env installs Bitnami's SealedSecret CRD")?;
    let sigil = crds.get("sealedsecrets.sigil.dev").await?;
    assert_eq!(bitnami.spec.names.plural, sigil.spec.names.plural);

    let gvk = GroupVersionKind::gvk("bitnami.com", "v1alpha1", "SealedSecret");
    let resource = ApiResource::from_gvk(&gvk);
    let theirs = Api::<DynamicObject>::namespaced_with(ctx.kube.clone(), &ctx.namespace, &resource);
    let object = DynamicObject::new("db", &resource)
        .data(serde_json::json!({"spec": {"encryptedData": {"password": "AgBy3i4OJSWK"}}}));
    theirs.create(&PostParams::default(), &object).await?;
    let ours = Api::<sigil_types::SealedSecret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let listed = ours.list(&Default::default()).await?;
    assert!(listed.items.is_empty(), "Sigil's API saw Bitnami's object");
    Ok(())
}

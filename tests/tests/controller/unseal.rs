//! SealedSecret → Secret, ownership, restoration, and bad input that must never harm data.

use std::collections::BTreeMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Event, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::ResourceExt;
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams, PropagationPolicy,
};
use sigil_tests::TestContext;
use sigil_types::SealedSecret;

use crate::support::*;

async fn secret(ctx: &TestContext, name: &str) -> Option<Secret> {
    Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get_opt(name)
        .await
        .unwrap()
}

fn value(secret: &Secret, key: &str) -> Option<Vec<u8>> {
    secret.data.as_ref()?.get(key).map(|b| b.0.clone())
}

#[tokio::test]
async fn a_sealed_secret_becomes_its_secret_and_stays_so() {
    let ctx = TestContext::new("unseal").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {}\n  labels: {{app: db}}\n  annotations: {{team: payments}}\ntype: kubernetes.io/basic-auth\nstringData:\n  username: admin\n  password: hunter2\n",
        ctx.namespace
    );
    let sealed = seal_with_cluster_key(&ctx, dir.path(), &manifest);
    apply(&ctx, &sealed).await;

    let message = wait_reason(&ctx, "db", "Unsealed").await;
    assert!(message.contains("2 unsealed keys"), "{message}");
    let s = secret(&ctx, "db").await.expect("the Secret exists");
    assert_eq!(value(&s, "password").as_deref(), Some(&b"hunter2"[..]));
    assert_eq!(value(&s, "username").as_deref(), Some(&b"admin"[..]));
    assert_eq!(s.type_.as_deref(), Some("kubernetes.io/basic-auth"));
    assert_eq!(s.labels().get("app").map(String::as_str), Some("db"));
    assert_eq!(
        s.annotations().get("team").map(String::as_str),
        Some("payments")
    );
    let owner = &s.owner_references()[0];
    let api: Api<SealedSecret> = Api::namespaced(ctx.kube.clone(), &ctx.namespace);
    let obj = api.get("db").await.unwrap();
    assert_eq!(owner.uid, obj.uid().unwrap());
    assert_eq!(
        (owner.kind.as_str(), owner.controller),
        ("SealedSecret", Some(true))
    );
    let status = obj.status.unwrap();
    assert_eq!(status.observed_generation, Some(1));
    assert_eq!(status.key_ids.len(), 1, "{status:?}");
    let published = sigil_ok(
        &ctx,
        dir.path(),
        &["cert", "--controller-namespace", &ctx.namespace],
        "",
    );
    assert!(
        published.contains(&status.key_ids[0]),
        "{published} / {:?}",
        status.key_ids
    );
    events_once(&ctx, |events| {
        events.iter().any(|e| {
            e.involved_object.name.as_deref() == Some("db")
                && e.reason.as_deref() == Some("Unsealed")
        })
    })
    .await;
    // Created by the controller (a create, then server-side apply for every change).
    assert!(
        s.managed_fields()
            .iter()
            .any(|m| m.manager.as_deref() == Some("sigil-controller"))
    );

    // Edited by hand: restored.
    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let edit = serde_json::json!({"data": {"password": STANDARD.encode("tampered-by-hand")}});
    secrets
        .patch("db", &PatchParams::default(), &Patch::Merge(&edit))
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        (value(&secret(&ctx, "db").await?, "password")? == b"hunter2").then_some(())
    })
    .await;
    // Deleted by hand: recreated.
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        (value(&secret(&ctx, "db").await?, "password")? == b"hunter2").then_some(())
    })
    .await;
    // Status is not rewritten when nothing changed: once the writes of the restore have
    // landed, the object stays as it is (a controller that churned would never settle).
    eventually(Duration::from_secs(20), || async {
        let before = api.get("db").await.ok()?.resource_version();
        tokio::time::sleep(Duration::from_secs(2)).await;
        (api.get("db").await.ok()?.resource_version() == before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_secret_it_does_not_own_is_left_alone_until_it_opts_in() {
    let ctx = TestContext::new("notowned").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let existing = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("app".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(b"hand-made".to_vec()),
        )])),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &existing)
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "app", &[("token", "sealed")]),
    );
    apply(&ctx, &sealed).await;

    let message = wait_reason(&ctx, "app", "SecretNotOwned").await;
    assert!(
        message.contains(sigil_types::MANAGED_ANNOTATION),
        "{message}"
    );
    assert_eq!(
        value(&secret(&ctx, "app").await.unwrap(), "token").unwrap(),
        b"hand-made"
    );
    events_once(&ctx, |events| {
        events.iter().any(|e| {
            e.involved_object.name.as_deref() == Some("app")
                && e.reason.as_deref() == Some("SecretNotOwned")
                && e.type_.as_deref() == Some("Warning")
        })
    })
    .await;

    let opt_in =
        serde_json::json!({"metadata": {"annotations": {sigil_types::MANAGED_ANNOTATION: "true"}}});
    secrets
        .patch("app", &PatchParams::default(), &Patch::Merge(&opt_in))
        .await
        .unwrap();
    wait_reason(&ctx, "app", "Unsealed").await;
    assert_eq!(
        value(&secret(&ctx, "app").await.unwrap(), "token").unwrap(),
        b"sealed"
    );
}

/// The migration guide's hand-over: the Secret Bitnami's controller made stays in place,
/// same object and bytes, while Sigil's SealedSecret of the same name takes it over.
#[tokio::test]
async fn a_secret_bitnami_made_is_handed_over_without_a_gap() {
    let ctx = TestContext::new("handover").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let gvk = GroupVersionKind::gvk("bitnami.com", "v1alpha1", "SealedSecret");
    let kind = ApiResource::from_gvk_with_plural(&gvk, "sealedsecrets");
    let bitnamis = Api::<DynamicObject>::namespaced_with(ctx.kube.clone(), &ctx.namespace, &kind);
    let mut theirs = DynamicObject::new("app", &kind).within(&ctx.namespace);
    theirs.data = serde_json::json!({"spec": {"encryptedData": {"token": "AgBy3i4OJSWK"}}});
    let theirs = bitnamis
        .create(&PostParams::default(), &theirs)
        .await
        .unwrap();
    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let made_by_bitnami = Secret {
        metadata: kube::api::ObjectMeta {
            name: Some("app".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "bitnami.com/v1alpha1".into(),
                kind: "SealedSecret".into(),
                name: "app".into(),
                uid: theirs.uid().unwrap(),
                controller: Some(true),
                block_owner_deletion: Some(true),
            }]),
            annotations: Some(BTreeMap::from([(
                sigil_types::MANAGED_ANNOTATION.to_owned(),
                "true".to_owned(),
            )])),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "token".to_owned(),
            ByteString(b"same".to_vec()),
        )])),
        ..Default::default()
    };
    let before = secrets
        .create(&PostParams::default(), &made_by_bitnami)
        .await
        .unwrap();

    let dir = tempfile::tempdir().unwrap();
    let ours = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "app", &[("token", "same")]),
    );
    apply(&ctx, &ours).await;
    // Opting in is not enough while Bitnami's controller still controls the Secret.
    let message = wait_reason(&ctx, "app", "SecretNotOwned").await;
    assert!(
        message.contains(&format!(
            "kubectl delete sealedsecrets.bitnami.com app -n {} --cascade=orphan",
            ctx.namespace
        )),
        "{message}"
    );

    bitnamis
        .delete(
            "app",
            &DeleteParams {
                propagation_policy: Some(PropagationPolicy::Orphan),
                ..DeleteParams::default()
            },
        )
        .await
        .unwrap();
    wait_reason(&ctx, "app", "Unsealed").await;
    let after = secret(&ctx, "app").await.unwrap();
    assert_eq!(after.uid(), before.uid(), "the Secret was never recreated");
    assert_eq!(value(&after, "token").as_deref(), Some(&b"same"[..]));
    let owners: Vec<_> = after
        .owner_references()
        .iter()
        .map(|r| (r.api_version.as_str(), r.kind.as_str()))
        .collect();
    assert_eq!(owners, [("sigil.dev/v1", "SealedSecret")]);
}

#[tokio::test]
async fn bad_input_never_harms_data_nor_leaks_it() {
    const CANARY: &str = "canary-3b9f1e-do-not-leak";
    let ctx = TestContext::new("badinput").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let ns = ctx.namespace.clone();

    // A good SealedSecret first, so there is data to protect.
    let good = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ns, "db", &[("password", CANARY)]),
    );
    apply(&ctx, &good).await;
    wait_reason(&ctx, "db", "Unsealed").await;

    // The same value with its payload altered: the Secret keeps the good value.
    let mut tampered = good.clone();
    let v = tampered.spec.encrypted_data.get_mut("password").unwrap();
    *v = tamper(v);
    apply(&ctx, &tampered).await;
    let message = wait_reason(&ctx, "db", "Tampered").await;
    assert!(
        message.contains("key `password`") && message.contains("left as it was"),
        "{message}"
    );
    assert_eq!(
        value(&secret(&ctx, "db").await.unwrap(), "password").unwrap(),
        CANARY.as_bytes()
    );

    // Moved from another namespace.
    let mut moved = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml("elsewhere", "moved", &[("password", CANARY)]),
    );
    moved.metadata.namespace = Some(ns.clone());
    apply(&ctx, &moved).await;
    let message = wait_reason(&ctx, "moved", "WrongBinding").await;
    assert!(message.contains(&format!("namespace `{ns}`")), "{message}");

    // Scope widened after sealing.
    let mut widened = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ns, "widened", &[("password", CANARY)]),
    );
    widened.spec.scope = sigil_types::Scope::Cluster;
    apply(&ctx, &widened).await;
    wait_reason(&ctx, "widened", "ScopeMismatch").await;

    // Sealed to a key this cluster does not hold.
    let wrong_key = seal_with_offline_key(
        &ctx,
        dir.path(),
        "other",
        &secret_yaml(&ns, "wrongkey", &[("password", CANARY)]),
    );
    apply(&ctx, &wrong_key).await;
    wait_reason(&ctx, "wrongkey", "UnknownKey").await;

    // Valid base64 that is not a sealed value.
    let mut garbage = good.clone();
    garbage.metadata.name = Some("garbage".into());
    garbage
        .spec
        .encrypted_data
        .insert("password".into(), STANDARD.encode("just some bytes"));
    apply(&ctx, &garbage).await;
    wait_reason(&ctx, "garbage", "Malformed").await;

    // More than a Secret may hold.
    let big = "x".repeat(1024 * 1024 + 1);
    let too_large = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ns, "toolarge", &[("blob", &big)]),
    );
    apply(&ctx, &too_large).await;
    wait_reason(&ctx, "toolarge", "TooLarge").await;

    for name in ["moved", "widened", "wrongkey", "garbage", "toolarge"] {
        assert!(
            secret(&ctx, name).await.is_none(),
            "{name}: no Secret is created from bad input"
        );
        // A Warning Event for each.
        events_once(&ctx, |events| {
            events.iter().any(|e| {
                e.involved_object.name.as_deref() == Some(name)
                    && e.type_.as_deref() == Some("Warning")
            })
        })
        .await;
    }

    // The controller kept serving: a new good object is still unsealed.
    let later = seal_with_cluster_key(&ctx, dir.path(), &secret_yaml(&ns, "later", &[("k", "v")]));
    apply(&ctx, &later).await;
    wait_reason(&ctx, "later", "Unsealed").await;

    // Metrics: results by reason, durations, objects per key.
    let (_, metrics) = controller.get("/metrics").unwrap();
    for result in [
        "Unsealed",
        "Tampered",
        "WrongBinding",
        "ScopeMismatch",
        "UnknownKey",
        "Malformed",
        "TooLarge",
    ] {
        assert!(
            metrics.contains(&format!("sigil_unseal_total{{result=\"{result}\"}}")),
            "{result}:\n{metrics}"
        );
    }
    assert!(metrics.contains("sigil_reconcile_duration_seconds_count"));
    eventually(Duration::from_secs(20), || async {
        controller
            .get("/metrics")?
            .1
            .contains("sigil_sealedsecrets_by_key{key_id=")
            .then_some(())
    })
    .await;

    // Nothing the controller emitted holds the plaintext, in any encoding.
    let encoded = STANDARD.encode(CANARY);
    let statuses = serde_json::to_string(
        &Api::<SealedSecret>::namespaced(ctx.kube.clone(), &ns)
            .list(&ListParams::default())
            .await
            .unwrap()
            .items
            .iter()
            .map(|o| &o.status)
            .collect::<Vec<_>>(),
    )
    .unwrap();
    let notes: Vec<String> = Api::<Event>::namespaced(ctx.kube.clone(), &ns)
        .list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .filter_map(|e| e.message)
        .collect();
    let (_, metrics) = controller.get("/metrics").unwrap();
    let logs = controller.logs();
    assert!(logs.contains("Tampered"), "the log is captured");
    for (what, text) in [
        ("logs", logs),
        ("events", notes.join("\n")),
        ("status", statuses),
        ("metrics", metrics),
    ] {
        assert!(
            !text.contains(CANARY) && !text.contains(&encoded),
            "the canary leaked into {what}"
        );
    }
}

/// SealedSecrets that exist when the controller starts are found whichever way its
/// watches start: a streaming list (API servers from 1.32 on) or paginated lists (older
/// ones, or `--streaming-lists=false` where the `WatchList` gate is off).
#[tokio::test]
async fn existing_sealed_secrets_are_found_by_streaming_and_by_paginated_lists() {
    let ctx = TestContext::new("initial-list").await.unwrap();
    install_crds(&ctx.kube).await;
    let dir = tempfile::tempdir().unwrap();
    // A first start makes the cluster key to seal to.
    Controller::start(&ctx, "a", &[]).wait_ready().await;
    for (name, flags, way) in [
        ("streamed", &[][..], "Streaming"),
        ("paged", &["--streaming-lists=false"][..], "Paginated"),
    ] {
        let manifest = format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {}\nstringData:\n  password: hunter2\n",
            ctx.namespace
        );
        apply(&ctx, &seal_with_cluster_key(&ctx, dir.path(), &manifest)).await;
        let controller = Controller::start(&ctx, "a", flags);
        wait_reason(&ctx, name, "Unsealed").await;
        let s = secret(&ctx, name).await.expect("the Secret exists");
        assert_eq!(value(&s, "password").as_deref(), Some(&b"hunter2"[..]));
        assert!(controller.logs().contains(way), "{}", controller.logs());
    }
}

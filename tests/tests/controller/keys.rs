//! The sealing-key lifecycle: made on first start, picked up at run time, revoked,
//! renewed, published, backed up and imported.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, ListParams, Patch, PatchParams};
use sigil_tests::TestContext;
use sigil_types::keys::{KEY_LABEL, PUBLIC_KEYS_CONFIGMAP, PUBLIC_KEYS_DATA};

use crate::support::*;

async fn key_secrets(ctx: &TestContext) -> Vec<Secret> {
    Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .list(&ListParams::default().labels(KEY_LABEL))
        .await
        .unwrap()
        .items
}

async fn published(ctx: &TestContext) -> String {
    let cm = Api::<ConfigMap>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get(PUBLIC_KEYS_CONFIGMAP)
        .await
        .unwrap();
    cm.data.unwrap().remove(PUBLIC_KEYS_DATA).unwrap()
}

fn key_id_of_line(line: &str) -> String {
    line.split(' ').nth(1).unwrap().to_owned()
}

#[tokio::test]
async fn keys_are_made_published_and_picked_up_without_a_restart() {
    let ctx = TestContext::new("keys").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let ns = ctx.namespace.clone();

    // First start: one key, stored as a Secret and published.
    let keys = key_secrets(&ctx).await;
    assert_eq!(keys.len(), 1);
    let first = published(&ctx).await;
    assert!(keys[0].name_any().ends_with(&key_id_of_line(&first)));
    let cert = sigil_ok(
        &ctx,
        dir.path(),
        &["cert", "--controller-namespace", &ns, "-w", "cluster.pub"],
        "",
    );
    assert!(cert.is_empty());
    assert_eq!(
        std::fs::read_to_string(dir.path().join("cluster.pub")).unwrap(),
        first
    );

    // Sealed to an offline key the cluster does not have yet.
    let sealed = seal_with_offline_key(
        &ctx,
        dir.path(),
        "dr",
        &secret_yaml(&ns, "dr", &[("k", "v")]),
    );
    apply(&ctx, &sealed).await;
    wait_reason(&ctx, "dr", "UnknownKey").await;

    // Imported at run time: picked up, and the waiting SealedSecret opens.
    let out = import_key(&ctx, dir.path(), "dr.key");
    assert!(out.contains("imported 1 keys"), "{out}");
    wait_reason(&ctx, "dr", "Unsealed").await;
    let again = import_key(&ctx, dir.path(), "dr.key");
    assert!(
        again.contains("imported 0 keys") && again.contains("1 already there"),
        "{again}"
    );

    // Backup holds both keys, in a private file.
    sigil_ok(
        &ctx,
        dir.path(),
        &[
            "keys",
            "backup",
            "--controller-namespace",
            &ns,
            "-w",
            "backup.key",
        ],
        "",
    );
    let backup_path = dir.path().join("backup.key");
    assert_eq!(
        std::fs::metadata(&backup_path)
            .unwrap()
            .permissions()
            .mode()
            & 0o777,
        0o600
    );
    let backup = std::fs::read_to_string(&backup_path).unwrap();
    assert_eq!(
        backup
            .lines()
            .filter(|l| l.starts_with("sigil.key.v1 "))
            .count(),
        2
    );
    let opened = sigil_ok(
        &ctx,
        dir.path(),
        &["unseal", "--recovery-key", "backup.key"],
        &serde_json::to_string(&sealed).unwrap(),
    );
    assert!(opened.contains("k: dg=="), "{opened}");

    // Revoked: no longer opens, the Secret is kept, the key leaves the ConfigMap.
    let dr_id = key_id_of_line(
        std::fs::read_to_string(dir.path().join("dr.pub"))
            .unwrap()
            .trim(),
    );
    let revoke = serde_json::json!({"metadata": {"labels": {sigil_types::REVOKED_LABEL: "true"}}});
    Api::<Secret>::namespaced(ctx.kube.clone(), &ns)
        .patch(
            &format!("sigil-sealing-key-{dr_id}"),
            &PatchParams::default(),
            &Patch::Merge(&revoke),
        )
        .await
        .unwrap();
    let message = wait_reason(&ctx, "dr", "RevokedKey").await;
    assert!(message.contains(&dr_id), "{message}");
    assert!(
        Api::<Secret>::namespaced(ctx.kube.clone(), &ns)
            .get("dr")
            .await
            .is_ok()
    );
    eventually(Duration::from_secs(10), || async {
        (!published(&ctx).await.contains(&dr_id)).then_some(())
    })
    .await;
    let backup_after = sigil_ok(
        &ctx,
        dir.path(),
        &[
            "keys",
            "backup",
            "--controller-namespace",
            &ns,
            "-w",
            "backup2.key",
        ],
        "",
    );
    assert!(backup_after.is_empty());
    assert!(
        std::fs::read_to_string(dir.path().join("backup2.key"))
            .unwrap()
            .contains("# revoked: sigil.key.v1")
    );
    drop(controller);
}

#[tokio::test]
async fn keys_are_renewed_and_old_keys_still_open() {
    let ctx = TestContext::new("renew").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &["--key-renewal-period", "4s"]);
    controller.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let first = key_id_of_line(&published(&ctx).await);
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "old", &[("k", "v")]),
    );
    apply(&ctx, &sealed).await;
    wait_reason(&ctx, "old", "Unsealed").await;

    let renewed = eventually(Duration::from_secs(90), || async {
        let text = published(&ctx).await;
        let active = key_id_of_line(&text);
        (active != first && text.contains(&first)).then_some(text)
    })
    .await;
    assert!(key_secrets(&ctx).await.len() >= 2);
    assert!(
        renewed.lines().nth(1).is_some(),
        "older usable keys stay listed after the active one"
    );
    // The object sealed to the first key is still synced.
    let (status, reason, _) = synced_condition(&ctx, "old").await.unwrap();
    assert_eq!((status.as_str(), reason.as_str()), ("True", "Unsealed"));
}

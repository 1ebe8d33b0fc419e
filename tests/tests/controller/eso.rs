//! The ESO features teams moving over rely on, on the real servers: `dataFrom.find` on
//! OpenBao and moto, `rewrite` with conversion and decoding, `refreshPolicy` (with the
//! ESO#5499 and ESO#6640 cases), and templates v2 with `templateFrom`. Each test has its
//! own controller, namespace and remote prefix.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::{Value, json};
use sigil_tests::TestContext;
use sigil_types::ExternalSecret;

use crate::rotation::{finished, ready_reason, rotation};
use crate::support::*;
use crate::sync::{
    aws_store, es_ready, external, secret_data, vault_put, vault_token_store, wait_data, wait_es,
};

/// Sets `custom_metadata` on a KV v2 key (the tags a Vault `find` matches).
async fn vault_tags(ctx: &TestContext, key: &str, tags: Value) {
    let url = format!(
        "{}/v1/secret/metadata/{}/{key}",
        ctx.env.var("VAULT_ADDR").unwrap(),
        ctx.vault_prefix
    );
    let answer = reqwest::Client::new()
        .post(url)
        .header("X-Vault-Token", ctx.env.var("VAULT_TOKEN").unwrap())
        .json(&json!({"custom_metadata": tags}))
        .send()
        .await
        .unwrap();
    assert!(answer.status().is_success(), "{}", answer.status());
}

/// Creates an AWS secret with tags.
async fn aws_tagged(ctx: &TestContext, name: &str, value: &str, tags: &[(&str, &str)]) {
    let sm = ctx.env.secretsmanager().unwrap();
    let mut create = sm
        .create_secret()
        .name(format!("{}{name}", ctx.aws_prefix))
        .secret_string(value);
    for (k, v) in tags {
        create = create.tags(
            aws_sdk_secretsmanager::types::Tag::builder()
                .key(*k)
                .value(*v)
                .build(),
        );
    }
    create.send().await.unwrap();
}

fn map(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect()
}

/// Waits until ExternalSecret `name` is not Ready for `reason`; returns the message.
async fn refused(ctx: &TestContext, name: &str, reason: &str) -> String {
    eventually(Duration::from_secs(40), || async {
        let (status, r, message) = es_ready(ctx, name).await?;
        (status == "False" && r == reason).then_some(message)
    })
    .await
}

#[tokio::test]
async fn a_vault_find_copies_the_keys_whose_name_and_tags_both_match() {
    let ctx = TestContext::new("eso-find-vault").await.unwrap();
    install_crds(&ctx.kube).await;
    for (key, value, team) in [
        ("app/db", json!({"password": "p1"}), "a"),
        ("app/api", json!({"token": "t1"}), "a"),
        ("app/old", json!({"x": "1"}), "b"),
        ("other/db", json!({"y": "2"}), "a"),
    ] {
        vault_put(&ctx, key, value).await;
        vault_tags(&ctx, key, json!({"team": team})).await;
    }
    vault_token_store(&ctx, "vault").await;
    let _controller = Controller::start(&ctx, "a", &["--max-keys-per-find", "2"]);
    let path = format!("{}/app", ctx.vault_prefix);
    external(
        &ctx,
        "found",
        json!({"secretStoreRef": {"name": "vault"}, "refreshInterval": "1h",
               "dataFrom": [{"find": {"path": path, "name": {"regexp": "(db|api|old)$"}, "tags": {"team": "a"}},
                             "rewrite": [{"regexp": {"source": "^.*/app/(.*)$", "target": "app-$1"}}]}]}),
    )
    .await;
    // `old` matches the name, not the tag: ESO v0.20 would let the name win.
    wait_data(
        &ctx,
        "found",
        &map(&[
            ("app-api", r#"{"token":"t1"}"#),
            ("app-db", r#"{"password":"p1"}"#),
        ]),
    )
    .await;
    let es = Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("found")
        .await
        .unwrap();
    let synced = &es.status.unwrap().synced_versions;
    assert!(synced.contains_key(&format!("{path}/db")), "{synced:?}");

    // Without a rewrite, the keys are converted: `/` becomes `_`.
    external(
        &ctx,
        "converted",
        json!({"secretStoreRef": {"name": "vault"},
               "dataFrom": [{"find": {"path": path, "tags": {"team": "a"}}}]}),
    )
    .await;
    let prefix = path.replace('/', "_");
    wait_data(
        &ctx,
        "converted",
        &map(&[
            (&format!("{prefix}_api"), r#"{"token":"t1"}"#),
            (&format!("{prefix}_db"), r#"{"password":"p1"}"#),
        ]),
    )
    .await;

    // Two keys renamed to one: refused naming both, nothing written.
    external(
        &ctx,
        "collide",
        json!({"secretStoreRef": {"name": "vault"},
               "dataFrom": [{"find": {"path": path, "tags": {"team": "a"}},
                             "rewrite": [{"transform": {"template": "{{ \"same\" }}"}}]}]}),
    )
    .await;
    let message = refused(&ctx, "collide", "InvalidSpec").await;
    assert!(
        message.contains(&format!(
            "`{path}/api` and `{path}/db` both become Secret key `same`"
        )),
        "{message}"
    );
    assert!(secret_data(&ctx, "collide").await.is_none());

    // Over --max-keys-per-find: a clear status, nothing written.
    external(
        &ctx,
        "too-many",
        json!({"secretStoreRef": {"name": "vault"},
               "dataFrom": [{"find": {"path": path}}]}),
    )
    .await;
    let message = refused(&ctx, "too-many", "InvalidSpec").await;
    assert!(
        message.contains("matches more than 2 remote keys")
            && message.contains("--max-keys-per-find"),
        "{message}"
    );
}

#[tokio::test]
async fn an_aws_find_by_tags_feeds_a_mirror_that_a_rotation_refreshes() {
    let ctx = TestContext::new("eso-find-aws").await.unwrap();
    install_crds(&ctx.kube).await;
    aws_tagged(
        &ctx,
        "pay/a1",
        r#"{"password":"one"}"#,
        &[("env", "prod"), ("team", "pay")],
    )
    .await;
    aws_tagged(
        &ctx,
        "pay/a2",
        r#"{"password":"two"}"#,
        &[("env", "prod"), ("team", "ops")],
    )
    .await;
    aws_tagged(
        &ctx,
        "pay/b1",
        r#"{"password":"three"}"#,
        &[("env", "dev"), ("team", "pay")],
    )
    .await;
    aws_store(&ctx, "aws", ctx.env.var("AWS_ENDPOINT_URL").unwrap()).await;
    let _controller = Controller::start(&ctx, "a", &[]);
    // Both tags must match exactly: `prod` and `pay` (AWS's own filters match keys and
    // values apart).
    external(
        &ctx,
        "found",
        json!({"secretStoreRef": {"name": "aws"}, "refreshInterval": "1h",
               "dataFrom": [{"find": {"path": ctx.aws_prefix, "tags": {"env": "prod", "team": "pay"}},
                             "rewrite": [{"regexp": {"source": "^.*/", "target": ""}}]}]}),
    )
    .await;
    wait_data(&ctx, "found", &map(&[("a1", r#"{"password":"one"}"#)])).await;

    // A Rotation through another ExternalSecret of that key refreshes this mirror too.
    let key = format!("{}pay/a1", ctx.aws_prefix);
    external(
        &ctx,
        "direct",
        json!({"secretStoreRef": {"name": "aws"}, "refreshInterval": "1h",
               "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}]}),
    )
    .await;
    wait_es(&ctx, "direct", "SecretSynced").await;
    rotation(
        &ctx,
        "r1",
        json!({"externalSecretRef": {"name": "direct"}, "restart": false,
               "generate": {"length": 20, "symbols": false}}),
    )
    .await;
    let done = finished(&ctx, "r1").await;
    let status = done.status.clone().unwrap();
    assert!(
        status
            .external_secrets
            .contains(&format!("{}/found", ctx.namespace)),
        "{:?} {:?}",
        status.external_secrets,
        ready_reason(&done)
    );
    let new = secret_data(&ctx, "direct").await.unwrap()["password"].clone();
    assert_eq!(new.len(), 20);
    assert_eq!(
        secret_data(&ctx, "found").await.unwrap()["a1"],
        format!(r#"{{"password":"{new}"}}"#)
    );
}

#[tokio::test]
async fn refresh_policies_read_when_asked_and_created_once_never_overwrites() {
    let ctx = TestContext::new("eso-policy").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(&ctx, "db", json!({"password": "v1"})).await;
    vault_token_store(&ctx, "vault").await;
    let _controller = Controller::start(&ctx, "a", &[]);
    let key = format!("{}/db", ctx.vault_prefix);
    let spec = |policy: &str, name: &str| {
        json!({"secretStoreRef": {"name": "vault"}, "refreshInterval": "1s", "refreshPolicy": policy,
               "target": {"name": name, "creationPolicy": "Orphan"},
               "data": [{"secretKey": "password", "remoteRef": {"key": key, "property": "password"}}]})
    };
    for (policy, name) in [
        ("Periodic", "periodic"),
        ("OnChange", "on-change"),
        ("CreatedOnce", "once"),
    ] {
        external(&ctx, name, spec(policy, name)).await;
        wait_data(&ctx, name, &map(&[("password", "v1")])).await;
    }
    vault_put(&ctx, "db", json!({"password": "v2"})).await;
    wait_data(&ctx, "periodic", &map(&[("password", "v2")])).await;
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        secret_data(&ctx, "on-change").await.unwrap()["password"],
        "v1"
    );
    assert_eq!(secret_data(&ctx, "once").await.unwrap()["password"], "v1");

    // OnChange reads on force-sync; CreatedOnce does not (ESO#5499: a hand edit made it
    // read again).
    let annotate = json!({"metadata": {"annotations": {"sigil.dev/force-sync": "1"}}});
    for name in ["on-change", "once"] {
        Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .patch(name, &PatchParams::default(), &Patch::Merge(&annotate))
            .await
            .unwrap();
    }
    wait_data(&ctx, "on-change", &map(&[("password", "v2")])).await;
    let secrets = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    secrets
        .patch(
            "once",
            &PatchParams::default(),
            &Patch::Merge(&json!({"stringData": {"password": "edited"}})),
        )
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(3)).await;
    assert_eq!(
        secret_data(&ctx, "once").await.unwrap()["password"],
        "edited",
        "a CreatedOnce Secret's hand edit stays"
    );

    // ESO#6640: deleted and applied again, a CreatedOnce ExternalSecret adopts the Secret
    // it finds as it is.
    let externals = Api::<ExternalSecret>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let first_uid = externals.get("once").await.unwrap().uid().unwrap();
    externals
        .delete("once", &DeleteParams::default())
        .await
        .unwrap();
    eventually(Duration::from_secs(20), || async {
        externals
            .get_opt("once")
            .await
            .unwrap()
            .is_none()
            .then_some(())
    })
    .await;
    vault_put(&ctx, "db", json!({"password": "v3"})).await;
    external(&ctx, "once", spec("CreatedOnce", "once")).await;
    let message = wait_es(&ctx, "once", "SecretSynced").await;
    assert!(message.contains("took it over as it is"), "{message}");
    let secret = secrets.get("once").await.unwrap();
    assert_eq!(
        secret_data(&ctx, "once").await.unwrap()["password"],
        "edited"
    );
    let owner = secret
        .annotations()
        .get(sigil_types::OWNED_BY_ANNOTATION)
        .cloned();
    assert_ne!(owner, Some(first_uid));
    assert_eq!(owner, externals.get("once").await.unwrap().uid());

    // A Rotation refreshes every mirror, CreatedOnce ones included.
    rotation(
        &ctx,
        "r1",
        json!({"externalSecretRef": {"name": "periodic"}, "restart": false}),
    )
    .await;
    let done = finished(&ctx, "r1").await;
    assert!(
        done.status.as_ref().unwrap().phase == Some(sigil_types::RotationPhase::Completed),
        "{:?}",
        ready_reason(&done)
    );
    let rotated = secret_data(&ctx, "periodic").await.unwrap()["password"].clone();
    assert_ne!(rotated, "v3");
    assert_eq!(
        secret_data(&ctx, "once").await.unwrap()["password"],
        rotated
    );
}

#[tokio::test]
async fn templates_v2_render_functions_template_from_and_merge() {
    let ctx = TestContext::new("eso-template").await.unwrap();
    install_crds(&ctx.kube).await;
    vault_put(
        &ctx,
        "app",
        json!({"user": "app", "token": "c2VjcmV0", "config": "{\"level\":\"debug\"}"}),
    )
    .await;
    vault_token_store(&ctx, "vault").await;
    let config_map: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "tpl", "namespace": ctx.namespace},
        "data": {"app.properties": "user={{ .user }}\ntoken={{ .token | b64dec }}\n",
                 "pairs": "shout: {{ .user | upper }}\nlevel: {{ (.config | fromJson).level }}\n"}
    }))
    .unwrap();
    Api::<ConfigMap>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .create(&PostParams::default(), &config_map)
        .await
        .unwrap();
    let _controller = Controller::start(&ctx, "a", &[]);
    let key = format!("{}/app", ctx.vault_prefix);
    external(
        &ctx,
        "rendered",
        json!({"secretStoreRef": {"name": "vault"},
               "target": {"template": {"engineVersion": "v2", "mergePolicy": "Merge",
                   "data": {"url": "{{ printf \"https://%s@api\" .user }}",
                            "json": "{{ dict \"u\" .user | toJson }}",
                            "indented": "a:{{ .user | nindent 2 }}"},
                   "templateFrom": [
                       {"configMap": {"name": "tpl", "items": [{"key": "app.properties"},
                                                               {"key": "pairs", "templateAs": "KeysAndValues"}]}},
                       {"target": "Labels", "literal": "owner: {{ .user }}"}]}},
               "dataFrom": [{"extract": {"key": key}}]}),
    )
    .await;
    wait_data(
        &ctx,
        "rendered",
        &map(&[
            ("app.properties", "user=app\ntoken=secret\n"),
            ("config", "{\"level\":\"debug\"}"),
            ("indented", "a:\n  app"),
            ("json", r#"{"u":"app"}"#),
            ("level", "debug"),
            ("shout", "APP"),
            ("token", "c2VjcmV0"),
            ("url", "https://app@api"),
            ("user", "app"),
        ]),
    )
    .await;
    let secret = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get("rendered")
        .await
        .unwrap();
    assert_eq!(
        secret.labels().get("owner").map(String::as_str),
        Some("app")
    );

    // Decoding on a data entry; an unknown function is named.
    external(
        &ctx,
        "decoded",
        json!({"secretStoreRef": {"name": "vault"},
               "data": [{"secretKey": "token", "remoteRef": {"key": key, "property": "token", "decodingStrategy": "Base64"}}]}),
    )
    .await;
    wait_data(&ctx, "decoded", &map(&[("token", "secret")])).await;
    external(
        &ctx,
        "unknown",
        json!({"secretStoreRef": {"name": "vault"},
               "target": {"template": {"data": {"x": "{{ .user | sha1sum }}"}}},
               "dataFrom": [{"extract": {"key": key}}]}),
    )
    .await;
    let message = refused(&ctx, "unknown", "InvalidSpec").await;
    assert!(message.contains("function `sha1sum`"), "{message}");
    assert!(!message.contains("c2VjcmV0"), "{message}");
}

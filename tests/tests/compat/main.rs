//! Moving from External Secrets Operator: ESO `external-secrets.io/v1` manifests, with
//! only `apiVersion` changed to `sigil.dev/v1`, are accepted by Sigil's CRDs on the real
//! kube-apiserver (server-side apply, dry run, strict field validation) and mean the
//! same in Sigil's Rust types; what Sigil does not support is refused with a message
//! that says how to fix it.
//!
//! The manifests are `shared/testdata/eso-compat/*.yaml`, written as ESO users write
//! them, and this repository's `tests/compat/*.yaml`, which use the features ESO's
//! documentation shows (`find`, `rewrite`, `refreshPolicy`, templates v2,
//! `ClusterExternalSecret`). Nothing is stored: every request is a dry run.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams, ValidationDirective};
use serde_json::{Value, json};
use sigil_tests::{TestContext, install_crds, repo_root};
use sigil_types::external::parse_go_duration;
use sigil_types::{
    AwsService, CaProviderType, ClusterSecretStore, CreationPolicy, DeletionPolicy, ExternalSecret,
    ProviderRef, SecretStore, StoreKind, VaultAuthMethod, VaultKvVersion,
};
use sigil_types::{
    ClusterExternalSecret, ConversionStrategy, DecodingStrategy, RefreshPolicy,
    TemplateMergePolicy, TemplateScope, TemplateTarget,
};

/// Field manager of the dry runs.
const MANAGER: &str = "sigil-compat-test";
/// The namespace the ESO manifests are written for.
const ESO_NAMESPACE: &str = "team-a";

/// Where the ESO manifests live.
fn testdata() -> [PathBuf; 2] {
    [
        repo_root().join("../shared/testdata/eso-compat"),
        repo_root().join("tests/compat"),
    ]
}

/// Every YAML document of every file in the testdata, in file order: (file, document).
fn eso_documents() -> Result<Vec<(String, Value)>> {
    let mut files: Vec<PathBuf> = Vec::new();
    for dir in testdata() {
        let mut here: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .map(|entry| entry.map(|e| e.path()))
            .collect::<Result<_, _>>()?;
        here.retain(|p| p.extension().is_some_and(|e| e == "yaml" || e == "yml"));
        here.sort();
        ensure!(!here.is_empty(), "no YAML files in {}", dir.display());
        files.extend(here);
    }
    let mut docs = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        let name = file
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        let parsed: Vec<Value> = serde_saphyr::from_multiple(&text)
            .with_context(|| format!("parsing {}", file.display()))?;
        docs.extend(
            parsed
                .into_iter()
                .filter(|d| !d.is_null())
                .map(|d| (name.clone(), d)),
        );
    }
    Ok(docs)
}

/// The one change a user makes (`apiVersion`), and the test's own namespace for `team-a`.
fn to_sigil(mut doc: Value, namespace: &str) -> Value {
    doc["apiVersion"] = json!(sigil_types::API_VERSION);
    if doc["metadata"]["namespace"] == ESO_NAMESPACE {
        doc["metadata"]["namespace"] = json!(namespace);
    }
    doc
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

/// Server-side apply of `doc` with `dryRun=All` and `fieldValidation=Strict`: an unknown
/// field is an error, not silently dropped. Returns the object the apiserver would store.
async fn dry_run(ctx: &TestContext, doc: &Value) -> Result<Value, kube::Error> {
    let (resource, namespaced) = match kind(doc) {
        "SecretStore" => (ApiResource::erase::<SecretStore>(&()), true),
        "ClusterSecretStore" => (ApiResource::erase::<ClusterSecretStore>(&()), false),
        "ExternalSecret" => (ApiResource::erase::<ExternalSecret>(&()), true),
        "ClusterExternalSecret" => (ApiResource::erase::<ClusterExternalSecret>(&()), false),
        other => panic!("the testdata holds a kind this test does not know: {other}"),
    };
    let api: Api<DynamicObject> = if namespaced {
        let ns = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&ctx.namespace);
        Api::namespaced_with(ctx.kube.clone(), ns, &resource)
    } else {
        Api::all_with(ctx.kube.clone(), &resource)
    };
    let params = PatchParams {
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::apply(MANAGER).dry_run()
    };
    let applied = api.patch(name(doc), &params, &Patch::Apply(doc)).await?;
    Ok(serde_json::to_value(applied).expect("an object serializes"))
}

/// Asserts that the apiserver refuses `doc` as invalid, with a message containing `hint`.
async fn assert_refused(ctx: &TestContext, what: &str, doc: &Value, hint: &str) -> Result<()> {
    match dry_run(ctx, doc).await {
        Ok(_) => bail!("{what}: accepted, but should have been refused"),
        Err(kube::Error::Api(status)) => {
            ensure!(
                status.code == 422 && status.message.contains(hint),
                "{what}: expected 422 with a message containing {hint:?}, got {} {:?}",
                status.code,
                status.message
            );
            Ok(())
        }
        Err(e) => bail!("{what}: {e:#}"),
    }
}

/// The ESO manifests, as Sigil objects in the test's namespace, by kind and name.
async fn setup(test: &str) -> Result<(TestContext, BTreeMap<(String, String), Value>)> {
    let ctx = TestContext::new(test).await?;
    install_crds(&ctx.kube).await?;
    let mut docs = BTreeMap::new();
    for (file, doc) in eso_documents()? {
        ensure!(
            doc["apiVersion"] == "external-secrets.io/v1",
            "{file}: {} {} is not an ESO v1 manifest",
            kind(&doc),
            name(&doc)
        );
        let doc = to_sigil(doc, &ctx.namespace);
        let key = (kind(&doc).to_owned(), name(&doc).to_owned());
        ensure!(
            docs.insert(key.clone(), doc).is_none(),
            "{file}: {key:?} appears twice"
        );
    }
    Ok((ctx, docs))
}

fn doc<'a>(docs: &'a BTreeMap<(String, String), Value>, kind: &str, name: &str) -> &'a Value {
    docs.get(&(kind.to_owned(), name.to_owned()))
        .unwrap_or_else(|| panic!("the testdata has no {kind} {name}"))
}

#[tokio::test]
async fn eso_manifests_are_accepted_unchanged() -> Result<()> {
    let (ctx, docs) = setup("eso_manifests_are_accepted_unchanged").await?;
    for ((kind, name), doc) in &docs {
        let applied = dry_run(&ctx, doc)
            .await
            .with_context(|| format!("{kind} {name} was refused"))?;
        // Nothing added (no schema defaults: they would be GitOps diffs) or dropped.
        ensure!(
            applied["spec"] == doc["spec"],
            "{kind} {name}: the apiserver would store\n{}\ninstead of\n{}",
            applied["spec"],
            doc["spec"]
        );
    }
    Ok(())
}

#[tokio::test]
async fn eso_manifests_mean_the_same_in_sigil() -> Result<()> {
    let (_ctx, docs) = setup("eso_manifests_mean_the_same_in_sigil").await?;
    let expected: Vec<(&str, &str)> = vec![
        ("ClusterExternalSecret", "shared-db"),
        ("ClusterSecretStore", "aws-irsa"),
        ("ClusterSecretStore", "vault-approle"),
        ("ExternalSecret", "app-config"),
        ("ExternalSecret", "bootstrap"),
        ("ExternalSecret", "database-credentials"),
        ("ExternalSecret", "find-by-name"),
        ("ExternalSecret", "find-by-tags"),
        ("ExternalSecret", "on-change"),
        ("ExternalSecret", "tls-once"),
        ("SecretStore", "aws-static"),
        ("SecretStore", "vault-kubernetes"),
        ("SecretStore", "vault-token"),
    ];
    let found: Vec<(&str, &str)> = docs.keys().map(|(k, n)| (k.as_str(), n.as_str())).collect();
    assert_eq!(
        found, expected,
        "the testdata changed: say here what each new document means"
    );
    let store = |name: &str| -> SecretStore {
        serde_json::from_value(doc(&docs, "SecretStore", name).clone()).unwrap()
    };
    let cluster_store = |name: &str| -> ClusterSecretStore {
        serde_json::from_value(doc(&docs, "ClusterSecretStore", name).clone()).unwrap()
    };
    let external = |name: &str| -> ExternalSecret {
        serde_json::from_value(doc(&docs, "ExternalSecret", name).clone()).unwrap()
    };

    // Vault, token from a Secret, KV v2 at `secret`.
    let token = store("vault-token");
    let ProviderRef::Vault(vault) = token.spec.provider.which().unwrap() else {
        panic!("vault-token is not a Vault store");
    };
    assert_eq!(vault.server, "https://vault.example.internal:8200");
    assert_eq!(vault.mount(), "secret");
    assert_eq!(vault.version, Some(VaultKvVersion::V2));
    let VaultAuthMethod::Token(secret) = vault.auth.method().unwrap() else {
        panic!("vault-token does not log in with a token");
    };
    assert_eq!(
        (secret.name.as_str(), secret.key.as_deref()),
        ("vault-token", Some("token"))
    );

    // Vault, Kubernetes auth, KV v2 at `kv`, Vault namespace, CA from a ConfigMap.
    let k8s = store("vault-kubernetes");
    let ProviderRef::Vault(vault) = k8s.spec.provider.which().unwrap() else {
        panic!("vault-kubernetes is not a Vault store");
    };
    assert_eq!(vault.mount(), "kv");
    assert_eq!(vault.namespace.as_deref(), Some("platform"));
    let ca = vault.ca_provider.as_ref().unwrap();
    assert_eq!(
        (
            ca.type_,
            ca.name.as_str(),
            ca.key.as_str(),
            ca.namespace.as_deref()
        ),
        (CaProviderType::ConfigMap, "vault-ca", "ca.crt", None)
    );
    let VaultAuthMethod::Kubernetes(auth) = vault.auth.method().unwrap() else {
        panic!("vault-kubernetes does not use Kubernetes auth");
    };
    assert_eq!(auth.mount(), "kubernetes");
    assert_eq!(auth.role, "team-a");
    let sa = auth.service_account_ref.as_ref().unwrap();
    assert_eq!(
        (sa.name.as_str(), sa.namespace.as_deref()),
        ("team-a-reader", None)
    );
    assert!(auth.secret_ref.is_none());

    // Vault, AppRole, a CA bundle inline, open to two kinds of namespace.
    let approle = cluster_store("vault-approle");
    let conditions = &approle.spec.conditions;
    assert_eq!(conditions.len(), 2);
    let selector = conditions[0].namespace_selector.as_ref().unwrap();
    assert_eq!(
        selector.match_labels,
        Some(BTreeMap::from([(
            "vault-access".to_owned(),
            "true".to_owned()
        )]))
    );
    assert!(conditions[0].namespaces.is_empty());
    assert_eq!(conditions[1].namespaces, ["payments", "billing"]);
    assert!(conditions[1].namespace_selector.is_none());
    let as_store = approle.spec.as_store_spec();
    assert_eq!(as_store.provider, approle.spec.provider);
    let ProviderRef::Vault(vault) = approle.spec.provider.which().unwrap() else {
        panic!("vault-approle is not a Vault store");
    };
    assert_eq!(vault.mount(), "secret");
    let pem = String::from_utf8(vault.ca_bundle.clone().unwrap().0).unwrap();
    assert!(pem.starts_with("-----BEGIN CERTIFICATE-----\n"), "{pem}");
    let VaultAuthMethod::AppRole(auth) = vault.auth.method().unwrap() else {
        panic!("vault-approle does not use AppRole");
    };
    assert_eq!(auth.mount(), "approle");
    assert_eq!(
        auth.role_id.as_deref(),
        Some("1a2b3c4d-0000-4000-8000-000000000000")
    );
    assert!(auth.role_ref.is_none());
    assert_eq!(
        (
            auth.secret_ref.name.as_str(),
            auth.secret_ref.namespace.as_deref(),
            auth.secret_ref.key.as_deref()
        ),
        ("vault-approle", Some("sigil-system"), Some("secret-id"))
    );

    // AWS, static keys from a Secret.
    let aws_static = store("aws-static");
    let ProviderRef::Aws(aws) = aws_static.spec.provider.which().unwrap() else {
        panic!("aws-static is not an AWS store");
    };
    assert_eq!(aws.service, AwsService::SecretsManager);
    assert_eq!(aws.region, "eu-west-1");
    assert!(aws.endpoint.is_none() && aws.role.is_none());
    let keys = aws.auth.as_ref().unwrap().secret_ref.as_ref().unwrap();
    assert_eq!(
        (
            keys.access_key_id_secret_ref.name.as_str(),
            keys.access_key_id_secret_ref.key.as_deref()
        ),
        ("aws-credentials", Some("access-key-id"))
    );
    assert_eq!(
        (
            keys.secret_access_key_secret_ref.name.as_str(),
            keys.secret_access_key_secret_ref.key.as_deref()
        ),
        ("aws-credentials", Some("secret-access-key"))
    );
    assert!(keys.session_token_secret_ref.is_none());

    // AWS, web identity of a ServiceAccount.
    let irsa = cluster_store("aws-irsa");
    assert!(irsa.spec.conditions.is_empty(), "open to every namespace");
    let ProviderRef::Aws(aws) = irsa.spec.provider.which().unwrap() else {
        panic!("aws-irsa is not an AWS store");
    };
    assert_eq!(aws.region, "us-east-1");
    let auth = aws.auth.as_ref().unwrap();
    assert!(auth.secret_ref.is_none());
    let sa = auth
        .jwt
        .as_ref()
        .unwrap()
        .service_account_ref
        .as_ref()
        .unwrap();
    assert_eq!(
        (sa.name.as_str(), sa.namespace.as_deref()),
        ("external-secrets", Some("sigil-system"))
    );
    assert!(sa.audiences.is_empty());

    // Two properties of one AWS secret, every 15 minutes, through a ClusterSecretStore.
    let db = external("database-credentials");
    assert_eq!(
        db.spec.refresh_interval_duration(),
        Ok(Some(Duration::from_secs(15 * 60)))
    );
    assert_eq!(db.spec.secret_store_ref.name, "aws-irsa");
    assert_eq!(
        db.spec.secret_store_ref.kind_or_default(),
        StoreKind::ClusterSecretStore
    );
    assert_eq!(db.target_name(), "database-credentials");
    assert_eq!(db.creation_policy(), CreationPolicy::Owner);
    assert_eq!(db.deletion_policy(), DeletionPolicy::Retain);
    let pairs: Vec<(&str, &str, Option<&str>)> = db
        .spec
        .data
        .iter()
        .map(|d| {
            (
                d.secret_key.as_str(),
                d.remote_ref.key.as_str(),
                d.remote_ref.property.as_deref(),
            )
        })
        .collect();
    assert_eq!(
        pairs,
        [
            ("username", "production/database", Some("username")),
            ("password", "production/database", Some("password")),
        ]
    );
    assert!(db.spec.data_from.is_empty());

    // Merged into an existing Secret, templated, one value pinned to a version, plus a
    // whole remote secret.
    let app = external("app-config");
    assert_eq!(
        app.spec.refresh_interval_duration(),
        Ok(Some(Duration::from_secs(3600)))
    );
    assert_eq!(
        app.spec.secret_store_ref.kind_or_default(),
        StoreKind::SecretStore
    );
    assert_eq!(app.creation_policy(), CreationPolicy::Merge);
    assert_eq!(app.deletion_policy(), DeletionPolicy::Retain);
    let template = app.spec.target.as_ref().unwrap().template.as_ref().unwrap();
    assert_eq!(template.engine_version.as_deref(), Some("v2"));
    assert_eq!(template.type_.as_deref(), Some("Opaque"));
    let metadata = template.metadata.as_ref().unwrap();
    assert_eq!(
        metadata
            .labels
            .get("app.kubernetes.io/name")
            .map(String::as_str),
        Some("app")
    );
    assert_eq!(
        metadata.annotations.get("team").map(String::as_str),
        Some("a")
    );
    let url = &template.data["DATABASE_URL"];
    assert!(
        url.contains("{{ .user }}") && url.contains("{{ .password }}"),
        "{url}"
    );
    assert_eq!(app.spec.data[1].secret_key, "password");
    assert_eq!(app.spec.data[1].remote_ref.version.as_deref(), Some("3"));
    assert_eq!(app.spec.data[0].remote_ref.version, None);
    let extract = app.spec.data_from[0].extract.as_ref().unwrap();
    assert_eq!(
        (
            extract.key.as_str(),
            extract.property.as_deref(),
            extract.version.as_deref()
        ),
        ("app/feature-flags", None, None)
    );

    // Synced once, never refreshed; the store kind left to its default.
    let once = external("tls-once");
    assert_eq!(once.spec.refresh_interval_duration(), Ok(None));
    assert_eq!(once.spec.secret_store_ref.kind, None);
    assert_eq!(
        once.spec.secret_store_ref.kind_or_default(),
        StoreKind::SecretStore
    );
    assert_eq!(once.target_name(), "tls-once");
    assert_eq!(once.creation_policy(), CreationPolicy::Orphan);
    let template = once
        .spec
        .target
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap();
    assert_eq!(template.type_.as_deref(), Some("kubernetes.io/tls"));
    assert!(template.data.is_empty());

    // find by path and name, keys renamed by a regexp.
    let by_name = external("find-by-name");
    let from = &by_name.spec.data_from[0];
    let find = from.find.as_ref().unwrap();
    assert_eq!(find.path.as_deref(), Some("app"));
    assert_eq!(find.name.as_ref().unwrap().regexp, "^app/.*");
    assert_eq!(find.conversion_strategy, Some(ConversionStrategy::Default));
    assert_eq!(find.decoding_strategy, Some(DecodingStrategy::None));
    let regexp = from.rewrite[0].regexp.as_ref().unwrap();
    assert_eq!(
        (regexp.source.as_str(), regexp.target.as_str()),
        ("app/(.*)", "$1")
    );

    // find by tags (both must match), keys lowercased by a template.
    let by_tags = external("find-by-tags");
    assert_eq!(by_tags.spec.refresh_policy, Some(RefreshPolicy::Periodic));
    let from = &by_tags.spec.data_from[0];
    let find = from.find.as_ref().unwrap();
    assert_eq!(find.tags.len(), 2);
    assert_eq!(find.tags["team"], "payments");
    assert_eq!(find.conversion_strategy, Some(ConversionStrategy::Unicode));
    assert_eq!(
        from.rewrite[0].transform.as_ref().unwrap().template,
        "{{ .value | lower }}"
    );

    // Created once, templated: data, a ConfigMap's template, a literal to annotations.
    let bootstrap = external("bootstrap");
    assert_eq!(
        bootstrap.spec.refresh_policy,
        Some(RefreshPolicy::CreatedOnce)
    );
    assert_eq!(
        bootstrap.spec.data[0].remote_ref.decoding_strategy,
        Some(DecodingStrategy::Base64)
    );
    let template = bootstrap
        .spec
        .target
        .as_ref()
        .unwrap()
        .template
        .as_ref()
        .unwrap();
    assert_eq!(template.merge_policy, Some(TemplateMergePolicy::Merge));
    assert!(template.data["config.json"].contains("toJson"));
    let config_map = template.template_from[0].config_map.as_ref().unwrap();
    assert_eq!(config_map.name, "app-templates");
    assert_eq!(config_map.items[0].template_as, Some(TemplateScope::Values));
    assert_eq!(
        template.template_from[1].target,
        Some(TemplateTarget::Annotations)
    );
    assert!(template.template_from[1].literal.is_some());

    let on_change = external("on-change");
    assert_eq!(on_change.spec.refresh_policy, Some(RefreshPolicy::OnChange));
    let extract = on_change.spec.data_from[0].extract.as_ref().unwrap();
    assert_eq!(extract.decoding_strategy, Some(DecodingStrategy::Auto));

    // One ExternalSecret stamped into the namespaces a selector or the list names.
    let shared: ClusterExternalSecret =
        serde_json::from_value(doc(&docs, "ClusterExternalSecret", "shared-db").clone())?;
    assert_eq!(shared.spec.external_secret_name.as_deref(), Some("db"));
    assert_eq!(shared.spec.namespace_selectors.len(), 1);
    assert_eq!(shared.spec.namespaces, ["billing"]);
    assert_eq!(shared.spec.refresh_time.as_deref(), Some("1m"));
    assert_eq!(
        shared.spec.external_secret_spec.secret_store_ref.kind,
        Some(StoreKind::ClusterSecretStore)
    );

    // What Sigil writes back out is what the user wrote.
    for ((kind, name), doc) in &docs {
        let spec = match kind.as_str() {
            "SecretStore" => serde_json::to_value(store(name).spec)?,
            "ClusterSecretStore" => serde_json::to_value(cluster_store(name).spec)?,
            "ClusterExternalSecret" => serde_json::to_value(
                serde_json::from_value::<ClusterExternalSecret>(doc.clone())?.spec,
            )?,
            _ => serde_json::to_value(external(name).spec)?,
        };
        assert_eq!(spec, doc["spec"], "{kind} {name} does not round-trip");
    }
    Ok(())
}

#[tokio::test]
async fn what_sigil_cannot_do_is_refused_with_a_fix() -> Result<()> {
    let (ctx, docs) = setup("what_sigil_cannot_do_is_refused_with_a_fix").await?;
    let vault_token = doc(&docs, "SecretStore", "vault-token");
    let aws_static = doc(&docs, "SecretStore", "aws-static");
    let approle = doc(&docs, "ClusterSecretStore", "vault-approle");
    let app_config = doc(&docs, "ExternalSecret", "app-config");

    let mut both = vault_token.clone();
    both["spec"]["provider"]["aws"] = aws_static["spec"]["provider"]["aws"].clone();
    assert_refused(
        &ctx,
        "a store with both vault and aws",
        &both,
        "set only one provider, `vault` or `aws`; to read from both, make one store for each",
    )
    .await?;

    let mut neither = vault_token.clone();
    neither["spec"]["provider"] = json!({});
    assert_refused(
        &ctx,
        "a store with no provider",
        &neither,
        "set a provider: `vault` (HashiCorp Vault or OpenBao, KV v2) or `aws`",
    )
    .await?;

    let mut two_auths = vault_token.clone();
    two_auths["spec"]["provider"]["vault"]["auth"]["kubernetes"] = json!({"role": "team-a"});
    assert_refused(
        &ctx,
        "a Vault store with two auth methods",
        &two_auths,
        "set exactly one Vault auth method: `tokenSecretRef`, `kubernetes` or `appRole`",
    )
    .await?;

    let mut no_auth = vault_token.clone();
    no_auth["spec"]["provider"]["vault"]["auth"] = json!({});
    assert_refused(
        &ctx,
        "a Vault store with no auth method",
        &no_auth,
        "set exactly one Vault auth method",
    )
    .await?;

    let mut no_extract = app_config.clone();
    no_extract["spec"]["dataFrom"] = json!([{"extract": {"key": "app/flags"}}, {}]);
    assert_refused(
        &ctx,
        "a dataFrom entry without extract or find",
        &no_extract,
        "each dataFrom entry needs exactly one of `extract` (one remote key) or `find`",
    )
    .await?;

    let mut find_all = app_config.clone();
    find_all["spec"]["dataFrom"] = json!([{"find": {"conversionStrategy": "Default"}}]);
    assert_refused(
        &ctx,
        "a find of everything",
        &find_all,
        "find needs `name.regexp`, `tags` or `path`",
    )
    .await?;

    let mut merge = app_config.clone();
    merge["spec"]["dataFrom"] = json!([{"extract": {"key": "app/flags"},
        "rewrite": [{"merge": {"into": "config.json"}}]}]);
    match dry_run(&ctx, &merge).await {
        Err(kube::Error::Api(status)) if status.message.contains("merge") => {}
        other => bail!("rewrite.merge: expected a refusal naming merge, got {other:?}"),
    }

    let mut soon = app_config.clone();
    soon["spec"]["refreshInterval"] = json!("soon");
    assert_refused(
        &ctx,
        "refreshInterval `soon`",
        &soon,
        "refreshInterval must be a Go duration such as `1h`",
    )
    .await?;

    let mut conditions = vault_token.clone();
    conditions["spec"]["conditions"] = json!([{"namespaces": ["payments"]}]);
    assert_refused(
        &ctx,
        "conditions on a SecretStore",
        &conditions,
        "make this a ClusterSecretStore",
    )
    .await?;

    let mut ca_namespace = approle.clone();
    ca_namespace["spec"]["provider"]["vault"]["caProvider"] =
        json!({"type": "Secret", "name": "vault-ca", "key": "ca.crt"});
    assert_refused(
        &ctx,
        "a ClusterSecretStore CA without a namespace",
        &ca_namespace,
        "set `provider.vault.caProvider.namespace`",
    )
    .await?;

    let mut role_twice = approle.clone();
    role_twice["spec"]["provider"]["vault"]["auth"]["appRole"]["roleRef"] =
        json!({"name": "vault-approle", "key": "role-id", "namespace": "sigil-system"});
    assert_refused(
        &ctx,
        "an AppRole with roleId and roleRef",
        &role_twice,
        "set the AppRole role ID exactly once",
    )
    .await?;

    let mut two_aws_auths = aws_static.clone();
    two_aws_auths["spec"]["provider"]["aws"]["auth"]["jwt"] =
        json!({"serviceAccountRef": {"name": "sa"}});
    assert_refused(
        &ctx,
        "an AWS store with two auth methods",
        &two_aws_auths,
        "set at most one AWS auth method",
    )
    .await?;

    // Unsupported values of ESO enums: the apiserver lists the supported ones.
    let mut parameter_store = aws_static.clone();
    parameter_store["spec"]["provider"]["aws"]["service"] = json!("ParameterStore");
    assert_refused(
        &ctx,
        "AWS Parameter Store",
        &parameter_store,
        r#"supported values: "SecretsManager""#,
    )
    .await?;
    let mut kv1 = vault_token.clone();
    kv1["spec"]["provider"]["vault"]["version"] = json!("v1");
    assert_refused(&ctx, "Vault KV v1", &kv1, r#"supported values: "v2""#).await?;

    // ESO features Sigil lacks are unknown fields, refused by strict validation rather
    // than silently dropped.
    let mut generator = app_config.clone();
    generator["spec"]["dataFrom"] = json!([{"sourceRef": {"generatorRef": {
        "apiVersion": "generators.external-secrets.io/v1alpha1", "kind": "Password", "name": "pw"}}}]);
    match dry_run(&ctx, &generator).await {
        Err(kube::Error::Api(status))
            if status
                .message
                .contains(".spec.dataFrom[0].sourceRef: field not declared in schema") => {}
        other => bail!("dataFrom.sourceRef: expected an undeclared-field error, got {other:?}"),
    }
    Ok(())
}

/// The schema's duration rule (Go's RE2 on the apiserver) and the controller's parser
/// agree: whatever one accepts, the other does.
#[tokio::test]
async fn refresh_interval_schema_agrees_with_the_parser() -> Result<()> {
    let (ctx, docs) = setup("refresh_interval_schema_agrees_with_the_parser").await?;
    let base = doc(&docs, "ExternalSecret", "database-credentials");
    let samples = [
        "0",
        "0s",
        "1h",
        "15m",
        "10s",
        "1h30m",
        "1h30m0s",
        "1.5h",
        ".5h",
        "1.h",
        "300ms",
        "100us",
        "100µs",
        "100μs",
        "5ns",
        "2h45m30.5s",
        "",
        "soon",
        "1",
        "1d",
        "-1h",
        "+1h",
        "1h ",
        " 1h",
        "1H",
        "h",
        ".h",
        "1..5h",
        "1hh",
        "00",
        "01h",
    ];
    let mut disagreements = Vec::new();
    for sample in samples {
        let mut doc = base.clone();
        doc["spec"]["refreshInterval"] = json!(sample);
        let schema = dry_run(&ctx, &doc).await;
        let parser = parse_go_duration(sample);
        if schema.is_ok() != parser.is_ok() {
            disagreements.push(format!(
                "{sample:?}: apiserver {}, parser {parser:?}",
                match &schema {
                    Ok(_) => "accepts".to_owned(),
                    Err(e) => format!("refuses ({e})"),
                }
            ));
        }
    }
    ensure!(disagreements.is_empty(), "{}", disagreements.join("\n"));
    Ok(())
}

/// What a test leaves behind, ESO-style objects included (even with a finalizer no
/// controller will remove), is gone once its context drops.
#[tokio::test]
async fn the_harness_removes_stores_and_external_secrets() -> Result<()> {
    let (ctx, docs) = setup("the_harness_removes_stores_and_external_secrets").await?;
    let kube = ctx.kube.clone();
    let namespace = ctx.namespace.clone();
    let cluster_store = format!("{}-store", ctx.id);
    let finalizer = json!(["sigil.dev/test-finalizer"]);
    let params = PatchParams::apply(MANAGER);

    let mut store = doc(&docs, "SecretStore", "vault-token").clone();
    store["metadata"]["finalizers"] = finalizer.clone();
    let mut external = doc(&docs, "ExternalSecret", "tls-once").clone();
    external["metadata"]["finalizers"] = finalizer.clone();
    let mut cluster = doc(&docs, "ClusterSecretStore", "aws-irsa").clone();
    cluster["metadata"]["name"] = json!(cluster_store);
    cluster["metadata"]["finalizers"] = finalizer;

    let stores: Api<SecretStore> = Api::namespaced(kube.clone(), &namespace);
    let externals: Api<ExternalSecret> = Api::namespaced(kube.clone(), &namespace);
    let clusters: Api<ClusterSecretStore> = Api::all(kube.clone());
    ctx.track_cluster_store(&cluster_store);
    stores
        .patch("vault-token", &params, &Patch::Apply(&store))
        .await?;
    externals
        .patch("tls-once", &params, &Patch::Apply(&external))
        .await?;
    clusters
        .patch(&cluster_store, &params, &Patch::Apply(&cluster))
        .await?;
    drop(ctx);

    fn gone<T>(result: Result<T, kube::Error>) -> bool {
        matches!(result, Err(kube::Error::Api(s)) if s.code == 404)
    }
    ensure!(
        gone(stores.get("vault-token").await),
        "the SecretStore is left"
    );
    ensure!(
        gone(externals.get("tls-once").await),
        "the ExternalSecret is left"
    );
    ensure!(
        gone(clusters.get(&cluster_store).await),
        "the ClusterSecretStore is left"
    );
    Ok(())
}

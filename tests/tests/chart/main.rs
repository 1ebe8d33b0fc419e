//! The Helm chart `charts/sigil`: `helm lint` passes, the rendered manifests are
//! accepted by the real kube-apiserver (server-side apply, dry run), the controller Pod
//! is locked down, RBAC grants no wildcards, and every authenticated user may read the
//! public keys and nothing else.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{Role, RoleBinding};
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams,
};
use kube::discovery::{Discovery, Scope};
use serde_json::{Value, json};
use sigil_tests::{Env, TestContext, repo_root};

/// Field manager of the dry runs.
const MANAGER: &str = "sigil-chart-test";

/// The chart's directory.
fn chart() -> String {
    repo_root()
        .join("charts/sigil")
        .to_str()
        .expect("utf-8 repository path")
        .to_owned()
}

/// Runs helm with the test environment's kubeconfig and its own helm state directories.
fn helm(env: &Env, args: &[&str]) -> Result<String> {
    let out = Command::new(env.var("SIGIL_HELM")?)
        .args(args)
        .env("KUBECONFIG", env.kubeconfig_path())
        .env("HELM_CACHE_HOME", env.dir().join("helm/cache"))
        .env("HELM_CONFIG_HOME", env.dir().join("helm/config"))
        .env("HELM_DATA_HOME", env.dir().join("helm/data"))
        .output()
        .context("running helm")?;
    ensure!(
        out.status.success(),
        "helm {args:?}: {}\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8(out.stdout)?)
}

/// `helm template` of the chart as release `sigil` in `namespace`, for the test
/// apiserver's version, with `--set` values; returns every non-empty document.
fn render(env: &Env, namespace: &str, crds: bool, set: &[&str]) -> Result<Vec<Value>> {
    let chart = chart();
    let mut args = vec![
        "template",
        "sigil",
        chart.as_str(),
        "--namespace",
        namespace,
        "--kube-version",
        env.var("SIGIL_KUBE_VERSION")?,
    ];
    if crds {
        args.push("--include-crds");
    }
    for s in set {
        args.extend(["--set", s]);
    }
    let yaml = helm(env, &args)?;
    let docs: Vec<Value> = serde_saphyr::from_multiple(&yaml).context("parsing helm template")?;
    let docs: Vec<Value> = docs.into_iter().filter(|d| !d.is_null()).collect();
    ensure!(!docs.is_empty(), "helm template rendered nothing");
    Ok(docs)
}

fn kind(doc: &Value) -> &str {
    doc["kind"].as_str().unwrap_or("")
}

fn name(doc: &Value) -> &str {
    doc["metadata"]["name"].as_str().unwrap_or("")
}

fn the<'a>(docs: &'a [Value], k: &str) -> Result<&'a Value> {
    let mut found = docs.iter().filter(|d| kind(d) == k);
    let doc = found.next().with_context(|| format!("no {k} rendered"))?;
    ensure!(found.next().is_none(), "more than one {k} rendered");
    Ok(doc)
}

/// Server-side applies `doc` with `dryRun=All`: the apiserver decodes, defaults,
/// validates and admits it (and checks field ownership) but stores nothing.
async fn dry_run(ctx: &TestContext, discovery: &Discovery, doc: &Value) -> Result<()> {
    let api_version = doc["apiVersion"]
        .as_str()
        .context("document has no apiVersion")?;
    let (group, version) = match api_version.split_once('/') {
        Some((g, v)) => (g, v),
        None => ("", api_version),
    };
    let gvk = GroupVersionKind::gvk(group, version, kind(doc));
    let (resource, caps) = discovery
        .resolve_gvk(&gvk)
        .with_context(|| format!("the apiserver does not serve {api_version} {}", kind(doc)))?;
    let api: Api<DynamicObject> = match caps.scope {
        Scope::Namespaced => {
            let ns = doc["metadata"]["namespace"]
                .as_str()
                .unwrap_or(&ctx.namespace);
            Api::namespaced_with(ctx.kube.clone(), ns, &resource)
        }
        Scope::Cluster => Api::all_with(ctx.kube.clone(), &resource),
    };
    let params = PatchParams::apply(MANAGER).force().dry_run();
    let applied = api
        .patch(name(doc), &params, &Patch::Apply(doc))
        .await
        .with_context(|| format!("server-side dry run of {} {}", kind(doc), name(doc)))?;
    ensure!(
        applied.metadata.name.as_deref() == Some(name(doc)),
        "the dry run of {} {} answered with {:?}",
        kind(doc),
        name(doc),
        applied.metadata.name
    );
    Ok(())
}

#[tokio::test]
async fn chart_lints() -> Result<()> {
    let env = Env::get();
    let chart = chart();
    for set in [
        None,
        Some("serviceMonitor.enabled=true,networkPolicy.enabled=true,watchNamespace=x"),
        Some(
            "replicaCount=1,leaderElection.enabled=false,serviceAccount.create=false,serviceAccount.name=sa",
        ),
    ] {
        let mut args = vec!["lint", "--strict", chart.as_str()];
        if let Some(set) = set {
            args.extend(["--set", set]);
        }
        let out = helm(env, &args)?;
        ensure!(
            out.contains("0 chart(s) failed") && !out.contains("[ERROR]"),
            "helm lint {set:?}:\n{out}"
        );
    }
    // Two replicas without leader election would unseal and renew keys concurrently.
    let refused = helm(
        env,
        &[
            "template",
            "sigil",
            &chart,
            "--set",
            "leaderElection.enabled=false",
        ],
    );
    let err = format!(
        "{:#}",
        refused.err().context("replicas without a Lease rendered")?
    );
    ensure!(
        err.contains("leaderElection.enabled"),
        "unexpected error: {err}"
    );
    Ok(())
}

#[tokio::test]
async fn rendered_chart_is_accepted_by_the_apiserver() -> Result<()> {
    let ctx = TestContext::new("rendered_chart_is_accepted_by_the_apiserver").await?;
    let discovery = Discovery::new(ctx.kube.clone()).run().await?;

    // Default values, with the CRDs Helm installs from crds/.
    let docs = render(ctx.env, &ctx.namespace, true, &[])?;
    let mut kinds: Vec<&str> = docs.iter().map(kind).collect();
    kinds.sort_unstable();
    assert_eq!(
        kinds,
        [
            "ClusterRole",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "ServiceAccount",
        ]
    );
    for doc in &docs {
        dry_run(&ctx, &discovery, doc).await?;
    }

    // Every optional object the apiserver serves, with the unseal permissions as a Role
    // in the watched namespace (the ServiceMonitor CRD is not installed here).
    let watch = format!("watchNamespace={}", ctx.namespace);
    let docs = render(
        ctx.env,
        &ctx.namespace,
        false,
        &[
            "networkPolicy.enabled=true",
            &watch,
            "networkPolicy.metricsFrom[0].namespaceSelector.matchLabels.name=monitoring",
            "networkPolicy.dns.to[0].podSelector.matchLabels.k8s-app=kube-dns",
            "clusterName=test",
        ],
    )?;
    ensure!(
        !docs.iter().any(|d| kind(d).starts_with("Cluster")),
        "watchNamespace still renders cluster-wide RBAC"
    );
    the(&docs, "NetworkPolicy")?;
    for doc in &docs {
        dry_run(&ctx, &discovery, doc).await?;
    }

    // The dry run is a real check: an invalid Deployment is refused.
    let mut broken = the(&docs, "Deployment")?.clone();
    broken["spec"]["template"]["spec"]["containers"][0]["ports"][0]["containerPort"] = json!(70000);
    let refused = dry_run(&ctx, &discovery, &broken).await;
    let err = refused
        .err()
        .context("a containerPort of 70000 was accepted")?;
    match err.downcast_ref::<kube::Error>() {
        Some(kube::Error::Api(status)) if status.code == 422 => {}
        _ => bail!("expected 422 Invalid for the broken Deployment, got {err:#}"),
    }
    Ok(())
}

#[tokio::test]
async fn deployment_is_locked_down() -> Result<()> {
    let env = Env::get();
    let docs = render(env, "sigil-system", false, &[])?;
    let deploy = the(&docs, "Deployment")?;
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["spec"]["replicas"], json!(2));
    assert_eq!(spec["automountServiceAccountToken"], json!(true));

    let pod = &spec["securityContext"];
    assert_eq!(pod["runAsNonRoot"], json!(true), "{pod}");
    assert_eq!(pod["runAsUser"], json!(65532), "{pod}");
    assert_eq!(
        pod["seccompProfile"]["type"],
        json!("RuntimeDefault"),
        "{pod}"
    );

    let containers = spec["containers"].as_array().context("no containers")?;
    assert_eq!(containers.len(), 1);
    let c = &containers[0];
    let sc = &c["securityContext"];
    assert_eq!(sc["runAsNonRoot"], json!(true), "{sc}");
    assert_eq!(sc["runAsUser"], json!(65532), "{sc}");
    assert_eq!(sc["runAsGroup"], json!(65532), "{sc}");
    assert_eq!(sc["readOnlyRootFilesystem"], json!(true), "{sc}");
    assert_eq!(sc["allowPrivilegeEscalation"], json!(false), "{sc}");
    assert_eq!(sc["capabilities"]["drop"], json!(["ALL"]), "{sc}");
    assert!(sc["capabilities"]["add"].is_null(), "{sc}");
    assert_eq!(
        sc["seccompProfile"]["type"],
        json!("RuntimeDefault"),
        "{sc}"
    );
    for limit in ["cpu", "memory"] {
        assert!(c["resources"]["requests"][limit].is_string(), "{c}");
        assert!(c["resources"]["limits"][limit].is_string(), "{c}");
    }

    assert_eq!(
        c["ports"],
        json!([{"name": "http", "containerPort": 8080, "protocol": "TCP"}])
    );
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], json!("/healthz"));
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], json!("/readyz"));
    let env_from_field: BTreeMap<&str, &str> = c["env"]
        .as_array()
        .context("no env")?
        .iter()
        .filter_map(|e| {
            Some((
                e["name"].as_str()?,
                e["valueFrom"]["fieldRef"]["fieldPath"].as_str()?,
            ))
        })
        .collect();
    assert_eq!(
        env_from_field,
        BTreeMap::from([
            ("POD_NAME", "metadata.name"),
            ("SIGIL_NAMESPACE", "metadata.namespace")
        ])
    );
    let args: Vec<&str> = c["args"]
        .as_array()
        .context("no args")?
        .iter()
        .filter_map(Value::as_str)
        .collect();
    for flag in [
        "--http-addr=0.0.0.0:8080",
        "--leader-election=true",
        "--lease-name=sigil-controller",
        "--concurrency=32",
        "--max-concurrent-restarts=5",
        "--rollout-deadline=5m",
        "--reload-debounce=10s",
    ] {
        assert!(args.contains(&flag), "{flag} missing from {args:?}");
    }
    assert!(
        !args.iter().any(|a| a.starts_with("--watch-namespace")),
        "{args:?}"
    );
    let anti =
        &spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"];
    assert_eq!(
        anti[0]["podAffinityTerm"]["topologyKey"],
        json!("kubernetes.io/hostname")
    );

    // The bindings name the ServiceAccount the Pods run as.
    let sa = spec["serviceAccountName"]
        .as_str()
        .context("no serviceAccountName")?;
    assert_eq!(name(the(&docs, "ServiceAccount")?), sa);
    for binding in docs.iter().filter(|d| kind(d).ends_with("Binding")) {
        for subject in binding["subjects"].as_array().context("no subjects")? {
            if subject["kind"] == "ServiceAccount" {
                assert_eq!(subject["name"], json!(sa), "{binding}");
                assert_eq!(subject["namespace"], json!("sigil-system"), "{binding}");
            }
        }
    }

    // The metrics Service and the ServiceMonitor agree on the port name.
    let service = the(&docs, "Service")?;
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    let docs = render(env, "sigil-system", false, &["serviceMonitor.enabled=true"])?;
    let monitor = the(&docs, "ServiceMonitor")?;
    assert_eq!(monitor["apiVersion"], json!("monitoring.coreos.com/v1"));
    assert_eq!(
        monitor["spec"]["endpoints"][0]["port"],
        json!("http-metrics")
    );
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"],
        service["spec"]["selector"]
    );
    Ok(())
}

#[tokio::test]
async fn rbac_is_least_privilege() -> Result<()> {
    let env = Env::get();
    for set in [&[][..], &["watchNamespace=apps"][..]] {
        let docs = render(env, "sigil-system", false, set)?;
        for role in docs.iter().filter(|d| kind(d).ends_with("Role")) {
            for rule in role["rules"].as_array().context("role without rules")? {
                for field in ["apiGroups", "resources", "verbs", "resourceNames"] {
                    let wildcard = rule[field].as_array().is_some_and(|v| {
                        v.iter()
                            .any(|s| s.as_str().is_some_and(|s| s.contains('*')))
                    });
                    ensure!(
                        !wildcard,
                        "{} {} grants `*` {field}: {rule}",
                        kind(role),
                        name(role)
                    );
                }
                let resources = rule["resources"].to_string();
                // Reading a ServiceAccount (its IRSA role annotation) grants nothing.
                let read_only = rule["verbs"] == serde_json::json!(["get"]);
                let forbidden: &[&str] = if read_only {
                    &["roles", "rolebindings", "clusterroles", "pods"]
                } else {
                    &[
                        "roles",
                        "rolebindings",
                        "clusterroles",
                        "serviceaccounts",
                        "pods",
                    ]
                };
                ensure!(
                    !forbidden
                        .iter()
                        .any(|r| resources.contains(&format!("\"{r}\""))),
                    "{} {} grants {resources}",
                    kind(role),
                    name(role)
                );
            }
        }
        // Workloads are read and patched (one annotation rolls them), never created,
        // updated or deleted; wherever the controller serves Secrets.
        let serving = docs
            .iter()
            .find(|d| {
                kind(d) == "ClusterRole"
                    || (kind(d) == "Role" && d["metadata"]["namespace"] == "apps")
            })
            .context("no Role or ClusterRole for the served namespaces")?;
        let apps: Vec<&Value> = docs
            .iter()
            .filter(|d| kind(d).ends_with("Role"))
            .flat_map(|d| d["rules"].as_array().into_iter().flatten())
            .filter(|rule| rule["apiGroups"].to_string().contains("\"apps\""))
            .collect();
        ensure!(
            apps == [&json!({
                "apiGroups": ["apps"],
                "resources": ["deployments", "statefulsets", "daemonsets"],
                "verbs": ["get", "list", "watch", "patch"],
            })],
            "workload rules with {set:?}: {apps:?}"
        );
        ensure!(
            serving["rules"]
                .as_array()
                .is_some_and(|r| r.contains(apps[0])),
            "the workload rule is not where Secrets are served: {serving}"
        );
        let cluster = docs.iter().any(|d| kind(d) == "ClusterRole");
        ensure!(
            cluster == set.is_empty(),
            "ClusterRole rendered: {cluster} with {set:?}"
        );
        if !set.is_empty() {
            let unseal = docs
                .iter()
                .find(|d| kind(d) == "Role" && d["metadata"]["namespace"] == "apps")
                .context("no Role in the watched namespace")?;
            ensure!(
                unseal["rules"].to_string().contains("sealedsecrets"),
                "{unseal}"
            );
        }
    }
    Ok(())
}

#[tokio::test]
async fn every_authenticated_user_reads_only_the_public_keys() -> Result<()> {
    let ctx = TestContext::new("every_authenticated_user_reads_only_the_public_keys").await?;
    let docs = render(ctx.env, &ctx.namespace, false, &[])?;
    let reader = docs
        .iter()
        .find(|d| kind(d) == "Role" && name(d).ends_with("public-keys-reader"))
        .context("no public-keys reader Role")?;
    let binding = docs
        .iter()
        .find(|d| kind(d) == "RoleBinding" && name(d) == name(reader))
        .context("no public-keys reader RoleBinding")?;
    let role: Role = serde_json::from_value(reader.clone())?;
    let binding: RoleBinding = serde_json::from_value(binding.clone())?;

    let pp = PostParams::default();
    let roles = Api::<Role>::namespaced(ctx.kube.clone(), &ctx.namespace);
    let bindings = Api::<RoleBinding>::namespaced(ctx.kube.clone(), &ctx.namespace);
    roles.create(&pp, &role).await?;
    bindings.create(&pp, &binding).await?;
    let configmaps = Api::<ConfigMap>::namespaced(ctx.kube.clone(), &ctx.namespace);
    for cm in ["sigil-public-keys", "other"] {
        let obj = ConfigMap {
            metadata: kube::api::ObjectMeta {
                name: Some(cm.to_owned()),
                ..Default::default()
            },
            data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
            ..Default::default()
        };
        configmaps.create(&pp, &obj).await?;
    }

    let user = ctx.env.kube_unprivileged().await?;
    let as_user = Api::<ConfigMap>::namespaced(user, &ctx.namespace);
    let result = async {
        let keys = as_user.get("sigil-public-keys").await;
        ensure!(keys.is_ok(), "reading sigil-public-keys: {keys:?}");
        for denied in [
            as_user.get("other").await.map(drop),
            as_user.list(&Default::default()).await.map(drop),
        ] {
            match denied {
                Err(kube::Error::Api(s)) if s.code == 403 => {}
                other => bail!("expected 403 beyond sigil-public-keys, got {other:?}"),
            }
        }
        Ok(())
    }
    .await;

    // RBAC objects are not among what the harness empties before finalizing.
    let dp = DeleteParams::default();
    bindings.delete(name(reader), &dp).await?;
    roles.delete(name(reader), &dp).await?;
    result
}

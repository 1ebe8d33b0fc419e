//! The Helm chart `charts/sigil`: `helm lint` passes, the rendered manifests are
//! accepted by the real kube-apiserver (server-side apply, dry run), the controller and
//! API Pods are locked down, RBAC grants no wildcards, the API's ServiceAccount is
//! granted exactly what it needs (and the real RBAC authorizer agrees), and every
//! authenticated user may read the public keys and nothing else.

use std::collections::BTreeMap;
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
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

fn namespace(doc: &Value) -> &str {
    doc["metadata"]["namespace"].as_str().unwrap_or("")
}

/// The `app.kubernetes.io/component` label: `controller` or `api`.
fn component(doc: &Value) -> &str {
    doc["metadata"]["labels"]["app.kubernetes.io/component"]
        .as_str()
        .unwrap_or("")
}

/// The one `k` of `component` (`controller` or `api`).
fn the_of<'a>(docs: &'a [Value], k: &str, of: &str) -> Result<&'a Value> {
    let mut found = docs.iter().filter(|d| kind(d) == k && component(d) == of);
    let doc = found
        .next()
        .with_context(|| format!("no {of} {k} rendered"))?;
    ensure!(found.next().is_none(), "more than one {of} {k} rendered");
    Ok(doc)
}

/// Checks the lockdown every Sigil Pod shares: non-root, read-only root filesystem, no
/// capabilities, RuntimeDefault seccomp, the ServiceAccount token (both talk to the
/// API server), CPU and memory requests and limits; returns its only container.
fn assert_locked_down(deploy: &Value) -> Result<&Value> {
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(spec["automountServiceAccountToken"], json!(true));
    assert!(
        spec["hostNetwork"].is_null() && spec["hostPID"].is_null(),
        "{spec}"
    );

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
    assert_eq!(sc["privileged"], json!(false), "{sc}");
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
    Ok(c)
}

/// A container's args.
fn args(c: &Value) -> Result<Vec<&str>> {
    Ok(c["args"]
        .as_array()
        .context("no args")?
        .iter()
        .filter_map(Value::as_str)
        .collect())
}

/// An RBAC rule and where it applies: a namespace, or `*` for every namespace.
type Granted = (String, Value);

/// Every RBAC rule the rendered bindings grant the ServiceAccount `namespace/sa`: bound
/// to it by name, or to a group every ServiceAccount of `namespace` is in. Each comes
/// with where it applies: the RoleBinding's namespace, or `*` for a ClusterRoleBinding.
fn rules_of(docs: &[Value], sa_namespace: &str, sa: &str) -> Result<Vec<Granted>> {
    let groups = [
        "system:authenticated".to_owned(),
        "system:serviceaccounts".to_owned(),
        format!("system:serviceaccounts:{sa_namespace}"),
    ];
    let mut rules = Vec::new();
    for binding in docs
        .iter()
        .filter(|d| matches!(kind(d), "RoleBinding" | "ClusterRoleBinding"))
    {
        let subjects = binding["subjects"].as_array().context("no subjects")?;
        let bound = subjects.iter().any(|s| match s["kind"].as_str() {
            Some("ServiceAccount") => s["name"] == sa && s["namespace"] == sa_namespace,
            Some("Group") => s["name"]
                .as_str()
                .is_some_and(|g| groups.iter().any(|x| x == g)),
            _ => false,
        });
        if !bound {
            continue;
        }
        let scope = if kind(binding) == "ClusterRoleBinding" {
            "*"
        } else {
            namespace(binding)
        };
        let role_kind = binding["roleRef"]["kind"].as_str().unwrap_or("");
        let role_name = binding["roleRef"]["name"].as_str().unwrap_or("");
        let role = docs
            .iter()
            .find(|d| {
                kind(d) == role_kind
                    && name(d) == role_name
                    && (role_kind == "ClusterRole" || namespace(d) == namespace(binding))
            })
            .with_context(|| format!("{} {} binds a missing role", kind(binding), name(binding)))?;
        for rule in role["rules"].as_array().context("role without rules")? {
            let granted = (scope.to_owned(), rule.clone());
            if !rules.contains(&granted) {
                rules.push(granted);
            }
        }
    }
    Ok(rules)
}

/// An RBAC rule without resourceNames.
fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({"apiGroups": groups, "resources": resources, "verbs": verbs})
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
        Some("api.enabled=false,networkPolicy.enabled=true,serviceMonitor.enabled=true"),
        Some(
            "api.replicaCount=1,api.serviceAccount.create=false,api.serviceAccount.name=api,api.tls.secretName=tls",
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
    let err = refused_render(env, &chart, "leaderElection.enabled=false")
        .context("replicas without a Lease rendered")?;
    ensure!(
        err.contains("leaderElection.enabled"),
        "unexpected error: {err}"
    );
    // The API's ServiceAccount must be named when the chart does not create it.
    let err = refused_render(env, &chart, "api.serviceAccount.create=false")
        .context("an unnamed API ServiceAccount rendered")?;
    ensure!(
        err.contains("api.serviceAccount.name is required"),
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
            "ClusterRole",
            "ClusterRole",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "ClusterRoleBinding",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "CustomResourceDefinition",
            "Deployment",
            "Deployment",
            "PodDisruptionBudget",
            "PodDisruptionBudget",
            "Role",
            "Role",
            "Role",
            "RoleBinding",
            "RoleBinding",
            "RoleBinding",
            "Service",
            "Service",
            "ServiceAccount",
            "ServiceAccount",
            "ValidatingAdmissionPolicy",
            "ValidatingAdmissionPolicyBinding",
        ]
    );
    // The API's objects are among them (one of each, besides the controller's).
    for k in [
        "Deployment",
        "Service",
        "ServiceAccount",
        "PodDisruptionBudget",
        "ClusterRole",
        "ClusterRoleBinding",
        "Role",
        "RoleBinding",
    ] {
        the_of(&docs, k, "api")?;
    }
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
    // Only the reviews are cluster-wide (they are cluster-scoped): the API's TokenReview
    // and SubjectAccessReview, the controller's TokenReview; the controller's other
    // permissions are a Role.
    ensure!(
        docs.iter()
            .filter(|d| kind(d).starts_with("Cluster"))
            .all(|d| component(d) == "api" || name(d).ends_with("-token-reviewer")),
        "watchNamespace still renders the controller's cluster-wide RBAC"
    );
    the_of(&docs, "NetworkPolicy", "controller")?;
    the_of(&docs, "NetworkPolicy", "api")?;
    for doc in &docs {
        dry_run(&ctx, &discovery, doc).await?;
    }

    // The API with its own names for everything, and without a PodDisruptionBudget.
    let docs = render(
        ctx.env,
        &ctx.namespace,
        false,
        &[
            "api.replicaCount=1",
            "api.tls.secretName=api-cert",
            "api.serviceAccount.name=rotator",
            "api.image.digest=sha256:0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
            "api.networkPolicy.ingressFrom=null",
            "networkPolicy.enabled=true",
        ],
    )?;
    ensure!(
        !docs
            .iter()
            .any(|d| kind(d) == "PodDisruptionBudget" && component(d) == "api"),
        "a PodDisruptionBudget for one API replica"
    );
    for doc in docs.iter().filter(|d| component(d) == "api") {
        dry_run(&ctx, &discovery, doc).await?;
    }

    // The dry run is a real check: an invalid Deployment is refused.
    let mut broken = the_of(&docs, "Deployment", "controller")?.clone();
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
    let deploy = the_of(&docs, "Deployment", "controller")?;
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(deploy["spec"]["replicas"], json!(2));
    let c = assert_locked_down(deploy)?;

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
    let args = args(c)?;
    for flag in [
        "--http-addr=0.0.0.0:8080",
        "--leader-election=true",
        "--lease-name=sigil-controller",
        "--concurrency=32",
        "--max-concurrent-restarts=5",
        "--rollout-deadline=5m",
        "--reload-debounce=10s",
        "--rotation-propagation-timeout=5m",
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
    assert_eq!(name(the_of(&docs, "ServiceAccount", "controller")?), sa);
    for binding in docs.iter().filter(|d| {
        matches!(kind(d), "RoleBinding" | "ClusterRoleBinding") && component(d) == "controller"
    }) {
        for subject in binding["subjects"].as_array().context("no subjects")? {
            if subject["kind"] == "ServiceAccount" {
                assert_eq!(subject["name"], json!(sa), "{binding}");
                assert_eq!(subject["namespace"], json!("sigil-system"), "{binding}");
            }
        }
    }

    // The metrics Service and the ServiceMonitor agree on the port name.
    let service = the_of(&docs, "Service", "controller")?;
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "http-metrics", "port": 8080, "targetPort": "http", "protocol": "TCP"}])
    );
    let docs = render(env, "sigil-system", false, &["serviceMonitor.enabled=true"])?;
    let monitor = the_of(&docs, "ServiceMonitor", "controller")?;
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
async fn api_deployment_is_locked_down() -> Result<()> {
    let env = Env::get();
    let docs = render(env, "sigil-system", false, &[])?;
    let deploy = the_of(&docs, "Deployment", "api")?;
    assert_eq!(name(deploy), "sigil-api");
    // Stateless: every replica serves.
    assert_eq!(deploy["spec"]["replicas"], json!(2));
    let spec = &deploy["spec"]["template"]["spec"];
    let c = assert_locked_down(deploy)?;
    // The same lockdown as the controller, from the same values.
    let controller = the_of(&docs, "Deployment", "controller")?;
    let controller_spec = &controller["spec"]["template"]["spec"];
    assert_eq!(spec["securityContext"], controller_spec["securityContext"]);
    assert_eq!(
        c["securityContext"],
        controller_spec["containers"][0]["securityContext"]
    );
    assert_eq!(c["image"], json!("localhost/sigil/sigil-api:0.1.0"));

    // Its own ServiceAccount, and Pods the controller's selector does not take.
    assert_eq!(spec["serviceAccountName"], json!("sigil-api"));
    assert_eq!(name(the_of(&docs, "ServiceAccount", "api")?), "sigil-api");
    let selector = &deploy["spec"]["selector"]["matchLabels"];
    assert_eq!(selector["app.kubernetes.io/component"], json!("api"));
    for (k, v) in selector.as_object().context("no selector")? {
        assert_eq!(&deploy["spec"]["template"]["metadata"]["labels"][k], v);
    }
    assert_ne!(selector, &controller["spec"]["selector"]["matchLabels"]);

    // HTTPS on 8443 with health on the same port; the probes speak HTTPS.
    assert_eq!(
        c["ports"],
        json!([{"name": "https", "containerPort": 8443, "protocol": "TCP"}])
    );
    for (probe, path) in [("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")] {
        assert_eq!(
            c[probe]["httpGet"],
            json!({"path": path, "port": "https", "scheme": "HTTPS"}),
            "{probe}"
        );
    }

    // The command line of the contract; the controller URL is the controller's Service
    // (only the leader is ready behind it) on its port.
    let controller_service = the_of(&docs, "Service", "controller")?;
    let controller_url = format!(
        "--controller-url=http://{}.sigil-system.svc:{}",
        name(controller_service),
        controller_service["spec"]["ports"][0]["port"]
    );
    assert_eq!(
        controller_url,
        "--controller-url=http://sigil-metrics.sigil-system.svc:8080"
    );
    assert_eq!(
        args(c)?,
        [
            "--listen=0.0.0.0:8443",
            "--tls-cert=/tls/tls.crt",
            "--tls-key=/tls/tls.key",
            &controller_url,
            "--rate-limit=20",
            "--request-timeout=30s",
            "--max-body-bytes=2097152",
            "--review-cache-ttl=10s",
            "--log-json",
        ]
    );
    assert_eq!(
        c["env"][0],
        json!({"name": "POD_NAMESPACE", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}})
    );

    // TLS from the Secret named in the values, mounted read-only at /tls, whole (the
    // kubelet updates it in place for the reload); a scratch /tmp; and the token that
    // proves the API to the controller, for the controller's audience only.
    assert_eq!(
        c["volumeMounts"],
        json!([
            {"name": "tls", "mountPath": "/tls", "readOnly": true},
            {"name": "tmp", "mountPath": "/tmp"},
            {"name": "controller-token", "mountPath": "/var/run/secrets/sigil.dev/controller", "readOnly": true},
        ])
    );
    let volumes = spec["volumes"].as_array().context("no volumes")?;
    assert_eq!(volumes.len(), 3, "{volumes:?}");
    assert_eq!(
        volumes[2]["projected"]["sources"],
        json!([{"serviceAccountToken": {"audience": "sigil-controller", "expirationSeconds": 3600, "path": "token"}}])
    );
    let tls = &volumes[0]["secret"];
    assert_eq!(tls["secretName"], json!("sigil-api-tls"));
    assert_eq!(tls["defaultMode"], json!(0o440));
    assert_eq!(
        tls["items"],
        json!([{"key": "tls.crt", "path": "tls.crt"}, {"key": "tls.key", "path": "tls.key"}])
    );
    assert!(volumes[1]["emptyDir"].is_object(), "{volumes:?}");

    // Service 443 -> 8443 over the API Pods; a PodDisruptionBudget over the same Pods.
    let service = the_of(&docs, "Service", "api")?;
    assert_eq!(name(service), "sigil-api");
    assert_eq!(service["spec"]["type"], json!("ClusterIP"));
    assert_eq!(
        service["spec"]["ports"],
        json!([{"name": "https", "port": 443, "targetPort": "https", "protocol": "TCP"}])
    );
    assert_eq!(&service["spec"]["selector"], selector);
    let pdb = the_of(&docs, "PodDisruptionBudget", "api")?;
    assert_eq!(&pdb["spec"]["selector"]["matchLabels"], selector);
    assert_eq!(pdb["spec"]["maxUnavailable"], json!(1));

    // The values reach the Pod.
    let docs = render(
        env,
        "sigil-system",
        false,
        &[
            "api.tls.secretName=api-cert",
            "api.rateLimit=0",
            "api.logJson=false",
            "api.image.tag=v9",
        ],
    )?;
    let deploy = the_of(&docs, "Deployment", "api")?;
    let spec = &deploy["spec"]["template"]["spec"];
    assert_eq!(
        spec["volumes"][0]["secret"]["secretName"],
        json!("api-cert")
    );
    let c = &spec["containers"][0];
    assert_eq!(c["image"], json!("localhost/sigil/sigil-api:v9"));
    let a = args(c)?;
    assert!(a.contains(&"--rate-limit=0"), "{a:?}");
    assert!(!a.contains(&"--log-json"), "{a:?}");

    // The ServiceMonitor scrapes the API's HTTPS port, checking the Service's name.
    let docs = render(env, "sigil-system", false, &["serviceMonitor.enabled=true"])?;
    let monitor = the_of(&docs, "ServiceMonitor", "api")?;
    assert_eq!(&monitor["spec"]["selector"]["matchLabels"], selector);
    let endpoint = &monitor["spec"]["endpoints"][0];
    assert_eq!(endpoint["port"], json!("https"));
    assert_eq!(endpoint["scheme"], json!("https"));
    assert_eq!(
        endpoint["tlsConfig"],
        json!({"serverName": "sigil-api.sigil-system.svc"})
    );

    // NetworkPolicies: the API is reachable in-cluster on 8443 and reaches the API server,
    // DNS and the controller's port 8080; the controller takes 8080 from the API Pods.
    let docs = render(env, "sigil-system", false, &["networkPolicy.enabled=true"])?;
    let api_policy = the_of(&docs, "NetworkPolicy", "api")?;
    assert_eq!(&api_policy["spec"]["podSelector"]["matchLabels"], selector);
    assert_eq!(
        api_policy["spec"]["ingress"],
        json!([{"from": [{"namespaceSelector": {}}], "ports": [{"protocol": "TCP", "port": 8443}]}])
    );
    let controller_pods = &controller["spec"]["selector"]["matchLabels"];
    let egress = api_policy["spec"]["egress"]
        .as_array()
        .context("no egress")?;
    assert!(
        egress.contains(&json!({
            "to": [{"podSelector": {"matchLabels": controller_pods}}],
            "ports": [{"protocol": "TCP", "port": 8080}],
        })),
        "{egress:?}"
    );
    assert!(
        egress
            .iter()
            .any(|r| r["ports"].to_string().contains("6443") && r["to"][0]["ipBlock"].is_object()),
        "{egress:?}"
    );
    let controller_policy = the_of(&docs, "NetworkPolicy", "controller")?;
    assert_eq!(
        controller_policy["spec"]["ingress"],
        json!([{"from": [{"podSelector": {"matchLabels": selector}}], "ports": [{"protocol": "TCP", "port": 8080}]}])
    );

    // api.enabled=false: none of it, and the controller takes nothing from API Pods.
    let docs = render(
        env,
        "sigil-system",
        false,
        &[
            "api.enabled=false",
            "networkPolicy.enabled=true",
            "serviceMonitor.enabled=true",
        ],
    )?;
    let left: Vec<String> = docs
        .iter()
        .filter(|d| component(d) != "controller")
        .map(|d| format!("{} {}", kind(d), name(d)))
        .collect();
    ensure!(left.is_empty(), "api.enabled=false still renders {left:?}");
    assert_eq!(
        the_of(&docs, "NetworkPolicy", "controller")?["spec"]["ingress"],
        json!([])
    );
    Ok(())
}

#[tokio::test]
async fn api_rbac_is_exactly_what_it_needs() -> Result<()> {
    let env = Env::get();
    let tokenreviews = rule(&["authentication.k8s.io"], &["tokenreviews"], &["create"]);
    let sars = rule(
        &["authorization.k8s.io"],
        &["subjectaccessreviews"],
        &["create"],
    );
    let rotations = rule(&["sigil.dev"], &["rotations"], &["create", "get", "list"]);
    let externalsecrets = rule(&["sigil.dev"], &["externalsecrets"], &["get"]);
    let events = rule(&["events.k8s.io"], &["events"], &["create", "patch"]);
    let core_events = rule(&[""], &["events"], &["create", "patch"]);
    let public_keys = json!({
        "apiGroups": [""],
        "resources": ["configmaps"],
        "resourceNames": ["sigil-public-keys"],
        "verbs": ["get"],
    });
    let at = |scope: &str, rules: &[&Value]| -> Vec<Granted> {
        rules
            .iter()
            .map(|r| (scope.to_owned(), (*r).clone()))
            .collect()
    };
    let cases: [(&[&str], Vec<Granted>); 3] = [
        // Every namespace: callers rotate in their own.
        (
            &[],
            [
                at(
                    "*",
                    &[
                        &tokenreviews,
                        &sars,
                        &rotations,
                        &events,
                        &core_events,
                        &externalsecrets,
                    ],
                ),
                at("sigil-system", &[&public_keys]),
            ]
            .concat(),
        ),
        // Only the watched namespace, and Sigil's own for sealing-key Rotations.
        (
            &["watchNamespace=apps"],
            [
                at("*", &[&tokenreviews, &sars]),
                at(
                    "apps",
                    &[&rotations, &events, &core_events, &externalsecrets],
                ),
                at(
                    "sigil-system",
                    &[&public_keys, &rotations, &events, &core_events],
                ),
            ]
            .concat(),
        ),
        (
            &["watchNamespace=sigil-system"],
            [
                at("*", &[&tokenreviews, &sars]),
                at(
                    "sigil-system",
                    &[
                        &rotations,
                        &events,
                        &core_events,
                        &externalsecrets,
                        &public_keys,
                    ],
                ),
            ]
            .concat(),
        ),
    ];
    for (set, expected) in cases {
        let docs = render(env, "sigil-system", false, set)?;
        let granted = rules_of(&docs, "sigil-system", "sigil-api")?;
        let missing: Vec<_> = expected.iter().filter(|r| !granted.contains(r)).collect();
        let extra: Vec<_> = granted.iter().filter(|r| !expected.contains(r)).collect();
        ensure!(
            missing.is_empty() && extra.is_empty(),
            "API RBAC with {set:?}: missing {missing:?}, extra {extra:?}"
        );
        // The controller's permissions (Secrets, keys) are not the API's.
        let controller_sa = name(the_of(&docs, "ServiceAccount", "controller")?);
        ensure!(
            controller_sa != "sigil-api",
            "the API shares the controller's ServiceAccount"
        );
        ensure!(
            !granted.iter().any(|(_, r)| r["resources"]
                .as_array()
                .is_some_and(|v| v.contains(&json!("secrets")))),
            "the API may touch Secrets: {granted:?}"
        );
    }
    Ok(())
}

/// An access to review: group, resource (`resource/subresource`), verb, namespace
/// (none: cluster-scoped), name, and whether it must be allowed.
type Access<'a> = (
    &'a str,
    &'a str,
    &'a str,
    Option<&'a str>,
    Option<&'a str>,
    bool,
);

#[tokio::test]
async fn api_service_account_is_authorized_only_for_its_work() -> Result<()> {
    let ctx = TestContext::new("api_service_account_is_authorized_only_for_its_work").await?;
    let ns = ctx.namespace.as_str();
    let docs = render(ctx.env, ns, false, &[])?;
    // Cluster-scoped objects under this test's own name, so runs do not collide.
    let cluster_name = format!("{}-api", ctx.id);
    let mut cluster_role: ClusterRole =
        serde_json::from_value(the_of(&docs, "ClusterRole", "api")?.clone())?;
    cluster_role.metadata.name = Some(cluster_name.clone());
    let mut cluster_binding: ClusterRoleBinding =
        serde_json::from_value(the_of(&docs, "ClusterRoleBinding", "api")?.clone())?;
    cluster_binding.metadata.name = Some(cluster_name.clone());
    cluster_binding.role_ref.name = cluster_name.clone();
    let role: Role = serde_json::from_value(the_of(&docs, "Role", "api")?.clone())?;
    let binding: RoleBinding =
        serde_json::from_value(the_of(&docs, "RoleBinding", "api")?.clone())?;

    let pp = PostParams::default();
    let cluster_roles = Api::<ClusterRole>::all(ctx.kube.clone());
    let cluster_bindings = Api::<ClusterRoleBinding>::all(ctx.kube.clone());
    cluster_roles.create(&pp, &cluster_role).await?;
    let result = async {
        cluster_bindings.create(&pp, &cluster_binding).await?;
        Api::<Role>::namespaced(ctx.kube.clone(), ns)
            .create(&pp, &role)
            .await?;
        Api::<RoleBinding>::namespaced(ctx.kube.clone(), ns)
            .create(&pp, &binding)
            .await?;

        let reviews = Api::<SubjectAccessReview>::all(ctx.kube.clone());
        let user = format!("system:serviceaccount:{ns}:sigil-api");
        let groups = vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".to_owned(),
        ];
        let checks: &[Access<'_>] = &[
            (
                "authentication.k8s.io",
                "tokenreviews",
                "create",
                None,
                None,
                true,
            ),
            (
                "authorization.k8s.io",
                "subjectaccessreviews",
                "create",
                None,
                None,
                true,
            ),
            ("sigil.dev", "rotations", "create", Some("prod"), None, true),
            (
                "sigil.dev",
                "rotations",
                "get",
                Some("prod"),
                Some("r"),
                true,
            ),
            ("sigil.dev", "rotations", "list", Some("prod"), None, true),
            ("sigil.dev", "rotations", "create", Some(ns), None, true),
            (
                "sigil.dev",
                "externalsecrets",
                "get",
                Some("prod"),
                Some("db"),
                true,
            ),
            (
                "events.k8s.io",
                "events",
                "create",
                Some("prod"),
                None,
                true,
            ),
            ("", "events", "create", Some("prod"), None, true),
            (
                "",
                "configmaps",
                "get",
                Some(ns),
                Some("sigil-public-keys"),
                true,
            ),
            // Never a Secret.
            ("", "secrets", "get", Some(ns), Some("sigil-key-1"), false),
            ("", "secrets", "list", Some(ns), None, false),
            ("", "secrets", "get", Some("prod"), Some("db"), false),
            ("", "secrets", "create", Some("prod"), None, false),
            // Rotations are recorded, never changed or watched; status is the
            // controller's.
            (
                "sigil.dev",
                "rotations",
                "update",
                Some("prod"),
                Some("r"),
                false,
            ),
            (
                "sigil.dev",
                "rotations",
                "patch",
                Some("prod"),
                Some("r"),
                false,
            ),
            (
                "sigil.dev",
                "rotations",
                "delete",
                Some("prod"),
                Some("r"),
                false,
            ),
            ("sigil.dev", "rotations", "watch", Some("prod"), None, false),
            (
                "sigil.dev",
                "rotations/status",
                "patch",
                Some("prod"),
                Some("r"),
                false,
            ),
            (
                "sigil.dev",
                "externalsecrets",
                "list",
                Some("prod"),
                None,
                false,
            ),
            (
                "sigil.dev",
                "externalsecrets",
                "update",
                Some("prod"),
                Some("db"),
                false,
            ),
            (
                "sigil.dev",
                "sealedsecrets",
                "get",
                Some("prod"),
                Some("db"),
                false,
            ),
            ("", "configmaps", "get", Some(ns), Some("other"), false),
            ("", "configmaps", "list", Some(ns), None, false),
            (
                "",
                "configmaps",
                "get",
                Some("prod"),
                Some("sigil-public-keys"),
                false,
            ),
            ("", "events", "delete", Some("prod"), Some("e"), false),
            (
                "",
                "serviceaccounts/token",
                "create",
                Some(ns),
                Some("sigil-api"),
                false,
            ),
            ("", "users", "impersonate", None, Some("admin"), false),
        ];
        let mut wrong = Vec::new();
        for &(group, resource, verb, namespace, name, allowed) in checks {
            let (resource, subresource) = match resource.split_once('/') {
                Some((r, s)) => (r, Some(s.to_owned())),
                None => (resource, None),
            };
            let review = SubjectAccessReview {
                spec: SubjectAccessReviewSpec {
                    user: Some(user.clone()),
                    groups: Some(groups.clone()),
                    resource_attributes: Some(ResourceAttributes {
                        group: Some(group.to_owned()),
                        resource: Some(resource.to_owned()),
                        subresource,
                        verb: Some(verb.to_owned()),
                        namespace: namespace.map(str::to_owned),
                        name: name.map(str::to_owned),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
                ..Default::default()
            };
            let answer = reviews.create(&pp, &review).await?;
            let got = answer.status.is_some_and(|s| s.allowed);
            if got != allowed {
                wrong.push(format!(
                    "{verb} {group}/{resource} in {namespace:?} name {name:?}: allowed {got}"
                ));
            }
        }
        ensure!(wrong.is_empty(), "the API's ServiceAccount: {wrong:#?}");
        Ok(())
    }
    .await;

    // Cluster-scoped RBAC is not among what the harness deletes.
    let dp = DeleteParams::default();
    let _ = cluster_bindings.delete(&cluster_name, &dp).await;
    cluster_roles.delete(&cluster_name, &dp).await?;
    result
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
            .filter(|d| component(d) == "controller" && !name(d).ends_with("-token-reviewer"))
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
        // The API's ClusterRole (TokenReview, SubjectAccessReview) and the controller's
        // TokenReview (who calls its internal endpoints) are always there; the
        // controller's serving ClusterRole only when it serves every namespace.
        let reviewer = docs
            .iter()
            .find(|d| kind(d) == "ClusterRole" && name(d).ends_with("-token-reviewer"))
            .context("no token-reviewer ClusterRole")?;
        ensure!(
            reviewer["rules"]
                == json!([{"apiGroups": ["authentication.k8s.io"], "resources": ["tokenreviews"], "verbs": ["create"]}]),
            "{reviewer}"
        );
        let cluster = docs.iter().any(|d| {
            kind(d) == "ClusterRole"
                && component(d) == "controller"
                && !name(d).ends_with("-token-reviewer")
        });
        ensure!(
            cluster == set.is_empty(),
            "controller ClusterRole rendered: {cluster} with {set:?}"
        );
        if !set.is_empty() {
            let unseal = docs
                .iter()
                .filter(|d| component(d) == "controller")
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

/// The error `helm template` gives for `--set SET`, or `None` when it rendered.
fn refused_render(env: &Env, chart: &str, set: &str) -> Option<String> {
    helm(env, &["template", "sigil", chart, "--set", set])
        .err()
        .map(|err| format!("{err:#}"))
}

/// A client of the admin's kubeconfig acting as `user` in `groups` (impersonation).
async fn acting_as(env: &Env, user: &str, groups: &[String]) -> Result<kube::Client> {
    let kubeconfig = kube::config::Kubeconfig::read_from(env.kubeconfig_path())?;
    let options = kube::config::KubeConfigOptions {
        context: Some("sigil".to_owned()),
        ..Default::default()
    };
    let mut config = kube::Config::from_custom_kubeconfig(kubeconfig, &options).await?;
    config.auth_info.impersonate = Some(user.to_owned());
    config.auth_info.impersonate_groups = Some(groups.to_vec());
    Ok(kube::Client::try_from(config)?)
}

#[tokio::test]
async fn only_sigil_sets_a_rotations_requested_by() -> Result<()> {
    let ctx = TestContext::new("chart-requested-by").await?;
    sigil_tests::install_crds(&ctx.kube).await?;
    let ns = ctx.namespace.as_str();
    let docs = render(ctx.env, ns, false, &[])?;
    // Cluster-scoped, so under this test's own name and bound to its namespace only.
    let policy_name = format!("{}-requested-by", ctx.id);
    let mut policy = the_of(&docs, "ValidatingAdmissionPolicy", "controller")?.clone();
    policy["metadata"]["name"] = json!(policy_name);
    let mut binding = the_of(&docs, "ValidatingAdmissionPolicyBinding", "controller")?.clone();
    binding["metadata"]["name"] = json!(policy_name);
    binding["spec"]["policyName"] = json!(policy_name);
    binding["spec"]["matchResources"] =
        json!({"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": ns}}});
    let gvk = |kind: &str| GroupVersionKind::gvk("admissionregistration.k8s.io", "v1", kind);
    let discovery = Discovery::new(ctx.kube.clone()).run().await?;
    let apply = PatchParams::apply(MANAGER).force();
    let mut applied = Vec::new();
    for doc in [&policy, &binding] {
        let (resource, _) = discovery
            .resolve_gvk(&gvk(kind(doc)))
            .context("admissionregistration.k8s.io/v1 is served")?;
        let api: Api<DynamicObject> = Api::all_with(ctx.kube.clone(), &resource);
        api.patch(name(doc), &apply, &Patch::Apply(doc)).await?;
        applied.push(api);
    }
    let result = async {
        let grant: Role = serde_json::from_value(json!({
            "metadata": {"name": "rotations", "namespace": ns},
            "rules": [{"apiGroups": ["sigil.dev"], "resources": ["rotations"], "verbs": ["create"]}]}))?;
        Api::<Role>::namespaced(ctx.kube.clone(), ns)
            .create(&PostParams::default(), &grant)
            .await?;
        let subjects: Vec<Value> = ["sigil-api", "sigil", "someone"]
            .iter()
            .map(|sa| json!({"kind": "ServiceAccount", "name": sa, "namespace": ns}))
            .collect();
        let bound: RoleBinding = serde_json::from_value(json!({
            "metadata": {"name": "rotations", "namespace": ns},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "rotations"},
            "subjects": subjects}))?;
        Api::<RoleBinding>::namespaced(ctx.kube.clone(), ns)
            .create(&PostParams::default(), &bound)
            .await?;
        let rotation = |requested_by: Option<&str>| -> Result<sigil_types::Rotation> {
            let mut spec = json!({"externalSecretRef": {"name": "db"}, "reason": "INC-1"});
            if let Some(who) = requested_by {
                spec["requestedBy"] = json!(who);
            }
            Ok(serde_json::from_value(json!({
                "apiVersion": "sigil.dev/v1", "kind": "Rotation",
                "metadata": {"generateName": "r-", "namespace": ns}, "spec": spec}))?)
        };
        let dry_run = PostParams {
            dry_run: true,
            ..PostParams::default()
        };
        let groups = vec![
            "system:serviceaccounts".to_owned(),
            format!("system:serviceaccounts:{ns}"),
            "system:authenticated".to_owned(),
        ];
        let as_account = |sa: &'static str| {
            let groups = groups.clone();
            async move { acting_as(ctx.env, &format!("system:serviceaccount:{ns}:{sa}"), &groups).await }
        };
        // The policy takes a moment to be enforced after it is created.
        let mut refusal = None;
        for _ in 0..100 {
            let attempt = Api::<sigil_types::Rotation>::namespaced(ctx.kube.clone(), ns)
                .create(&dry_run, &rotation(Some("alice"))?)
                .await;
            if let Err(kube::Error::Api(status)) = attempt {
                refusal = Some(status);
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        }
        let refusal = refusal.context("the admin's forged requestedBy was never refused")?;
        ensure!(refusal.code == 422 || refusal.code == 403, "{refusal:?}");
        ensure!(
            refusal.message.contains("spec.requestedBy is set by sigil-api"),
            "{}",
            refusal.message
        );
        let someone = Api::<sigil_types::Rotation>::namespaced(as_account("someone").await?, ns);
        ensure!(
            someone.create(&dry_run, &rotation(Some("alice"))?).await.is_err(),
            "another ServiceAccount forged requestedBy"
        );
        // Without requestedBy anyone with the right may create one; sigil-api and the
        // controller may set it.
        someone.create(&dry_run, &rotation(None)?).await?;
        for sa in ["sigil-api", "sigil"] {
            Api::<sigil_types::Rotation>::namespaced(as_account(sa).await?, ns)
                .create(&dry_run, &rotation(Some("alice"))?)
                .await
                .with_context(|| format!("{sa} could not set requestedBy"))?;
        }
        anyhow::Ok(())
    }
    .await;
    for api in applied.iter().rev() {
        let _ = api.delete(&policy_name, &DeleteParams::default()).await;
    }
    result
}

#[tokio::test]
async fn store_tokens_can_be_limited_to_named_accounts() -> Result<()> {
    let ctx = TestContext::new("chart-token-accounts").await?;
    let ns = ctx.namespace.as_str();
    let docs = render(
        ctx.env,
        ns,
        false,
        &[
            &format!("stores.tokenAccounts[0].namespace={ns}"),
            "stores.tokenAccounts[0].name=vault-reader",
        ],
    )?;
    let cluster_wide = docs
        .iter()
        .filter(|d| kind(d) == "ClusterRole")
        .any(|d| d["rules"].to_string().contains("serviceaccounts/token"));
    ensure!(
        !cluster_wide,
        "a ClusterRole still grants every account's tokens"
    );
    let role: Role = serde_json::from_value(
        docs.iter()
            .find(|d| kind(d) == "Role" && name(d).contains("store-token"))
            .context("no store-token Role")?
            .clone(),
    )?;
    let binding: RoleBinding = serde_json::from_value(
        docs.iter()
            .find(|d| kind(d) == "RoleBinding" && name(d).contains("store-token"))
            .context("no store-token RoleBinding")?
            .clone(),
    )?;
    let pp = PostParams::default();
    Api::<Role>::namespaced(ctx.kube.clone(), ns)
        .create(&pp, &role)
        .await?;
    Api::<RoleBinding>::namespaced(ctx.kube.clone(), ns)
        .create(&pp, &binding)
        .await?;
    let may_mint_for = |account: &'static str| {
        let review = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: Some(format!("system:serviceaccount:{ns}:sigil")),
                groups: Some(vec!["system:serviceaccounts".to_owned()]),
                resource_attributes: Some(ResourceAttributes {
                    namespace: Some(ns.to_owned()),
                    verb: Some("create".to_owned()),
                    resource: Some("serviceaccounts".to_owned()),
                    subresource: Some("token".to_owned()),
                    name: Some(account.to_owned()),
                    ..ResourceAttributes::default()
                }),
                ..SubjectAccessReviewSpec::default()
            },
            ..SubjectAccessReview::default()
        };
        let reviews = Api::<SubjectAccessReview>::all(ctx.kube.clone());
        async move {
            anyhow::Ok(
                reviews
                    .create(&PostParams::default(), &review)
                    .await?
                    .status
                    .is_some_and(|s| s.allowed),
            )
        }
    };
    // RBAC is eventually consistent in its cache: the grant shows within a moment.
    let mut granted = false;
    for _ in 0..50 {
        granted = may_mint_for("vault-reader").await?;
        if granted {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    ensure!(granted, "the listed account's tokens are not granted");
    ensure!(
        !may_mint_for("default").await?,
        "another account's tokens are granted"
    );
    Ok(())
}

//! `sigil migrate bitnami` on SealedSecrets made by the real `kubeseal` (built from the
//! Go module proxy by `scripts/env`, `SIGIL_KUBESEAL`), sealed offline with `--cert` to
//! RSA keys made here with openssl.
//!
//! Every value comes out byte for byte the same, checked by opening the Sigil output
//! offline (`sigil unseal --recovery-key`): strict, namespace-wide and cluster-wide;
//! several keys and binary values in one object; values sealed before and after a key
//! renewal, in one object; templates; a directory mirrored file by file. A wrong key or
//! an altered value names the file, object and data key, and nothing is written. The
//! Bitnami inputs are accepted by Bitnami's CRD and the outputs by Sigil's, on the real
//! kube-apiserver (server-side apply, dry run, strict field validation).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use anyhow::{Context, Result, bail, ensure};
use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use kube::api::ValidationDirective;
use kube::api::{Api, ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams};
use serde_json::{Value, json};
use sigil_tests::{TestContext, install_crds, repo_root};

/// Field manager of the dry runs.
const MANAGER: &str = "sigil-migrate-test";

/// The `sigil` binary, built once per test process.
fn sigil_bin() -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["build", "--quiet", "-p", "sigil-cli"])
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building sigil failed");
    });
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"))
        .join("debug/sigil")
}

/// One test's working directory, Bitnami and Sigil keys, and tools.
struct Setup {
    ctx: TestContext,
    dir: tempfile::TempDir,
    kubeseal: PathBuf,
}

impl Setup {
    async fn new(test: &str) -> Result<Self> {
        let ctx = TestContext::new(test).await?;
        install_crds(&ctx.kube).await?;
        let kubeseal = PathBuf::from(ctx.env.var("SIGIL_KUBESEAL")?);
        let setup = Self {
            ctx,
            dir: tempfile::tempdir()?,
            kubeseal,
        };
        setup.sigil_ok(&[
            "keys",
            "generate",
            "--private-out",
            "sigil.key",
            "--public-out",
            "sigil.pub",
        ])?;
        Ok(setup)
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    fn write(&self, name: &str, text: &str) -> Result<PathBuf> {
        let path = self.path(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&path, text)?;
        Ok(path)
    }

    fn run(&self, program: &Path, args: &[&str], stdin: &[u8]) -> Result<Output> {
        let mut child = Command::new(program)
            .args(args)
            .current_dir(self.dir.path())
            .env("KUBECONFIG", self.ctx.env.kubeconfig_path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("running {}", program.display()))?;
        child.stdin.take().context("stdin")?.write_all(stdin)?;
        Ok(child.wait_with_output()?)
    }

    /// Runs a program that must succeed; returns its stdout.
    fn run_ok(&self, program: &Path, args: &[&str], stdin: &[u8]) -> Result<String> {
        let out = self.run(program, args, stdin)?;
        ensure!(
            out.status.success(),
            "{} {args:?}: {}",
            program.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        Ok(String::from_utf8(out.stdout)?)
    }

    fn sigil(&self, args: &[&str]) -> Result<Output> {
        self.run(&sigil_bin(), args, b"")
    }

    fn sigil_ok(&self, args: &[&str]) -> Result<String> {
        self.run_ok(&sigil_bin(), args, b"")
    }

    /// A Bitnami sealing key pair as its controller makes one (RSA, self-signed
    /// certificate; 2048 bits here for speed, Bitnami's are 4096): `NAME.key` in PKCS#1
    /// PEM as the controller writes `tls.key`, `NAME.crt`.
    fn bitnami_key(&self, name: &str) -> Result<()> {
        let (key, crt) = (format!("{name}.key"), format!("{name}.crt"));
        let openssl = Path::new("openssl");
        self.run_ok(
            openssl,
            &[
                "req",
                "-x509",
                "-newkey",
                "rsa:2048",
                "-nodes",
                "-days",
                "30",
                "-subj",
                "/O=sealed-secret/CN=sealed-secret",
                "-keyout",
                &key,
                "-out",
                &crt,
            ],
            b"",
        )?;
        self.run_ok(
            openssl,
            &["rsa", "-in", &key, "-traditional", "-out", &key],
            b"",
        )?;
        ensure!(
            std::fs::read_to_string(self.path(&key))?
                .starts_with("-----BEGIN RSA PRIVATE KEY-----")
        );
        Ok(())
    }

    /// The key Secrets as `kubectl get secret -l sealedsecrets.bitnami.com/sealed-secrets-key
    /// -o yaml` prints them, written to `file`.
    fn key_list(&self, file: &str, names: &[&str]) -> Result<PathBuf> {
        let mut items = Vec::new();
        for name in names {
            let read = |ext: &str| -> Result<String> {
                Ok(STANDARD.encode(std::fs::read(self.path(&format!("{name}.{ext}")))?))
            };
            items.push(json!({
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {
                    "name": format!("sealed-secrets-key{name}"),
                    "namespace": "kube-system",
                    "generateName": "sealed-secrets-key",
                    "labels": {"sealedsecrets.bitnami.com/sealed-secrets-key": "active"},
                    "resourceVersion": "4711",
                },
                "type": "kubernetes.io/tls",
                "data": {"tls.crt": read("crt")?, "tls.key": read("key")?},
            }));
        }
        let list = json!({"apiVersion": "v1", "kind": "List", "items": items, "metadata": {"resourceVersion": ""}});
        self.write(file, &serde_saphyr::to_string(&list)?)
    }

    /// `kubeseal --cert KEY.crt --scope SCOPE -o FORMAT < secret`.
    fn kubeseal(&self, key: &str, scope: &str, format: &str, secret: &Value) -> Result<String> {
        let crt = format!("{key}.crt");
        let args = ["--cert", &crt, "--scope", scope, "-o", format];
        self.run_ok(
            &self.kubeseal,
            &args,
            serde_json::to_string(secret)?.as_bytes(),
        )
    }

    /// [`Self::kubeseal`] into `file`, in JSON for a `.json` file, else YAML; returns
    /// what kubeseal wrote.
    fn kubeseal_to(&self, file: &str, key: &str, scope: &str, secret: &Value) -> Result<String> {
        let format = if file.ends_with(".json") {
            "json"
        } else {
            "yaml"
        };
        let text = self.kubeseal(key, scope, format, secret)?;
        self.write(file, &text)?;
        Ok(text)
    }

    /// `kubeseal --cert KEY.crt --merge-into FILE < secret`: adds keys sealed with KEY.
    fn kubeseal_merge(&self, key: &str, file: &str, secret: &Value) -> Result<()> {
        let crt = format!("{key}.crt");
        let args = ["--cert", &crt, "--merge-into", file];
        self.run_ok(
            &self.kubeseal,
            &args,
            serde_json::to_string(secret)?.as_bytes(),
        )?;
        Ok(())
    }

    /// Opens Sigil SealedSecrets offline: name → (data, the whole Secret).
    fn unseal(&self, file: &str) -> Result<Opened> {
        let text = self.sigil_ok(&[
            "unseal",
            "--recovery-key",
            "sigil.key",
            "-f",
            file,
            "-o",
            "json",
        ])?;
        let value: Value = serde_json::from_str(&text)?;
        let secrets = match value["kind"].as_str() {
            Some("List") => value["items"].as_array().cloned().unwrap_or_default(),
            _ => vec![value],
        };
        let mut opened = BTreeMap::new();
        for secret in secrets {
            let mut data = BTreeMap::new();
            for (key, b64) in secret["data"].as_object().context("data")? {
                data.insert(
                    key.clone(),
                    STANDARD.decode(b64.as_str().context("base64")?)?,
                );
            }
            opened.insert(
                secret["metadata"]["name"]
                    .as_str()
                    .context("name")?
                    .to_owned(),
                (data, secret),
            );
        }
        Ok(opened)
    }

    /// Server-side apply, dry run, strict field validation: the apiserver accepts `doc`
    /// as an object of its kind (Bitnami's or Sigil's SealedSecret), in the test's
    /// namespace when it names none.
    async fn accepted(&self, doc: &Value) -> Result<()> {
        let (group, version) = doc["apiVersion"]
            .as_str()
            .context("apiVersion")?
            .split_once('/')
            .context("group")?;
        let gvk = GroupVersionKind::gvk(group, version, "SealedSecret");
        let resource = ApiResource::from_gvk_with_plural(&gvk, "sealedsecrets");
        let namespace = doc["metadata"]["namespace"]
            .as_str()
            .unwrap_or(&self.ctx.namespace);
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.ctx.kube.clone(), namespace, &resource);
        let params = PatchParams {
            field_validation: Some(ValidationDirective::Strict),
            ..PatchParams::apply(MANAGER).dry_run()
        };
        let name = doc["metadata"]["name"].as_str().context("name")?;
        api.patch(name, &params, &Patch::Apply(doc))
            .await
            .with_context(|| format!("{} {namespace}/{name} refused", doc["apiVersion"]))?;
        Ok(())
    }
}

/// Secrets opened from Sigil SealedSecrets: name → (data, the whole Secret).
type Opened = BTreeMap<String, (BTreeMap<String, Vec<u8>>, Value)>;

/// A Secret with `data` (any bytes).
fn secret(namespace: Option<&str>, name: &str, data: &[(&str, &[u8])]) -> Value {
    let data: BTreeMap<&str, String> = data.iter().map(|(k, v)| (*k, STANDARD.encode(v))).collect();
    let mut secret =
        json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name}, "data": data});
    if let Some(ns) = namespace {
        secret["metadata"]["namespace"] = json!(ns);
    }
    secret
}

/// Every byte value, and a sequence that is not UTF-8.
fn binary() -> Vec<u8> {
    let mut bytes: Vec<u8> = (0..=255).collect();
    bytes.extend([0xc3, 0x28, 0xff, 0xfe, 0x00, b'\n']);
    bytes
}

fn documents(text: &str) -> Result<Vec<Value>> {
    let docs: Vec<Value> = serde_saphyr::from_multiple(text)?;
    Ok(docs.into_iter().filter(|d| !d.is_null()).collect())
}

fn assert_data(opened: &Opened, name: &str, want: &[(&str, &[u8])]) -> Result<()> {
    let (data, _) = opened
        .get(name)
        .with_context(|| format!("no Secret {name} in {:?}", opened.keys()))?;
    let want: BTreeMap<String, Vec<u8>> = want
        .iter()
        .map(|(k, v)| ((*k).to_owned(), v.to_vec()))
        .collect();
    ensure!(
        *data == want,
        "Secret {name}: the values differ from what kubeseal sealed"
    );
    Ok(())
}

/// `sigil migrate bitnami --bitnami-key KEY… --cert sigil.pub ARGS…`: one
/// `--bitnami-key` listing `keys`, sealing to the test's Sigil key.
fn migrate<'a>(keys: &[&'a str], args: &[&'a str]) -> Vec<&'a str> {
    let mut argv = vec!["migrate", "bitnami", "--bitnami-key"];
    argv.extend(keys);
    argv.extend(["--cert", "sigil.pub"]);
    argv.extend(args);
    argv
}

/// Every file under `dir` with its bytes, by relative path.
fn tree(dir: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    let mut files = BTreeMap::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(current) = pending.pop() {
        for entry in std::fs::read_dir(&current)? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else {
                files.insert(path.strip_prefix(dir)?.to_path_buf(), std::fs::read(&path)?);
            }
        }
    }
    Ok(files)
}

#[tokio::test]
async fn every_scope_opens_byte_for_byte() -> Result<()> {
    let s = Setup::new("migrate-scopes").await?;
    s.bitnami_key("active")?;
    let ns = s.ctx.namespace.clone();
    let bin = binary();
    let db = [
        ("username", b"admin".as_slice()),
        ("password", b"s3cret\n"),
        ("ca.bin", &bin),
    ];
    let shared = [("token", b"t0ken".as_slice())];
    let global = [("license", b"ABC-123".as_slice()), ("blob", &bin[..40])];
    let text = [
        s.kubeseal("active", "strict", "yaml", &secret(Some(&ns), "db", &db))?,
        s.kubeseal(
            "active",
            "namespace-wide",
            "yaml",
            &secret(Some(&ns), "shared", &shared),
        )?,
        s.kubeseal(
            "active",
            "cluster-wide",
            "yaml",
            &secret(None, "global", &global),
        )?,
    ]
    .concat();
    s.write("bitnami.yaml", &text)?;
    for doc in documents(&text)? {
        s.accepted(&doc).await?;
    }

    let migrated = s.sigil_ok(&migrate(&["active.key"], &["-f", "bitnami.yaml"]))?;
    s.write("sigil.yaml", &migrated)?;
    let docs = documents(&migrated)?;
    let scopes: Vec<(&str, Option<&str>, Option<&str>)> = docs
        .iter()
        .map(|d| {
            (
                d["metadata"]["name"].as_str().unwrap_or_default(),
                d["metadata"]["namespace"].as_str(),
                d["spec"]["scope"].as_str(),
            )
        })
        .collect();
    assert_eq!(
        scopes,
        [
            ("db", Some(ns.as_str()), None),
            ("shared", Some(ns.as_str()), Some("namespace")),
            ("global", None, Some("cluster")),
        ]
    );
    for doc in &docs {
        ensure!(doc["apiVersion"] == "sigil.dev/v1", "{doc}");
        ensure!(
            doc["metadata"].get("annotations").is_none(),
            "scope annotations are spec.scope: {doc}"
        );
        s.accepted(doc).await?;
    }
    let opened = s.unseal("sigil.yaml")?;
    assert_data(&opened, "db", &db)?;
    assert_data(&opened, "shared", &shared)?;
    assert_data(&opened, "global", &global)?;
    Ok(())
}

#[tokio::test]
async fn values_sealed_before_and_after_a_key_renewal_open() -> Result<()> {
    let s = Setup::new("migrate-renewal").await?;
    s.bitnami_key("old")?;
    s.bitnami_key("new")?;
    s.key_list("keys.yaml", &["new"])?;
    let ns = s.ctx.namespace.clone();
    // One object sealed with the old key, then a key added with the new one (kubeseal
    // --merge-into), as happens after Bitnami renews its key; one sealed with each.
    s.kubeseal_to(
        "mixed.yaml",
        "old",
        "strict",
        &secret(Some(&ns), "mixed", &[("before", b"1")]),
    )?;
    s.kubeseal_merge(
        "new",
        "mixed.yaml",
        &secret(Some(&ns), "mixed", &[("after", b"2")]),
    )?;
    let old = s.kubeseal_to(
        "old.json",
        "old",
        "strict",
        &secret(Some(&ns), "old", &[("k", b"o")]),
    )?;
    let new = s.kubeseal_to(
        "new.json",
        "new",
        "strict",
        &secret(Some(&ns), "new", &[("k", b"n")]),
    )?;
    // kubeseal --merge-into writes JSON: one YAML stream of the three.
    let mut all = String::new();
    for text in [std::fs::read_to_string(s.path("mixed.yaml"))?, old, new] {
        all.push_str("---\n");
        all.push_str(&serde_saphyr::to_string(&serde_saphyr::from_str::<Value>(
            &text,
        )?)?);
    }
    s.write("all.yaml", &all)?;

    // --bitnami-key repeated; below, one --bitnami-key listing both files.
    let migrated = s.sigil_ok(&migrate(
        &["old.key"],
        &["--bitnami-key", "keys.yaml", "-f", "all.yaml"],
    ))?;
    s.write("sigil.yaml", &migrated)?;
    let opened = s.unseal("sigil.yaml")?;
    assert_data(&opened, "mixed", &[("before", b"1"), ("after", b"2")])?;
    assert_data(&opened, "old", &[("k", b"o")])?;
    assert_data(&opened, "new", &[("k", b"n")])?;

    // A JSON file stays JSON.
    let migrated = s.sigil_ok(&migrate(&["old.key", "keys.yaml"], &["-f", "new.json"]))?;
    let doc: Value = serde_json::from_str(&migrated).context("JSON in, JSON out")?;
    ensure!(doc["kind"] == "SealedSecret", "{doc}");

    // Without the new key, the first value it sealed is named.
    assert_eq!(
        refused(&s, &migrate(&["old.key"], &["-f", "all.yaml"]))?,
        format!(
            "error: all.yaml, document 1: Bitnami SealedSecret {ns}/mixed, key `after`: the --bitnami-key does not open it"
        )
    );
    Ok(())
}

#[tokio::test]
async fn the_template_is_carried_over() -> Result<()> {
    let s = Setup::new("migrate-template").await?;
    s.bitnami_key("active")?;
    let ns = s.ctx.namespace.clone();
    let mut input = secret(
        Some(&ns),
        "registry",
        &[(".dockerconfigjson", br#"{"auths":{}}"#)],
    );
    input["type"] = json!("kubernetes.io/dockerconfigjson");
    input["immutable"] = json!(true);
    input["metadata"]["labels"] = json!({"app": "web", "tier": "frontend"});
    input["metadata"]["annotations"] =
        json!({"team": "payments", "example.com/rotated": "2026-01-01"});
    s.kubeseal_to("registry.yaml", "active", "namespace-wide", &input)?;
    let migrated = s.sigil_ok(&migrate(
        &["active.key"],
        &["-f", "registry.yaml", "-w", "sigil.yaml"],
    ))?;
    ensure!(migrated.is_empty(), "-w writes nothing to stdout");
    let doc = documents(&std::fs::read_to_string(s.path("sigil.yaml"))?)?.remove(0);
    assert_eq!(
        doc["spec"]["template"],
        json!({
            "type": "kubernetes.io/dockerconfigjson",
            "immutable": true,
            "metadata": {
                "labels": {"app": "web", "tier": "frontend"},
                "annotations": {"team": "payments", "example.com/rotated": "2026-01-01"},
            },
        })
    );
    s.accepted(&doc).await?;
    let opened = s.unseal("sigil.yaml")?;
    let (_, unsealed) = &opened["registry"];
    assert_eq!(unsealed["type"], "kubernetes.io/dockerconfigjson");
    assert_eq!(unsealed["immutable"], true);
    assert_eq!(unsealed["metadata"]["labels"], input["metadata"]["labels"]);
    assert_eq!(
        unsealed["metadata"]["annotations"],
        input["metadata"]["annotations"]
    );
    assert_data(
        &opened,
        "registry",
        &[(".dockerconfigjson", br#"{"auths":{}}"#)],
    )?;
    Ok(())
}

#[tokio::test]
async fn a_directory_is_mirrored_file_by_file() -> Result<()> {
    let s = Setup::new("migrate-directory").await?;
    s.bitnami_key("active")?;
    let ns = s.ctx.namespace.clone();
    let bin = binary();
    let kustomization = "# kept byte for byte\nresources:\n  - secrets.yaml\n";
    s.kubeseal_to(
        "k8s/base/db.yaml",
        "active",
        "strict",
        &secret(Some(&ns), "db", &[("password", b"pw")]),
    )?;
    s.write("k8s/overlays/prod/kustomization.yaml", kustomization)?;
    let configmap =
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: settings\ndata:\n  mode: prod\n";
    let secrets = format!(
        "{configmap}{}{}",
        s.kubeseal(
            "active",
            "strict",
            "yaml",
            &secret(Some(&ns), "api", &[("key", &bin)])
        )?,
        s.kubeseal(
            "active",
            "cluster-wide",
            "yaml",
            &secret(None, "shared", &[("a", b"1"), ("b", b"2")])
        )?,
    );
    s.write("k8s/overlays/prod/secrets.yaml", &secrets)?;
    s.kubeseal_to(
        "k8s/json/token.json",
        "active",
        "strict",
        &secret(Some(&ns), "token", &[("t", b"x")]),
    )?;
    // Not YAML at all (a draft, a template): copied as it is, with a warning.
    s.write("k8s/notes/draft.yaml", "title: [unfinished\n")?;
    let before = tree(&s.path("k8s"))?;

    let out = s.sigil(&migrate(&["active.key"], &["-f", "k8s", "-w", "out"]))?;
    ensure!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        stderr.starts_with("warning: k8s/notes/draft.yaml: invalid YAML: ")
            && stderr.contains("; copied unchanged\n"),
        "{stderr}"
    );
    assert_eq!(
        stderr.lines().last(),
        Some(
            "migrated 4 SealedSecrets (5 values) in 3 files into out; 2 files without one copied unchanged"
        )
    );
    assert_eq!(tree(&s.path("k8s"))?, before, "the input is untouched");
    let after = tree(&s.path("out"))?;
    assert_eq!(
        after.keys().collect::<Vec<_>>(),
        before.keys().collect::<Vec<_>>()
    );
    assert_eq!(
        after[Path::new("overlays/prod/kustomization.yaml")],
        kustomization.as_bytes()
    );
    assert_eq!(
        after[Path::new("notes/draft.yaml")],
        b"title: [unfinished\n"
    );
    let prod = documents(std::str::from_utf8(
        &after[Path::new("overlays/prod/secrets.yaml")],
    )?)?;
    assert_eq!(
        prod[0],
        serde_saphyr::from_str::<Value>(configmap)?,
        "other documents pass through"
    );
    let token: Value =
        serde_json::from_slice(&after[Path::new("json/token.json")]).context("JSON stays JSON")?;
    ensure!(token["apiVersion"] == "sigil.dev/v1");
    for doc in prod.iter().skip(1) {
        s.accepted(doc).await?;
    }

    let base = s.unseal("out/base/db.yaml")?;
    assert_data(&base, "db", &[("password", b"pw")])?;
    // sigil unseal takes SealedSecrets only: open the overlay's without the ConfigMap.
    let sealed: Vec<Value> = prod.into_iter().skip(1).collect();
    s.write(
        "prod-sealed.json",
        &serde_json::to_string(&json!({"apiVersion": "v1", "kind": "List", "items": sealed}))?,
    )?;
    let overlay = s.unseal("prod-sealed.json")?;
    assert_data(&overlay, "api", &[("key", &bin)])?;
    assert_data(&overlay, "shared", &[("a", b"1"), ("b", b"2")])?;
    assert_data(&s.unseal("out/json/token.json")?, "token", &[("t", b"x")])?;
    Ok(())
}

/// Runs a migration that must fail: exit status 1, nothing on stdout, and nothing under
/// `out` changed. Returns the first line of the error.
fn refused(s: &Setup, args: &[&str]) -> Result<String> {
    let out_dir = s.path("out");
    let before = if out_dir.exists() {
        Some(tree(&out_dir)?)
    } else {
        None
    };
    let out = s.sigil(args)?;
    let stderr = String::from_utf8(out.stderr)?;
    ensure!(
        out.status.code() == Some(1),
        "sigil {args:?}: {:?}\n{stderr}",
        out.status
    );
    ensure!(out.stdout.is_empty(), "sigil {args:?} wrote to stdout");
    let after = if out_dir.exists() {
        Some(tree(&out_dir)?)
    } else {
        None
    };
    ensure!(
        before == after,
        "sigil {args:?} changed {}",
        out_dir.display()
    );
    ensure!(
        stderr
            .lines()
            .nth(1)
            .is_some_and(|l| l.starts_with("hint: ")),
        "no hint: {stderr}"
    );
    Ok(stderr.lines().next().unwrap_or_default().to_owned())
}

#[tokio::test]
async fn a_wrong_key_writes_nothing() -> Result<()> {
    let s = Setup::new("migrate-wrong-key").await?;
    s.bitnami_key("active")?;
    s.bitnami_key("stranger")?;
    let ns = s.ctx.namespace.clone();
    s.kubeseal_to(
        "k8s/a.yaml",
        "active",
        "strict",
        &secret(Some(&ns), "a", &[("k", b"v")]),
    )?;
    s.kubeseal_to(
        "k8s/b.yaml",
        "stranger",
        "namespace-wide",
        &secret(Some(&ns), "b", &[("x", b"1"), ("y", b"2")]),
    )?;
    let args = migrate(&["active.key"], &["-f", "k8s", "-w", "out"]);
    assert_eq!(
        refused(&s, &args)?,
        format!(
            "error: k8s/b.yaml, document 1: Bitnami SealedSecret {ns}/b, key `x`: the --bitnami-key does not open it"
        )
    );
    ensure!(!s.path("out").exists(), "out was created");
    // An output directory that exists is left as it was.
    s.write("out/keep.txt", "kept")?;
    refused(&s, &args)?;
    assert_eq!(std::fs::read_to_string(s.path("out/keep.txt"))?, "kept");
    ensure!(
        !s.path("out/a.yaml").exists(),
        "a.yaml was written although b.yaml failed"
    );
    Ok(())
}

#[tokio::test]
async fn an_altered_value_writes_nothing() -> Result<()> {
    let s = Setup::new("migrate-altered").await?;
    s.bitnami_key("active")?;
    let ns = s.ctx.namespace.clone();
    let sealed = s.kubeseal(
        "active",
        "strict",
        "yaml",
        &secret(
            Some(&ns),
            "db",
            &[("password", b"s3cret"), ("user", b"admin")],
        ),
    )?;
    let value = documents(&sealed)?[0]["spec"]["encryptedData"]["user"]
        .as_str()
        .context("user")?
        .to_owned();
    let mut raw = STANDARD.decode(&value)?;
    // In the AES-GCM part (the tag at the end), then in the RSA part (after the prefix).
    for (at, error) in [
        (
            raw.len() - 1,
            "the value was altered: its session key opens but its data fails authentication",
        ),
        (10, "the --bitnami-key does not open it"),
    ] {
        raw[at] ^= 0x01;
        let text = sealed.replace(&value, &STANDARD.encode(&raw));
        raw[at] ^= 0x01;
        s.write("k8s/db.yaml", &text)?;
        let line = refused(&s, &migrate(&["active.key"], &["-f", "k8s", "-w", "out"]))?;
        assert_eq!(
            line,
            format!(
                "error: k8s/db.yaml, document 1: Bitnami SealedSecret {ns}/db, key `user`: {error}"
            )
        );
        ensure!(!s.path("out").exists(), "out was created");
    }
    // The namespace or name changed after sealing: the OAEP label no longer matches.
    s.write("k8s/db.yaml", &sealed.replace("name: db", "name: db2"))?;
    let line = refused(
        &s,
        &migrate(&["active.key"], &["-f", "k8s/db.yaml", "-w", "out/db.yaml"]),
    )?;
    assert_eq!(
        line,
        format!(
            "error: k8s/db.yaml, document 1: Bitnami SealedSecret {ns}/db2, key `password`: the --bitnami-key does not open it"
        )
    );
    if s.path("out").exists() {
        bail!("out was created");
    }
    Ok(())
}

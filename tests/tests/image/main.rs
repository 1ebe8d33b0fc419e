//! The container images of `scripts/image`, run with Debian's podman: each runs its
//! static binary FROM scratch as a numeric non-root user, holds exactly its binary, the
//! CA bundle and the user's files (no shell), and carries the version and revision; the
//! controller image becomes ready against the test apiserver with host networking, the
//! CLI image seals with the key it publishes and the controller unseals the result; the
//! API image answers /readyz; the chart defaults to the names the script tags.
//!
//! The first test to need the images runs `scripts/image` (a no-op when `scripts/test`
//! built them already) and loads every archive into podman's storage.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch, PatchParams};
use serde_json::{Value, json};
use sigil_tests::{TestContext, free_addr, http_get, repo_root};
use sigil_types::SealedSecret;

/// The workspace version, which the script tags and every binary prints.
const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The user every image runs as (the chart's runAsUser and runAsGroup).
const USER: &str = "65532:65532";

/// An image built by `scripts/image`, as listed in `target/images/digests.txt`.
#[derive(Debug)]
struct Image {
    /// Binary name, e.g. `sigil-controller`.
    name: String,
    /// `<registry>/<name>:<tag>`.
    reference: String,
    /// Manifest digest, `sha256:...`.
    digest: String,
    /// The OCI archive.
    archive: PathBuf,
}

fn images_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|dir| {
            if dir.is_absolute() {
                dir
            } else {
                repo_root().join(dir)
            }
        })
        .unwrap_or_else(|| repo_root().join("target"))
        .join("images")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Builds the images with their default names once per test process, and loads them.
fn images() -> &'static [Image] {
    static IMAGES: OnceLock<Vec<Image>> = OnceLock::new();
    IMAGES.get_or_init(|| {
        let out = Command::new(repo_root().join("scripts/image"))
            .env_remove("SIGIL_IMAGE_REGISTRY")
            .env_remove("SIGIL_IMAGE_TAG")
            .output()
            .expect("scripts/image runs");
        assert!(
            out.status.success(),
            "scripts/image: {}\n{}",
            out.status,
            text(&out.stderr)
        );
        let dir = images_dir();
        let digests = std::fs::read_to_string(dir.join("digests.txt")).expect("digests.txt");
        let images: Vec<Image> = digests
            .lines()
            .map(|line| {
                let (reference, digest) = line
                    .split_once('@')
                    .unwrap_or_else(|| panic!("digests.txt: `{line}` is not <ref>@<digest>"));
                let (repository, _tag) = reference.rsplit_once(':').unwrap();
                let name = repository.rsplit('/').next().unwrap().to_owned();
                Image {
                    archive: dir.join(format!("{name}.oci.tar")),
                    name,
                    reference: reference.to_owned(),
                    digest: digest.to_owned(),
                }
            })
            .collect();
        let names: Vec<&str> = images.iter().map(|i| i.name.as_str()).collect();
        assert_eq!(names, ["sigil-controller", "sigil-api", "sigil"]);
        for image in &images {
            assert!(
                image.reference.ends_with(&format!(":{VERSION}")),
                "{image:?}"
            );
            assert!(
                image.digest.starts_with("sha256:") && image.digest.len() == 71,
                "{image:?}"
            );
            podman_ok(&["load", "--quiet", "-i", image.archive.to_str().unwrap()]);
        }
        // The previous builds' images, untagged by this load (vfs keeps a full copy each).
        podman_ok(&["image", "prune", "--force"]);
        images
    })
}

fn image(name: &str) -> &'static Image {
    images().iter().find(|i| i.name == name).unwrap()
}

/// Debian's podman with the project's configuration (`scripts/image podman`).
fn podman(args: &[&str]) -> Output {
    Command::new(repo_root().join("scripts/image"))
        .arg("podman")
        .args(args)
        .output()
        .expect("scripts/image podman runs")
}

/// Like [`podman`], and panics with its output unless it succeeds; its stdout.
fn podman_ok(args: &[&str]) -> String {
    let out = podman(args);
    assert!(
        out.status.success(),
        "podman {args:?}: {}\n{}\n{}",
        out.status,
        text(&out.stdout),
        text(&out.stderr)
    );
    text(&out.stdout)
}

/// The entries of the image's layers: (mode and type as `ls -l` shows them,
/// `uid/gid`, path) for each.
fn layer_entries(image: &Image) -> BTreeMap<String, (String, String)> {
    let dir = tempfile::tempdir().unwrap();
    let extract = |path: &str| {
        let out = Command::new("tar")
            .args(["-xOf", image.archive.to_str().unwrap(), path])
            .output()
            .unwrap();
        assert!(out.status.success(), "{path} in {image:?}");
        out.stdout
    };
    let blob = |digest: &str| format!("blobs/sha256/{}", digest.trim_start_matches("sha256:"));
    let manifest: Value = serde_json::from_slice(&extract(&blob(&image.digest))).unwrap();
    let mut entries = BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        assert_eq!(
            layer["mediaType"],
            json!("application/vnd.oci.image.layer.v1.tar+gzip")
        );
        let path = dir.path().join("layer.tar.gz");
        std::fs::write(&path, extract(&blob(layer["digest"].as_str().unwrap()))).unwrap();
        let out = Command::new("tar")
            .args(["-tvz", "--numeric-owner", "-f", path.to_str().unwrap()])
            .output()
            .unwrap();
        assert!(out.status.success(), "listing a layer of {image:?}");
        for line in text(&out.stdout).lines() {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let path = fields.last().unwrap().trim_start_matches("./");
            let path = path.trim_end_matches('/');
            if !path.is_empty() && path != "." {
                entries.insert(
                    path.to_owned(),
                    (fields[0].to_owned(), fields[1].to_owned()),
                );
            }
        }
    }
    entries
}

#[test]
fn every_image_runs_its_static_binary_as_a_numeric_user_without_a_shell() {
    let head = Command::new("git")
        .args(["rev-parse", "HEAD"])
        .current_dir(repo_root())
        .output()
        .unwrap();
    let head = text(&head.stdout).trim().to_owned();
    for image in images() {
        let name = &image.name;
        let reference = image.reference.as_str();

        // The entrypoint is the binary.
        let out = podman_ok(&["run", "--rm", "--network", "none", reference, "--version"]);
        assert_eq!(out, format!("{name} {VERSION}\n"), "{reference}");

        let inspect: Value =
            serde_json::from_str(&podman_ok(&["image", "inspect", reference])).unwrap();
        let inspect = &inspect[0];
        assert_eq!(inspect["Digest"], json!(image.digest), "{reference}");
        assert_eq!(inspect["Os"], json!("linux"));
        assert_eq!(inspect["Architecture"], json!("amd64"));
        let config = &inspect["Config"];
        assert_eq!(config["User"], json!(USER), "{reference}");
        assert_eq!(
            config["Entrypoint"],
            json!([format!("/usr/local/bin/{name}")]),
            "{reference}"
        );
        assert!(config["Cmd"].is_null(), "{reference}: {}", config["Cmd"]);
        let labels = &config["Labels"];
        assert_eq!(labels["org.opencontainers.image.version"], json!(VERSION));
        assert_eq!(labels["org.opencontainers.image.title"], json!(name));
        let revision = labels["org.opencontainers.image.revision"]
            .as_str()
            .unwrap();
        assert!(
            revision == head || revision == format!("{head}-dirty"),
            "{reference}: revision {revision}, HEAD {head}"
        );
        assert!(
            labels["org.opencontainers.image.source"]
                .as_str()
                .is_some_and(|s| s.starts_with("https://")),
            "{reference}: {labels}"
        );

        // No shell to run.
        let out = podman(&[
            "run",
            "--rm",
            "--network",
            "none",
            "--entrypoint",
            "/bin/sh",
            reference,
            "-c",
            "true",
        ]);
        assert!(!out.status.success(), "{reference} ran /bin/sh");
        assert!(
            text(&out.stderr).contains("/bin/sh"),
            "{reference}: {}",
            text(&out.stderr)
        );

        // Exactly the binary, the CA bundle and the user's files, owned by root and
        // read-only to the user the image runs as.
        let entries = layer_entries(image);
        let binary = format!("usr/local/bin/{name}");
        let expected: BTreeMap<String, (String, String)> = [
            ("etc", "drwxr-xr-x"),
            ("etc/group", "-rw-r--r--"),
            ("etc/nsswitch.conf", "-rw-r--r--"),
            ("etc/passwd", "-rw-r--r--"),
            ("etc/ssl", "drwxr-xr-x"),
            ("etc/ssl/certs", "drwxr-xr-x"),
            ("etc/ssl/certs/ca-certificates.crt", "-rw-r--r--"),
            ("tmp", "drwxrwxrwt"),
            ("usr", "drwxr-xr-x"),
            ("usr/local", "drwxr-xr-x"),
            ("usr/local/bin", "drwxr-xr-x"),
            (binary.as_str(), "-rwxr-xr-x"),
        ]
        .into_iter()
        .map(|(path, mode)| (path.to_owned(), (mode.to_owned(), "0/0".to_owned())))
        .collect();
        assert_eq!(entries, expected, "{reference}");
    }
}

#[test]
fn the_charts_default_images_are_the_ones_the_script_tags() {
    let chart = repo_root().join("charts/sigil");
    let values: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("values.yaml")).unwrap())
            .unwrap();
    let meta: Value =
        serde_saphyr::from_str(&std::fs::read_to_string(chart.join("Chart.yaml")).unwrap())
            .unwrap();
    // An empty tag means the chart's appVersion.
    let app_version = meta["appVersion"].as_str().unwrap();
    for (name, image) in [
        ("sigil-controller", &values["image"]),
        ("sigil-api", &values["api"]["image"]),
    ] {
        let tag = match image["tag"].as_str() {
            Some("") | None => app_version,
            Some(tag) => tag,
        };
        let repository = image["repository"].as_str().unwrap();
        assert_eq!(
            format!("{repository}:{tag}"),
            crate::image(name).reference,
            "charts/sigil/values.yaml"
        );
    }
}

/// A container started with `podman run -d`, removed when dropped (its log printed
/// when the test fails).
struct Container {
    name: String,
}

impl Container {
    fn run(name: String, args: &[&str]) -> Self {
        let _ = podman(&["rm", "--force", "--time", "0", &name]);
        podman_ok(&[&["run", "--detach", "--name", &name], args].concat());
        Self { name }
    }

    fn running(&self) -> bool {
        podman_ok(&["inspect", "--format", "{{.State.Running}}", &self.name]).trim() == "true"
    }

    fn logs(&self) -> String {
        let out = podman(&["logs", &self.name]);
        format!("{}{}", text(&out.stdout), text(&out.stderr))
    }

    /// The process's real, effective, saved and filesystem uids and gids, as the host
    /// sees them.
    fn ids(&self) -> (String, String) {
        let pid = podman_ok(&["inspect", "--format", "{{.State.Pid}}", &self.name]);
        let status = std::fs::read_to_string(format!("/proc/{}/status", pid.trim())).unwrap();
        let field = |key: &str| {
            status
                .lines()
                .find_map(|l| l.strip_prefix(key))
                .unwrap()
                .split_whitespace()
                .collect::<Vec<_>>()
                .join(" ")
        };
        (field("Uid:"), field("Gid:"))
    }

    /// `podman stop` (SIGTERM, then SIGKILL after 30 s); the exit code.
    fn stop(&self) -> i64 {
        let start = Instant::now();
        podman_ok(&["stop", "--time", "30", &self.name]);
        let code = podman_ok(&["inspect", "--format", "{{.State.ExitCode}}", &self.name]);
        eprintln!("{}: stopped in {:?}", self.name, start.elapsed());
        code.trim().parse().unwrap()
    }

    /// Waits until `addr` answers `path` with 200 and returns the body; panics when the
    /// container exits or after a minute.
    async fn wait_ok(&self, addr: SocketAddr, path: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some((200, body)) = http_get(addr, path) {
                return body;
            }
            assert!(
                self.running(),
                "{} exited before {path} said 200",
                self.name
            );
            assert!(Instant::now() < deadline, "{path} not 200 within a minute");
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("--- {} log ---\n{}", self.name, self.logs());
        }
        let _ = podman(&["rm", "--force", "--time", "0", &self.name]);
    }
}

/// A copy of the test environment's kubeconfig that the image's user can read, naming
/// the apiserver `localhost` rather than 127.0.0.1, so that the static binary resolves
/// a name (through /etc/nsswitch.conf and the /etc/hosts podman provides).
fn kubeconfig_for_images(ctx: &TestContext, dir: &Path) -> PathBuf {
    let server = ctx.env.var("SIGIL_KUBE_SERVER").unwrap();
    assert!(server.starts_with("https://127.0.0.1:"), "{server}");
    let text = std::fs::read_to_string(ctx.env.kubeconfig_path()).unwrap();
    assert!(text.contains(server));
    let text = text.replace(server, &server.replace("127.0.0.1", "localhost"));
    let path = dir.join("kubeconfig");
    std::fs::write(&path, text).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
    path
}

/// The flags of `podman run` that put a container on the host's network with the
/// kubeconfig at /etc/sigil/kubeconfig.
fn host_network_with(kubeconfig: &Path) -> Vec<String> {
    vec![
        "--network".into(),
        "host".into(),
        "--volume".into(),
        format!("{}:/etc/sigil/kubeconfig:ro", kubeconfig.display()),
        "--env".into(),
        "KUBECONFIG=/etc/sigil/kubeconfig".into(),
    ]
}

#[tokio::test]
async fn the_controller_image_unseals_what_the_cli_image_sealed() {
    let ctx = TestContext::new("image-controller").await.unwrap();
    sigil_tests::install_crds(&ctx.kube).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for_images(&ctx, dir.path());
    let network = host_network_with(&kubeconfig);
    let network: Vec<&str> = network.iter().map(String::as_str).collect();

    let http = free_addr();
    let http_flag = http.to_string();
    let controller = Container::run(
        format!("sigil-image-test-{}", ctx.id),
        &[
            &network[..],
            &[
                &image("sigil-controller").reference,
                "--namespace",
                &ctx.namespace,
                "--watch-namespace",
                &ctx.namespace,
                "--http-addr",
                &http_flag,
                "--lease-duration",
                "3s",
                "--identity",
                "image-test",
            ],
        ]
        .concat(),
    );
    // Caches synced and the Lease held: it talked TLS to the apiserver, by name.
    controller.wait_ok(http, "/readyz").await;
    let uid = USER.split(':').next().unwrap();
    assert_eq!(
        controller.ids(),
        (
            format!("{uid} {uid} {uid} {uid}"),
            format!("{uid} {uid} {uid} {uid}")
        ),
        "the controller's uids and gids"
    );

    // The CLI image seals with the key the controller image published.
    let secret = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: {}\nstringData:\n  password: from-an-image\n",
        ctx.namespace
    );
    let mut child = Command::new(repo_root().join("scripts/image"))
        .args(["podman", "run", "--rm", "--interactive"])
        .args(&network)
        .args([
            &image("sigil").reference,
            "seal",
            "--controller-namespace",
            &ctx.namespace,
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(secret.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "sigil seal in its image: {}\n{}",
        out.status,
        text(&out.stderr)
    );
    let sealed: SealedSecret = serde_saphyr::from_str(&text(&out.stdout)).unwrap();
    Api::<SealedSecret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .patch(
            "db",
            &PatchParams::apply("sigil-image-test").force(),
            &Patch::Apply(&sealed),
        )
        .await
        .unwrap();
    let secrets: Api<Secret> = Api::namespaced(ctx.kube.clone(), &ctx.namespace);
    let deadline = Instant::now() + Duration::from_secs(30);
    let password = loop {
        let value = secrets
            .get_opt("db")
            .await
            .unwrap()
            .and_then(|s| s.data?.get("password").cloned());
        if let Some(value) = value {
            break value;
        }
        assert!(Instant::now() < deadline, "no Secret db within 30 s");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(password.0, b"from-an-image");

    // SIGTERM reaches it as PID 1, and it shuts down cleanly.
    assert_eq!(controller.stop(), 0, "{}", controller.logs());
}

#[tokio::test]
async fn the_api_image_is_ready_against_the_apiserver() {
    let ctx = TestContext::new("image-api").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = kubeconfig_for_images(&ctx, dir.path());
    let network = host_network_with(&kubeconfig);
    let network: Vec<&str> = network.iter().map(String::as_str).collect();
    let listen = free_addr();
    let listen_flag = listen.to_string();
    let api = Container::run(
        format!("sigil-image-test-{}", ctx.id),
        &[
            &network[..],
            &[
                &image("sigil-api").reference,
                "--insecure-http",
                "--listen",
                &listen_flag,
                "--namespace",
                &ctx.namespace,
            ],
        ]
        .concat(),
    );
    // Ready means the apiserver answered it.
    assert_eq!(api.wait_ok(listen, "/readyz").await, "ok\n");
    assert_eq!(api.wait_ok(listen, "/healthz").await, "ok\n");
    assert_eq!(api.stop(), 0, "{}", api.logs());
}

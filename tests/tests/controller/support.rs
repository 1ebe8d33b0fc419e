//! Running `sigil-controller` and `sigil` as a user would, against the test
//! environment, and waiting for what they should do.

use std::future::Future;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Event;
use kube::api::{Api, ListParams, Patch, PatchParams};
use kube::{Client, ResourceExt};
use sigil_tests::{TestContext, repo_root};
pub(crate) use sigil_tests::{free_addr, http_get};
use sigil_types::SealedSecret;

/// Builds the binaries once per test process (the test binary does not depend on them).
fn binary(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args([
                "build",
                "--quiet",
                "-p",
                "sigil-controller",
                "-p",
                "sigil-cli",
                "-p",
                "sigil-api",
                // Fail points stay off unless a test sets FAILPOINTS.
                "--features",
                "sigil-controller/failpoints",
            ])
            .current_dir(repo_root())
            .status()
            .expect("cargo runs");
        assert!(
            status.success(),
            "building sigil-controller, sigil-api and sigil failed"
        );
    });
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("target"));
    target.join("debug").join(name)
}

/// Installs the CRDs from the chart (idempotent; shared by every test).
pub(crate) async fn install_crds(client: &Client) {
    sigil_tests::install_crds(client)
        .await
        .expect("installing the chart's CRDs");
}

/// Polls `check` until it gives a value, or panics after `timeout`.
pub(crate) async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "condition not met within {timeout:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A server process, killed when dropped; its logs (stderr) and audit lines (stdout)
/// are kept in files for inspection, and their tail printed when a test fails.
pub(crate) struct Process {
    child: Child,
    name: &'static str,
    log: PathBuf,
    audit: PathBuf,
    _dir: tempfile::TempDir,
}

impl Process {
    fn spawn(name: &'static str, command: &mut Command) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join(format!("{name}.log"));
        let audit = dir.path().join("audit.jsonl");
        let child = command
            .env(
                "RUST_LOG",
                "debug,kube=info,hyper=info,tower=info,rustls=info,h2=info",
            )
            .stdout(std::fs::File::create(&audit).unwrap())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        Self {
            child,
            name,
            log,
            audit,
            _dir: dir,
        }
    }

    /// Everything the process logged so far.
    pub(crate) fn logs(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The audit lines (stdout) so far, parsed.
    pub(crate) fn audit(&self) -> Vec<serde_json::Value> {
        std::fs::read_to_string(&self.audit)
            .unwrap_or_default()
            .lines()
            .map(|line| serde_json::from_str(line).expect("audit lines are JSON"))
            .collect()
    }

    /// Waits for the process to exit on its own; its exit code.
    pub(crate) async fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let child = &mut self.child;
        eventually(timeout, || {
            let status = child.try_wait().unwrap();
            async move { status.map(|s| s.code()) }
        })
        .await
    }

    /// SIGKILL: a crash, with no chance to release the Lease.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// SIGTERM: the way Kubernetes stops a pod.
    pub(crate) fn terminate(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            let logs = self.logs();
            let tail: Vec<&str> = logs.lines().rev().take(80).collect();
            eprintln!("--- {} log (last lines) ---", self.name);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// A `sigil-controller` process, killed when dropped.
pub(crate) struct Controller {
    process: Process,
    /// Address of /healthz, /readyz, /metrics and the internal endpoints.
    pub http: SocketAddr,
}

impl std::ops::Deref for Controller {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for Controller {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl Controller {
    /// Starts a controller whose keys, Lease and SealedSecrets all live in the test's
    /// namespace.
    pub(crate) fn start(ctx: &TestContext, identity: &str, extra: &[&str]) -> Self {
        Self::start_with_env(ctx, identity, extra, &[])
    }

    /// Like [`Controller::start`], with extra environment variables (e.g. `FAILPOINTS`).
    pub(crate) fn start_with_env(
        ctx: &TestContext,
        identity: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        Self::start_in(ctx, &ctx.namespace, &ctx.namespace, identity, extra, env)
    }

    /// A controller that exits (status 86) once a Rotation has recorded `step`, to
    /// stand for a crash right after it.
    pub(crate) fn stopping_after(ctx: &TestContext, identity: &str, step: &str) -> Self {
        let point = format!("rotation-after-{step}=return");
        Self::start_with_env(ctx, identity, &[], &[("FAILPOINTS", &point)])
    }

    /// A controller whose keys and Lease live in `namespace` and which serves the
    /// objects of `watch_namespace`; sigil-api is `sigil-api` of `namespace`.
    pub(crate) fn start_in(
        ctx: &TestContext,
        namespace: &str,
        watch_namespace: &str,
        identity: &str,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Self {
        let http = free_addr();
        let process = Process::spawn(
            "controller",
            Command::new(binary("sigil-controller"))
                .args([
                    "--namespace",
                    namespace,
                    "--watch-namespace",
                    watch_namespace,
                    "--http-addr",
                    &http.to_string(),
                    "--lease-duration",
                    "3s",
                    "--identity",
                    identity,
                    "--api-service-account",
                    &format!("{namespace}/{API_SERVICE_ACCOUNT}"),
                ])
                .args(extra)
                .env("KUBECONFIG", ctx.env.kubeconfig_path())
                .envs(env.iter().copied()),
        );
        Self { process, http }
    }

    /// GET on the internal HTTP server: (status code, body).
    pub(crate) fn get(&self, path: &str) -> Option<(u16, String)> {
        http_get(self.http, path)
    }

    /// Waits until /readyz says ready.
    pub(crate) async fn wait_ready(&self) {
        eventually(Duration::from_secs(30), || async {
            (self.get("/readyz")?.0 == 200).then_some(())
        })
        .await;
    }
}

/// The ServiceAccount whose tokens the test controllers take as sigil-api's.
pub(crate) const API_SERVICE_ACCOUNT: &str = "sigil-api";

/// A token of the test namespace's `sigil-api` ServiceAccount (made when missing) for
/// `audience`: what the chart projects into sigil-api's pod for the controller.
pub(crate) async fn api_token(ctx: &TestContext, audience: &str) -> String {
    account_token(ctx, API_SERVICE_ACCOUNT, &[audience]).await
}

/// A token of ServiceAccount `name` of the test's namespace (made when missing) for
/// `audiences` (none: the API server's own).
pub(crate) async fn account_token(ctx: &TestContext, name: &str, audiences: &[&str]) -> String {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let accounts = Api::<ServiceAccount>::namespaced(ctx.kube.clone(), &ctx.namespace);
    if accounts.get_opt(name).await.unwrap().is_none() {
        ctx.create_service_account(name, &[]).await.unwrap();
    }
    let request = TokenRequest {
        spec: TokenRequestSpec {
            audiences: audiences.iter().map(|a| (*a).to_owned()).collect(),
            expiration_seconds: Some(3600),
            ..TokenRequestSpec::default()
        },
        ..TokenRequest::default()
    };
    accounts
        .create_token_request(name, &kube::api::PostParams::default(), &request)
        .await
        .unwrap()
        .status
        .unwrap()
        .token
}

/// A `sigil-api` process on plain HTTP, serving the test's namespace as Sigil's own and
/// calling `controller`'s internal endpoints with a token of its own ServiceAccount;
/// killed when dropped.
pub(crate) struct ApiServer {
    process: Process,
    /// Holds the token file sigil-api sends to the controller.
    _token_dir: Option<tempfile::TempDir>,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    addr: SocketAddr,
}

impl std::ops::Deref for ApiServer {
    type Target = Process;

    fn deref(&self) -> &Process {
        &self.process
    }
}

impl std::ops::DerefMut for ApiServer {
    fn deref_mut(&mut self) -> &mut Process {
        &mut self.process
    }
}

impl ApiServer {
    /// Starts the API on plain HTTP with the admin kubeconfig as its own identity, and
    /// waits until ready.
    pub(crate) async fn start(ctx: &TestContext, controller: &Controller, extra: &[&str]) -> Self {
        let token_dir = tempfile::tempdir().unwrap();
        let token_file = token_dir.path().join("token");
        std::fs::write(&token_file, api_token(ctx, "sigil-controller").await).unwrap();
        let mut api = Self::spawn(
            ctx,
            &format!("http://{}", controller.http),
            &[
                &["--insecure-http", "--controller-token-file"],
                &[token_file.to_str().unwrap()][..],
                extra,
            ]
            .concat(),
        );
        api._token_dir = Some(token_dir);
        eventually(Duration::from_secs(30), || async {
            (http_get(api.addr, "/readyz")?.0 == 200).then_some(())
        })
        .await;
        api
    }

    /// Starts the API with `flags` (e.g. `--tls-cert`), without waiting.
    pub(crate) fn spawn(ctx: &TestContext, controller_url: &str, flags: &[&str]) -> Self {
        let addr = free_addr();
        let process = Process::spawn(
            "sigil-api",
            Command::new(binary("sigil-api"))
                .args([
                    "--listen",
                    &addr.to_string(),
                    "--namespace",
                    &ctx.namespace,
                    "--controller-url",
                    controller_url,
                ])
                .args(flags)
                .env("KUBECONFIG", ctx.env.kubeconfig_path()),
        );
        Self {
            process,
            _token_dir: None,
            url: format!("http://{addr}"),
            addr,
        }
    }

    /// The port it listens on.
    pub(crate) fn port(&self) -> u16 {
        self.addr.port()
    }
}

/// Runs `sigil` with `stdin`, pointed at the test environment's cluster.
pub(crate) fn sigil(ctx: &TestContext, dir: &Path, args: &[&str], stdin: &str) -> Output {
    run_with_stdin(
        Command::new(binary("sigil"))
            .args(args)
            .current_dir(dir)
            .env("KUBECONFIG", ctx.env.kubeconfig_path()),
        stdin,
    )
}

/// Runs `command` to its end with `stdin`, its output captured.
pub(crate) fn run_with_stdin(command: &mut Command, stdin: &str) -> Output {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(stdin.as_bytes())
        .unwrap();
    child.wait_with_output().unwrap()
}

/// Like [`sigil`], asserting success; returns stdout.
pub(crate) fn sigil_ok(ctx: &TestContext, dir: &Path, args: &[&str], stdin: &str) -> String {
    let out = sigil(ctx, dir, args, stdin);
    assert!(
        out.status.success(),
        "sigil {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A Secret manifest with `stringData`.
pub(crate) fn secret_yaml(namespace: &str, name: &str, data: &[(&str, &str)]) -> String {
    let mut yaml = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: {name}\n  namespace: {namespace}\nstringData:\n"
    );
    for (key, value) in data {
        yaml.push_str(&format!("  {key}: \"{value}\"\n"));
    }
    yaml
}

/// Seals with the cluster's published key (no --cert) and returns the SealedSecret.
pub(crate) fn seal_with_cluster_key(ctx: &TestContext, dir: &Path, secret: &str) -> SealedSecret {
    let yaml = sigil_ok(
        ctx,
        dir,
        &["seal", "--controller-namespace", &ctx.namespace],
        secret,
    );
    serde_saphyr::from_str(&yaml).unwrap()
}

/// Creates or replaces a SealedSecret, as `kubectl apply --server-side` would.
pub(crate) async fn apply(ctx: &TestContext, sealed: &SealedSecret) {
    let api: Api<SealedSecret> = Api::namespaced(ctx.kube.clone(), &ctx.namespace);
    let mut sealed = sealed.clone();
    sealed.metadata.namespace = Some(ctx.namespace.clone());
    api.patch(
        &sealed.name_any(),
        &PatchParams::apply("gitops").force(),
        &Patch::Apply(&sealed),
    )
    .await
    .unwrap();
}

/// The `Synced` condition of a SealedSecret, once its status describes its generation.
pub(crate) async fn synced_condition(
    ctx: &TestContext,
    name: &str,
) -> Option<(String, String, String)> {
    let api: Api<SealedSecret> = Api::namespaced(ctx.kube.clone(), &ctx.namespace);
    let obj = api.get(name).await.ok()?;
    let status = obj.status?;
    if status.observed_generation != obj.metadata.generation {
        return None;
    }
    let c = status
        .conditions
        .into_iter()
        .find(|c| c.type_ == "Synced")?;
    Some((c.status, c.reason, c.message))
}

/// Waits until the `Synced` condition has `reason`; returns its message.
pub(crate) async fn wait_reason(ctx: &TestContext, name: &str, reason: &str) -> String {
    eventually(Duration::from_secs(30), || async {
        let (_, r, message) = synced_condition(ctx, name).await?;
        (r == reason).then_some(message)
    })
    .await
}

/// Flips a bit of a sealed value's last byte (its ciphertext's tag): a value altered
/// after sealing.
pub(crate) fn tamper(sealed: &str) -> String {
    use base64::Engine as _;
    use base64::engine::general_purpose::STANDARD;
    let mut bytes = STANDARD.decode(sealed).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0x01;
    STANDARD.encode(bytes)
}

/// Makes an offline key pair `NAME.key`/`NAME.pub` in `dir` and seals `secret` to it:
/// a SealedSecret this cluster cannot open until the key is imported.
pub(crate) fn seal_with_offline_key(
    ctx: &TestContext,
    dir: &Path,
    name: &str,
    secret: &str,
) -> SealedSecret {
    let (private, public) = (format!("{name}.key"), format!("{name}.pub"));
    sigil_ok(
        ctx,
        dir,
        &[
            "keys",
            "generate",
            "--private-out",
            &private,
            "--public-out",
            &public,
        ],
        "",
    );
    let yaml = sigil_ok(ctx, dir, &["seal", "--cert", &public], secret);
    serde_saphyr::from_str(&yaml).unwrap()
}

/// `sigil keys import` of `file` into the test's namespace; returns what it printed.
pub(crate) fn import_key(ctx: &TestContext, dir: &Path, file: &str) -> String {
    sigil_ok(
        ctx,
        dir,
        &[
            "keys",
            "import",
            "--controller-namespace",
            &ctx.namespace,
            "--private-key",
            file,
        ],
        "",
    )
}

/// The Events of the test's namespace once `check` holds for them: the controller
/// publishes its Events after it writes status (during a burst, once the burst is over).
pub(crate) async fn events_once(ctx: &TestContext, check: impl Fn(&[Event]) -> bool) -> Vec<Event> {
    eventually(Duration::from_secs(20), || async {
        let events = Api::<Event>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .list(&ListParams::default())
            .await
            .ok()?
            .items;
        check(&events).then_some(events)
    })
    .await
}

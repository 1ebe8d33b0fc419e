//! Talking to a cluster: the public keys for sealing, and key backup and import.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{ListParams, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Api, Client, Config};
use sigil_types::keys::{
    KEY_DATA, KEY_LABEL, PUBLIC_KEYS_CONFIGMAP, PUBLIC_KEYS_DATA, REVOKED_LABEL,
};
use zeroize::Zeroizing;

use crate::failure::Failure;

/// Which cluster, and where its controller keeps its keys.
#[derive(Args, Debug, Clone)]
pub(crate) struct ClusterArgs {
    /// Kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster).
    #[arg(long, value_name = "FILE")]
    pub(crate) kubeconfig: Option<PathBuf>,
    /// Kubeconfig context (default: the current context).
    #[arg(long, value_name = "NAME")]
    pub(crate) context: Option<String>,
    /// Namespace sigil-controller runs in.
    #[arg(long, value_name = "NS", default_value = "sigil-system")]
    pub(crate) controller_namespace: String,
}

/// Runs one cluster operation on a small runtime; the CLI is otherwise synchronous.
pub(crate) fn block_on<T>(work: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?
        .block_on(work)
}

async fn client(args: &ClusterArgs) -> anyhow::Result<Client> {
    let options = KubeConfigOptions {
        context: args.context.clone(),
        ..KubeConfigOptions::default()
    };
    let config = match (&args.kubeconfig, &args.context) {
        (Some(path), _) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|err| {
                Failure::new(format!("cannot read kubeconfig {}: {err}", path.display()))
                    .with_hint("pass a readable kubeconfig with --kubeconfig")
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &options).await
        }
        (None, Some(_)) => Config::from_kubeconfig(&options).await,
        (None, None) => Config::infer()
            .await
            .map_err(|err| kube::config::KubeconfigError::LoadContext(err.to_string())),
    }
    .map_err(|err| {
        Failure::new(format!("cannot load the cluster configuration: {err}"))
            .with_hint("pass --kubeconfig FILE and --context NAME, or set KUBECONFIG")
    })?;
    Client::try_from(config).context("cannot create a Kubernetes client")
}

fn api_failure(err: kube::Error, what: &str, args: &ClusterArgs) -> anyhow::Error {
    let ns = &args.controller_namespace;
    match &err {
        kube::Error::Api(status) if status.code == 404 => Failure::new(format!("{what}: not found in namespace {ns}"))
            .with_hint("is sigil-controller running there? Pass --controller-namespace NS (and --context) to point at it")
            .into(),
        kube::Error::Api(status) if status.code == 401 || status.code == 403 => Failure::new(format!("{what}: the cluster refused access ({})", status.message))
            .with_hint("check your credentials and RBAC (`kubectl auth can-i` for the resource)")
            .into(),
        _ => anyhow::Error::new(err).context(format!("{what}: the request failed")),
    }
}

/// The cluster's public key file, from the `sigil-public-keys` ConfigMap.
pub(crate) async fn public_keys(args: &ClusterArgs) -> anyhow::Result<String> {
    let api: Api<ConfigMap> = Api::namespaced(client(args).await?, &args.controller_namespace);
    let config_map = api
        .get(PUBLIC_KEYS_CONFIGMAP)
        .await
        .map_err(|err| api_failure(err, &format!("ConfigMap {PUBLIC_KEYS_CONFIGMAP}"), args))?;
    config_map
        .data
        .and_then(|mut data| data.remove(PUBLIC_KEYS_DATA))
        .filter(|text| !text.trim().is_empty())
        .ok_or_else(|| {
            Failure::new(format!(
                "ConfigMap {}/{PUBLIC_KEYS_CONFIGMAP} has no `{PUBLIC_KEYS_DATA}` keys yet",
                args.controller_namespace
            ))
            .with_hint("wait for sigil-controller to finish starting, then try again")
            .into()
        })
}

/// Every sealing key in the cluster as a private key file; revoked keys are written as
/// comments so an import does not bring them back.
pub(crate) async fn backup(args: &ClusterArgs) -> anyhow::Result<(Zeroizing<String>, usize)> {
    let api: Api<Secret> = Api::namespaced(client(args).await?, &args.controller_namespace);
    let secrets = api
        .list(&ListParams::default().labels(KEY_LABEL))
        .await
        .map_err(|err| api_failure(err, "sealing key Secrets", args))?;
    let mut text = Zeroizing::new(format!(
        "# sigil sealing keys of namespace {}: keep offline, they open every SealedSecret of the cluster\n",
        args.controller_namespace
    ));
    let mut count = 0;
    for secret in &secrets.items {
        let Some(line) = secret
            .data
            .as_ref()
            .and_then(|d| d.get(KEY_DATA))
            .and_then(|b| std::str::from_utf8(&b.0).ok())
        else {
            continue;
        };
        let revoked = secret
            .metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(REVOKED_LABEL))
            .is_some_and(|v| v == "true");
        for key_line in line.lines().filter(|l| l.starts_with("sigil.key.v1 ")) {
            if revoked {
                text.push_str("# revoked: ");
            } else {
                count += 1;
            }
            text.push_str(key_line);
            text.push('\n');
        }
    }
    Ok((text, count))
}

/// Stores keys in the cluster; a key already there is left as it is.
pub(crate) async fn import(
    args: &ClusterArgs,
    keys: &[sigil_core::PrivateKeyEntry],
) -> anyhow::Result<(usize, usize)> {
    let api: Api<Secret> = Api::namespaced(client(args).await?, &args.controller_namespace);
    let (mut created, mut present) = (0, 0);
    for entry in keys {
        let secret = sigil_types::keys::key_secret(entry, &args.controller_namespace);
        match api.create(&PostParams::default(), &secret).await {
            Ok(_) => created += 1,
            Err(kube::Error::Api(status)) if status.code == 409 => present += 1,
            Err(err) => {
                return Err(api_failure(
                    err,
                    &format!("create key Secret for {}", entry.key.id()),
                    args,
                ));
            }
        }
    }
    Ok((created, present))
}

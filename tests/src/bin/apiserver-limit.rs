//! How fast the API server itself takes the writes of a SealedSecret cold start: for each
//! of N SealedSecrets, one Secret of five keys created and one status applied, from a
//! lean client with many requests in flight. `bench/unseal.sh` runs it before the
//! controller starts and divides the controller's wall time by the best time here.
//!
//! Usage: apiserver-limit NAMESPACE N [CONCURRENCY...]
//! NAMESPACE must exist and be empty; KUBECONFIG names the cluster. Prints one line per
//! concurrency: `concurrency wall_seconds apiserver_cpu_seconds client_cpu_seconds`, the
//! CPU being what each spent during that pass: on a machine the API server saturates, a
//! cost per object compares runs that wall time alone cannot.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::api::{ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Api, Client, Resource};
use sigil_types::{SealedSecret, SealedSecretSpec};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

const KEYS: [&str; 5] = ["username", "password", "host", "port", "database"];
/// About the length of one value of `bench/unseal.sh` sealed to one key, base64.
const SEALED_LEN: usize = 128;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let usage = "usage: apiserver-limit NAMESPACE N [CONCURRENCY...]";
    let (namespace, count) = match args.as_slice() {
        [namespace, count, ..] => (
            namespace.clone(),
            count
                .parse::<usize>()
                .map_err(|_| anyhow::anyhow!("N must be a whole number, not {count:?}; {usage}"))?,
        ),
        _ => anyhow::bail!("{usage}"),
    };
    let concurrencies = args[2..]
        .iter()
        .map(|c| match c.parse::<usize>() {
            Ok(c) if c > 0 => Ok(c),
            _ => Err(anyhow::anyhow!(
                "CONCURRENCY must be a positive whole number, not {c:?}; {usage}"
            )),
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let concurrencies = if concurrencies.is_empty() {
        vec![64]
    } else {
        concurrencies
    };
    let client = Client::try_default().await?;
    let sealed: Api<SealedSecret> = Api::namespaced(client.clone(), &namespace);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &namespace);

    // The SealedSecrets exist before the clock starts, as in the controller's bench.
    let owners = run_all(count, 64, {
        let sealed = sealed.clone();
        move |i| {
            let sealed = sealed.clone();
            async move {
                let object = SealedSecret::new(&format!("limit-{i}"), sealed_spec());
                sealed.create(&PostParams::default(), &object).await
            }
        }
    })
    .await?;
    let owners = Arc::new(owners);

    for (pass, &concurrency) in concurrencies.iter().enumerate() {
        let apiserver_cpu = apiserver_cpu_seconds(&client).await?;
        let client_cpu = own_cpu_seconds();
        let started = Instant::now();
        run_all(count, concurrency, {
            let (sealed, secrets, owners) = (sealed.clone(), secrets.clone(), owners.clone());
            move |i| {
                let (sealed, secrets, owners) = (sealed.clone(), secrets.clone(), owners.clone());
                async move {
                    let owner = &owners[i];
                    let name = owner.metadata.name.clone().unwrap_or_default();
                    secrets
                        .create(&PostParams::default(), &secret(owner, pass, i))
                        .await?;
                    let status = serde_json::json!({
                        "apiVersion": "sigil.dev/v1",
                        "kind": "SealedSecret",
                        "status": status(owner, pass, i),
                    });
                    sealed
                        .patch_status(
                            &name,
                            &PatchParams::apply("apiserver-limit").force(),
                            &Patch::Apply(&status),
                        )
                        .await
                }
            }
        })
        .await?;
        let wall = started.elapsed().as_secs_f64();
        println!(
            "{concurrency} {wall:.3} {:.2} {:.2}",
            apiserver_cpu_seconds(&client).await? - apiserver_cpu,
            own_cpu_seconds() - client_cpu
        );
    }
    Ok(())
}

/// The API server's `process_cpu_seconds_total`, from its own metrics.
async fn apiserver_cpu_seconds(client: &Client) -> anyhow::Result<f64> {
    let metrics = client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    metrics
        .lines()
        .find_map(|line| line.strip_prefix("process_cpu_seconds_total "))
        .and_then(|value| value.trim().parse().ok())
        .ok_or_else(|| {
            anyhow::anyhow!("the API server's /metrics has no process_cpu_seconds_total")
        })
}

/// User and system CPU time of this process so far.
fn own_cpu_seconds() -> f64 {
    let spent = rustix::time::clock_gettime(rustix::time::ClockId::ProcessCPUTime);
    spent.tv_sec as f64 + spent.tv_nsec as f64 / 1e9
}

/// Runs `task(0..count)` with at most `concurrency` in flight; their results in order.
async fn run_all<T, F, Fut>(count: usize, concurrency: usize, task: F) -> anyhow::Result<Vec<T>>
where
    T: Send + 'static,
    F: Fn(usize) -> Fut,
    Fut: Future<Output = kube::Result<T>> + Send + 'static,
{
    let slots = Arc::new(Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..count {
        let slot = slots.clone().acquire_owned().await?;
        let work = task(i);
        tasks.spawn(async move {
            let result = work.await;
            drop(slot);
            (i, result)
        });
    }
    let mut results: Vec<Option<T>> = (0..count).map(|_| None).collect();
    while let Some(joined) = tasks.join_next().await {
        let (i, result) = joined?;
        results[i] = Some(result.map_err(|err| anyhow::anyhow!("object {i}: {err}"))?);
    }
    Ok(results.into_iter().flatten().collect())
}

fn sealed_spec() -> SealedSecretSpec {
    SealedSecretSpec {
        scope: Default::default(),
        encrypted_data: KEYS
            .iter()
            .map(|k| ((*k).to_owned(), "A".repeat(SEALED_LEN)))
            .collect(),
        template: None,
    }
}

/// A Secret like the controller's: five keys, its label, owned by the SealedSecret.
fn secret(owner: &SealedSecret, pass: usize, i: usize) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(format!("limit-{pass}-{i}")),
            labels: Some(
                [(
                    sigil_types::SEALED_SECRET_LABEL.to_owned(),
                    "true".to_owned(),
                )]
                .into(),
            ),
            owner_references: owner.controller_owner_ref(&()).map(|o| vec![o]),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(
            KEYS.iter()
                .map(|k| ((*k).to_owned(), ByteString(format!("{k}-{i}").into_bytes())))
                .collect(),
        ),
        ..Secret::default()
    }
}

/// A status like the controller's: Ready and Synced, the key, the generation.
fn status(owner: &SealedSecret, pass: usize, i: usize) -> serde_json::Value {
    let condition = |type_: &str| {
        serde_json::json!({
            "type": type_,
            "status": "True",
            "reason": "Unsealed",
            "message": format!("Secret limit-{pass}-{i} was written with the 5 unsealed keys"),
            "lastTransitionTime": jiff::Timestamp::now().strftime("%Y-%m-%dT%H:%M:%SZ").to_string(),
            "observedGeneration": owner.metadata.generation,
        })
    };
    serde_json::json!({
        "observedGeneration": owner.metadata.generation,
        "keyIds": ["0123456789abcdef"],
        "conditions": [condition("Ready"), condition("Synced")],
    })
}

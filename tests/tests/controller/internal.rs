//! The internal verify and re-seal endpoints that `sigil-api` calls, on a real controller:
//! the cluster's own judgement of sealed values, a re-seal to a rotated key that unseals
//! into the same Secret, and a standby that declines. No answer ever holds a value.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use serde_json::json;
use sigil_core::{Envelope, KeyId};
use sigil_tests::TestContext;
use sigil_types::api::{ErrorBody, VerifyReport};
use sigil_types::{Rotation, RotationPhase, SealedSecret};

use crate::support::*;
use crate::sync::apply_obj;

const PASSWORD: &str = "hunter2-internal";

/// POSTs `obj` as JSON to the controller's internal HTTP server, with `token` as the
/// bearer: (status code, body).
fn post(
    controller: &Controller,
    token: Option<&str>,
    path: &str,
    obj: &SealedSecret,
) -> (u16, String) {
    post_to(controller.http, token, path, obj)
}

fn post_to(
    addr: std::net::SocketAddr,
    token: Option<&str>,
    path: &str,
    obj: &SealedSecret,
) -> (u16, String) {
    let body = serde_json::to_string(obj).unwrap();
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(1)).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(120)))
        .unwrap();
    let authorization = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "POST {path} HTTP/1.0\r\nHost: localhost\r\n{authorization}Content-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let code = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_owned())
        .unwrap_or_default();
    (code, body)
}

fn verify(controller: &Controller, token: &str, obj: &SealedSecret) -> VerifyReport {
    let (code, body) = post(controller, Some(token), "/internal/v1/verify", obj);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(PASSWORD), "{body}");
    serde_json::from_str(&body).unwrap()
}

fn verdicts(report: &VerifyReport) -> Vec<(&str, bool, Option<&str>)> {
    report
        .keys
        .iter()
        .map(|k| (k.key.as_str(), k.opens, k.reason.as_deref()))
        .collect()
}

fn key_ids(obj: &SealedSecret) -> Vec<Vec<KeyId>> {
    obj.spec
        .encrypted_data
        .values()
        .map(|text| Envelope::decode(text).unwrap().key_ids())
        .collect()
}

async fn secret_data(ctx: &TestContext, name: &str) -> Option<Vec<(String, Vec<u8>)>> {
    let secret = Api::<Secret>::namespaced(ctx.kube.clone(), &ctx.namespace)
        .get_opt(name)
        .await
        .unwrap()?;
    Some(secret.data?.into_iter().map(|(k, v)| (k, v.0)).collect())
}

/// Rotates the sealing key with a Rotation, as `sigil keys rotate` asks the API to, and
/// returns the new key once the controller uses it.
async fn rotate_sealing_key(ctx: &TestContext) -> KeyId {
    apply_obj::<Rotation>(
        Api::namespaced(ctx.kube.clone(), &ctx.namespace),
        "Rotation",
        json!({"metadata": {"name": "new-key", "namespace": ctx.namespace},
               "spec": {"sealingKey": {}, "reason": "re-seal test"}}),
    )
    .await;
    let done = eventually(Duration::from_secs(60), || async {
        let obj = Api::<Rotation>::namespaced(ctx.kube.clone(), &ctx.namespace)
            .get("new-key")
            .await
            .ok()?;
        obj.status.as_ref()?.phase?.is_final().then_some(obj)
    })
    .await;
    let status = done.status.unwrap();
    assert_eq!(status.phase, Some(RotationPhase::Completed), "{status:?}");
    KeyId::parse(&status.new_version.unwrap()).unwrap()
}

#[tokio::test]
async fn verify_and_reseal_judge_values_as_the_cluster_does() {
    let ctx = TestContext::new("internal").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let token = api_token(&ctx, "sigil-controller").await;
    let dir = tempfile::tempdir().unwrap();
    let ns = ctx.namespace.clone();
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ns, "db", &[("password", PASSWORD), ("user", "admin")]),
    );

    // Sealed with the cluster's key for this place: every value opens.
    let report = verify(&controller, &token, &sealed);
    assert_eq!(
        (report.namespace.as_str(), report.name.as_str()),
        (ns.as_str(), "db")
    );
    assert_eq!(
        verdicts(&report),
        [("password", true, None), ("user", true, None)]
    );

    // A value sealed for another namespace, pasted in: reported, and nothing re-sealed.
    let elsewhere = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&format!("{ns}-elsewhere"), "db", &[("moved", PASSWORD)]),
    );
    let mut mixed = sealed.clone();
    mixed.spec.encrypted_data.insert(
        "moved".to_owned(),
        elsewhere.spec.encrypted_data["moved"].clone(),
    );
    let report = verify(&controller, &token, &mixed);
    assert_eq!(
        verdicts(&report),
        [
            ("moved", false, Some("WrongBinding")),
            ("password", true, None),
            ("user", true, None)
        ]
    );
    let message = report.keys[0].message.as_deref().unwrap();
    assert!(
        message.starts_with("key `moved`: does not authenticate for namespace")
            && message.contains("sigil seal -n"),
        "{message}"
    );
    let (code, body) = post(&controller, Some(&token), "/internal/v1/reseal", &mixed);
    assert_eq!(code, 422, "{body}");
    assert!(
        !body.contains(PASSWORD) && !body.contains("admin"),
        "{body}"
    );
    let err: ErrorBody = serde_json::from_str(&body).unwrap();
    assert_eq!(err.code, "invalid");
    assert!(
        err.message.contains("1 of 3 values did not open")
            && err.message.contains("key `moved` (WrongBinding)"),
        "{}",
        err.message
    );

    // Unsealed, then the sealing key is rotated: re-sealing the object as the cluster
    // holds it moves every value to the new key, and it unseals into the same Secret.
    apply(&ctx, &sealed).await;
    wait_reason(&ctx, "db", "Unsealed").await;
    let before = secret_data(&ctx, "db").await.unwrap();
    let old: Vec<Vec<KeyId>> = key_ids(&sealed);
    let new = rotate_sealing_key(&ctx).await;
    assert!(old.iter().all(|ids| !ids.contains(&new)));
    let stored = Api::<SealedSecret>::namespaced(ctx.kube.clone(), &ns)
        .get("db")
        .await
        .unwrap();
    let (code, body) = post(&controller, Some(&token), "/internal/v1/reseal", &stored);
    assert_eq!(code, 200, "{body}");
    assert!(!body.contains(PASSWORD), "{body}");
    let resealed: SealedSecret = serde_json::from_str(&body).unwrap();
    assert_eq!(key_ids(&resealed), [vec![new], vec![new]]);
    assert_eq!(resealed.metadata.name.as_deref(), Some("db"));
    assert_eq!(resealed.metadata.namespace.as_deref(), Some(ns.as_str()));
    assert!(
        resealed.metadata.resource_version.is_none()
            && resealed.metadata.uid.is_none()
            && resealed.metadata.managed_fields.is_none()
            && resealed.status.is_none(),
        "{:?}",
        resealed.metadata
    );
    let report = verify(&controller, &token, &resealed);
    assert!(report.all_open(), "{report:?}");

    apply(&ctx, &resealed).await;
    eventually(Duration::from_secs(30), || async {
        let obj = Api::<SealedSecret>::namespaced(ctx.kube.clone(), &ns)
            .get("db")
            .await
            .ok()?;
        let status = obj.status?;
        (status.observed_generation == obj.metadata.generation
            && status.key_ids == [new.to_string()])
        .then_some(())
    })
    .await;
    wait_reason(&ctx, "db", "Unsealed").await;
    assert_eq!(secret_data(&ctx, "db").await.unwrap(), before);
    assert!(!controller.logs().contains(PASSWORD));
}

#[tokio::test]
async fn a_standby_replica_declines_until_it_leads() {
    let ctx = TestContext::new("internal-ha").await.unwrap();
    install_crds(&ctx.kube).await;
    let leader = Controller::start(&ctx, "replica-a", &[]);
    leader.wait_ready().await;
    let standby = Controller::start(&ctx, "replica-b", &[]);
    let token = api_token(&ctx, "sigil-controller").await;
    eventually(Duration::from_secs(20), || async {
        (standby.get("/healthz")?.0 == 200).then_some(())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "db", &[("password", PASSWORD)]),
    );

    for path in ["/internal/v1/verify", "/internal/v1/reseal"] {
        let (code, body) = post(&standby, Some(&token), path, &sealed);
        assert_eq!(code, 503, "{path}: {body}");
        let err: ErrorBody = serde_json::from_str(&body).unwrap();
        assert_eq!(err.code, "unavailable", "{path}");
    }
    assert!(verify(&leader, &token, &sealed).all_open());
}

#[tokio::test]
async fn only_sigil_apis_own_token_opens_the_internal_endpoints() {
    let ctx = TestContext::new("internal-auth").await.unwrap();
    install_crds(&ctx.kube).await;
    let controller = Controller::start(&ctx, "a", &[]);
    controller.wait_ready().await;
    let dir = tempfile::tempdir().unwrap();
    let sealed = seal_with_cluster_key(
        &ctx,
        dir.path(),
        &secret_yaml(&ctx.namespace, "db", &[("password", PASSWORD)]),
    );
    // What any pod has: its own token for the API server; sigil-api's token for the API
    // server; another account's token for the controller's audience.
    let any_pod = ctx.service_account_token("workload").await.unwrap();
    let token = api_token(&ctx, "sigil-controller").await;
    let api_default_audience = account_token(&ctx, API_SERVICE_ACCOUNT, &[]).await;
    let other_for_controller = account_token(&ctx, "impostor", &["sigil-controller"]).await;
    let refused: [(&str, Option<&str>); 4] = [
        ("no token", None),
        ("a pod's own token", Some(&any_pod)),
        (
            "sigil-api's token for the API server",
            Some(&api_default_audience),
        ),
        (
            "another account's token for the controller",
            Some(&other_for_controller),
        ),
    ];
    for path in ["/internal/v1/verify", "/internal/v1/reseal"] {
        for (who, token) in refused {
            let (code, body) = post(&controller, token, path, &sealed);
            assert_eq!(code, 401, "{path} with {who}: {body}");
            let err: ErrorBody = serde_json::from_str(&body).unwrap();
            assert_eq!(err.code, "unauthenticated", "{path} with {who}");
            assert!(!body.contains(&sealed.spec.encrypted_data["password"]));
        }
    }
    assert!(verify(&controller, &token, &sealed).all_open());
    // Probes and scrapes stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        assert_eq!(
            controller.get(path).map(|(code, _)| code),
            Some(200),
            "{path}"
        );
    }
}

#[tokio::test]
async fn a_flood_of_verifies_leaves_the_probes_answering() {
    let ctx = TestContext::new("internal-flood").await.unwrap();
    install_crds(&ctx.kube).await;
    // One async worker, as the chart's one-CPU limit gives the controller.
    let controller = Controller::start_with_env(&ctx, "a", &[], &[("TOKIO_WORKER_THREADS", "1")]);
    controller.wait_ready().await;
    let token = api_token(&ctx, "sigil-controller").await;
    let dir = tempfile::tempdir().unwrap();
    let names: Vec<String> = (0..VALUES).map(|i| format!("k{i}")).collect();
    let data: Vec<(&str, &str)> = names.iter().map(|n| (n.as_str(), "v")).collect();
    let big = seal_with_cluster_key(&ctx, dir.path(), &secret_yaml(&ctx.namespace, "big", &data));
    let started = std::time::Instant::now();
    let flood: Vec<_> = (0..2)
        .map(|_| {
            let (big, token, addr) = (big.clone(), token.clone(), controller.http);
            std::thread::spawn(move || post_to(addr, Some(&token), "/internal/v1/verify", &big))
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let probe = controller.get("/healthz");
    let answered_at = started.elapsed();
    let still_flooding = flood.iter().any(|f| !f.is_finished());
    for f in flood {
        let (code, body) = f.join().unwrap();
        assert_eq!(code, 200, "{body}");
    }
    let flood_took = started.elapsed();
    eprintln!("healthz answered after {answered_at:?}; the flood took {flood_took:?}");
    assert_eq!(probe.map(|(code, _)| code), Some(200));
    assert!(
        still_flooding,
        "the flood ended before the probe was answered ({answered_at:?} of {flood_took:?}): the probe waited for it"
    );
}

/// Values in the flood's SealedSecret: enough X25519 work to keep a core busy for
/// seconds.
const VALUES: usize = 2000;

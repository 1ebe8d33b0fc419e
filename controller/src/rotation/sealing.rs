//! Rotating the sealing key: a new active key now (made once per Rotation: its Secret
//! carries the Rotation's UID), published for `sigil seal`, and a count of the
//! SealedSecrets that still use each older key, so that whoever rotates knows what
//! to re-seal before revoking the old key.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::ListParams;
use kube::{Api, ResourceExt};
use sigil_types::{Rotation, RotationPhase, SealingKeyUse};

use super::{Outcome, RotationContext, Stop, fail, status_of};
use crate::common::error::KubeContext;
use crate::sealed::keys;

use sigil_types::ROTATION_LABEL;

/// Records the active key as the base.
pub(super) fn resolve(obj: &Rotation, ctx: &RotationContext) -> Result<Outcome, Stop> {
    let active = ctx.keys.current().active.map(|(id, _)| id.to_string());
    let base = active.ok_or_else(|| {
        Stop::Wait(
            Duration::from_secs(1),
            "waiting for the controller to load its sealing keys".to_owned(),
        )
    })?;
    if obj.spec.is_dry_run() {
        let message = format!(
            "dry run: would make a new sealing key to replace {base} for sealing; nothing was changed"
        );
        let usage = usage(ctx, None);
        return Ok(Outcome::new(RotationPhase::Completed, message, move |s| {
            s.base_version = Some(base);
            s.sealing_keys = usage;
        }));
    }
    let message = format!("replacing the active sealing key {base}");
    Ok(Outcome::new(RotationPhase::Pending, message, move |s| {
        s.base_version = Some(base);
    }))
}

/// Makes the new key, unless an earlier attempt of this Rotation did.
pub(super) async fn stage(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let uid = obj.uid().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.config.namespace);
    let made = api
        .list(
            &ListParams::default().labels(&format!("{}, {ROTATION_LABEL}={uid}", keys::KEY_LABEL)),
        )
        .await
        .during(|| format!("list sealing key Secrets in {}", ctx.config.namespace))?;
    let id = match made.items.first() {
        Some(secret) => key_id_of(secret).ok_or_else(|| {
            fail(
                "InvalidStatus",
                format!("key Secret {} holds no valid key", secret.name_any()),
            )
        })?,
        None => {
            // Keys are ordered by creation second: a key made in the same second as
            // the active one might not win, so wait for the next second.
            if let Some((_, created)) = ctx.keys.current().active {
                let age = jiff::Timestamp::now().duration_since(created);
                if age.unsigned_abs() < Duration::from_millis(1100) {
                    tokio::time::sleep(Duration::from_millis(1100)).await;
                }
            }
            keys::generate(
                &ctx.client,
                &ctx.config.namespace,
                ctx.config.cluster_name.as_deref(),
                Some((ROTATION_LABEL, &uid)),
            )
            .await?
            .to_string()
        }
    };
    super::crash_point("rotation-after-write");
    let message = format!("made sealing key {id}");
    Ok(Outcome::new(RotationPhase::Staged, message, move |s| {
        s.new_version = Some(id);
    }))
}

/// Done when the new key is the active one and published.
pub(super) async fn promote(obj: &Rotation, ctx: &Arc<RotationContext>) -> Result<Outcome, Stop> {
    let new = status_of(obj).new_version.unwrap_or_default();
    for _ in 0..100 {
        let active = ctx.keys.current().active.map(|(id, _)| id.to_string());
        if active.as_deref() == Some(new.as_str()) {
            let message = format!(
                "sealing key {new} is active and published in ConfigMap {}/{}",
                ctx.config.namespace,
                keys::PUBLIC_KEYS_CONFIGMAP
            );
            return Ok(Outcome::new(RotationPhase::Promoted, message, |_| {}));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(Stop::Wait(
        Duration::from_secs(1),
        format!("waiting for sealing key {new} to become active"),
    ))
}

/// Lists how many SealedSecrets use each key.
pub(super) fn complete(obj: &Rotation, ctx: &RotationContext) -> Result<Outcome, Stop> {
    let new = status_of(obj).new_version;
    let usage = usage(ctx, new.as_deref());
    let older: u32 = usage
        .iter()
        .filter(|u| !u.active)
        .map(|u| u.sealed_secrets)
        .sum();
    let message = format!(
        "new SealedSecrets use key {}; {older} SealedSecret(s) still use older keys: re-seal them with `sigil seal` before revoking those",
        new.as_deref().unwrap_or("")
    );
    Ok(Outcome::new(RotationPhase::Completed, message, move |s| {
        s.sealing_keys = usage;
    }))
}

/// SealedSecrets per usable key, the active key first.
fn usage(ctx: &RotationContext, active: Option<&str>) -> Vec<SealingKeyUse> {
    let state = ctx.keys.current();
    let active = active
        .map(str::to_owned)
        .or_else(|| state.active.map(|(id, _)| id.to_string()));
    let mut counts: BTreeMap<String, u32> =
        state.keyring.ids().map(|id| (id.to_string(), 0)).collect();
    for sealed in ctx.sealed.state() {
        for id in sealed.status().iter().flat_map(|s| s.key_ids.iter()) {
            *counts.entry(id.to_string()).or_default() += 1;
        }
    }
    let mut usage: Vec<SealingKeyUse> = counts
        .into_iter()
        .map(|(key_id, sealed_secrets)| SealingKeyUse {
            active: Some(&key_id) == active.as_ref(),
            key_id,
            sealed_secrets,
        })
        .collect();
    usage.sort_by_key(|u| !u.active);
    usage
}

fn key_id_of(secret: &Secret) -> Option<String> {
    keys::KeyState::from_secrets([secret], None)
        .active
        .map(|(id, _)| id.to_string())
}

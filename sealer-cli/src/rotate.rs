//! `sigil rotate` and `sigil keys rotate`: ask sigil-api for a Rotation, then follow it
//! step by step until it completes or fails, or `--timeout` elapses.
//!
//! Text output: a heading, one line per finished step (`✗` marks the step a failed
//! Rotation stopped at), then a summary. Variable parts (names, durations, versions)
//! stay in fixed places so that a golden test can mask them:
//!
//! ```text
//! Rotation prod/db-3f9a1c2b4d5e6f70: ExternalSecret db, key password
//!   ✓ resolve         <1s  rotating vault key db (property password), now at version 3
//!   ✓ stage            1s  wrote version 4 of vault key db (property password)
//!   ✓ promote         <1s  version 4 of vault key db is current
//!   ✓ propagate        2s  2 Secret(s) of 1 ExternalSecret(s) hold version 4 of vault key db
//!   ✓ restart          1s  restarted 1 workload(s) that consume the refreshed Secrets
//!   ✓ complete        <1s  rotation completed
//! Completed in 4s
//!   version:          3 -> 4
//!   ExternalSecrets:  1 refreshed: prod/db
//!   Secrets:          2 refreshed: prod/db, prod/db-copy
//!   workloads:        1 restarted: Deployment prod/api
//! ```

use std::io::{self, IsTerminal, Write};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use jiff::SignedDuration;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use reqwest::StatusCode;
use sigil_types::api::SealingKeyRotationRequest;
use sigil_types::{
    ExternalSecretRef, Rotation, RotationPhase, RotationSpec, RotationStatus, RotationStep,
};

use std::path::Path;

use sigil_core::Binding;
use zeroize::Zeroizing;

use crate::api::{self, Api, Call, Reply};
use crate::cli::{Format, KeysRotateArgs, ReportFormat, RotateArgs, WaitArgs};
use crate::cluster;
use crate::document::{read_input, source_name};
use crate::failure::{EXIT_TIMEOUT, Failure};
use crate::output;
use crate::seal::recipients_in;

/// How often a running Rotation is read again.
const POLL: Duration = Duration::from_millis(500);
/// Names the summary lists before "and N more".
const LISTED: usize = 5;

pub(crate) fn run(args: &RotateArgs) -> anyhow::Result<()> {
    let base = api::server(&args.api)?;
    let namespace = match &args.namespace {
        Some(ns) => ns.clone(),
        None => api::default_namespace(&args.api)?,
    };
    let supplied = args
        .value_from_file
        .as_deref()
        .map(read_new_value)
        .transpose()?;
    let mut spec = RotationSpec {
        external_secret_ref: Some(ExternalSecretRef {
            name: args.external_secret.clone(),
            secret_key: args.key.clone(),
        }),
        restart: args.no_restart.then_some(false),
        reason: args.reason.clone(),
        dry_run: args.dry_run.then_some(true),
        ..RotationSpec::default()
    };
    let key = match &args.idempotency_key {
        Some(key) => key.clone(),
        None => api::fresh_idempotency_key()?,
    };
    cluster::block_on(async {
        let api = Api::connect(&args.api, base)?;
        if let Some(value) = &supplied {
            spec.value = Some(seal_new_value(&api, &namespace, args, value).await?);
        }
        let call = Call::create_rotation(&namespace, &key, &spec)?;
        let reply = api.send(&call).await?;
        follow(&api, reply, &args.wait, args.idempotency_key.as_deref()).await
    })
}

/// The most a supplied value may hold: credentials are short, and the Rotation's spec,
/// ciphertext included, must stay within sigil-api's body limit.
const MAX_SUPPLIED_VALUE: usize = 4096;

/// The value of `--value-from-file`, without one trailing newline.
fn read_new_value(path: &Path) -> anyhow::Result<Zeroizing<String>> {
    if path == Path::new("-") && io::stdin().is_terminal() {
        return Err(Failure::new(
            "--value-from-file is `-` (stdin), and stdin is a terminal: typing the value would show it",
        )
        .with_hint("pipe it in (e.g. `vendor-cli new-key | sigil rotate ... --value-from-file -`), or pass a file")
        .into());
    }
    let mut value = read_input(path)?;
    let name = source_name(path);
    for ending in ["\r\n", "\n"] {
        if value.ends_with(ending) {
            let kept = value.len() - ending.len();
            value.truncate(kept);
            break;
        }
    }
    if value.is_empty() {
        return Err(Failure::new(format!("--value-from-file {name} is empty"))
            .with_hint("pass the file that holds the new value")
            .into());
    }
    if value.len() > MAX_SUPPLIED_VALUE {
        return Err(Failure::new(format!(
            "--value-from-file {name} holds {} bytes; a supplied value is at most {MAX_SUPPLIED_VALUE}",
            value.len()
        ))
        .with_hint("a Rotation carries a credential, not a file: store large values another way")
        .into());
    }
    Ok(value)
}

/// `value` sealed to the cluster's public keys (as sigil-api serves them) for a Rotation
/// of this ExternalSecret and key only.
async fn seal_new_value(
    api: &Api,
    namespace: &str,
    args: &RotateArgs,
    value: &str,
) -> anyhow::Result<String> {
    let text = api.text(&Call::public_keys()).await?;
    let recipients = recipients_in(vec![("sigil-api /v1/publickeys".to_owned(), text)])?;
    let key = args.key.as_deref().unwrap_or_default();
    let binding = Binding::for_rotation(namespace, &args.external_secret, key)
        .map_err(|err| Failure::new(format!("cannot seal the new value: {err}")))?;
    sigil_core::seal(&recipients.keys, &binding, value.as_bytes())
        .map_err(|err| Failure::new(format!("cannot seal the new value: {err}")).into())
}

pub(crate) fn keys_rotate(args: &KeysRotateArgs) -> anyhow::Result<()> {
    let base = api::server(&args.api)?;
    let request = SealingKeyRotationRequest {
        reason: args.reason.clone(),
    };
    let call = Call::rotate_sealing_key(&api::fresh_idempotency_key()?, &request)?;
    cluster::block_on(async {
        let api = Api::connect(&args.api, base)?;
        let reply = api.send(&call).await?;
        follow(&api, reply, &args.wait, None).await
    })
}

/// Reports on a new Rotation: its name at once with `--no-wait`, else its steps as they
/// finish and a summary.
async fn follow(
    api: &Api,
    reply: Reply<Rotation>,
    wait: &WaitArgs,
    given_key: Option<&str>,
) -> anyhow::Result<()> {
    let mut rotation = reply.body;
    let (namespace, name) = identity(&rotation)?;
    if reply.status == StatusCode::OK
        && let Some(key) = given_key
    {
        eprintln!("note: --idempotency-key {key} was used before: showing the Rotation it created");
    }
    if wait.no_wait {
        return match wait.format {
            ReportFormat::Text => output::emit(None, &format!("{name}\n")),
            ReportFormat::Json => print_json(&rotation),
        };
    }
    let mut screen = Screen::new(wait.format);
    screen.line(&heading(&rotation))?;
    let mut progress = Progress::default();
    let deadline = tokio::time::Instant::now() + wait.timeout;
    let get = Call::get_rotation(&namespace, &name);
    loop {
        let status = status_of(&rotation);
        for line in progress.advance(&status) {
            screen.line(&line)?;
        }
        if phase_of(&status).is_final() {
            break;
        }
        screen.show(Progress::current(&status));
        let now = tokio::time::Instant::now();
        if now >= deadline {
            break;
        }
        tokio::time::sleep(POLL.min(deadline - now)).await;
        rotation = api
            .send(&get)
            .await
            .map_err(|err| {
                err.context(format!(
                    "lost track of Rotation {namespace}/{name}, which keeps running (follow it with `{}`)",
                    follow_command(&namespace, &name)
                ))
            })?
            .body;
    }
    screen.finish();
    match wait.format {
        ReportFormat::Text if phase_of(&status_of(&rotation)).is_final() => {
            let mut text = summary(&rotation).join("\n");
            text.push('\n');
            output::emit(None, &text)?;
        }
        ReportFormat::Text => {}
        ReportFormat::Json => print_json(&rotation)?,
    }
    conclude(&rotation, wait.timeout)
}

fn print_json(rotation: &Rotation) -> anyhow::Result<()> {
    let value = serde_json::to_value(rotation)?;
    output::emit(None, &output::render(&[value], Format::Json)?)
}

fn identity(rotation: &Rotation) -> anyhow::Result<(String, String)> {
    match (&rotation.metadata.namespace, &rotation.metadata.name) {
        (Some(namespace), Some(name)) => Ok((namespace.clone(), name.clone())),
        _ => Err(
            Failure::new("sigil-api answered with a Rotation that has no namespace or name")
                .with_hint("check that --server is sigil-api, and that sigil and sigil-api are the same version")
                .into(),
        ),
    }
}

fn follow_command(namespace: &str, name: &str) -> String {
    format!("kubectl get rotations.sigil.dev -n {namespace} {name}")
}

fn status_of(rotation: &Rotation) -> RotationStatus {
    rotation.status.clone().unwrap_or_default()
}

fn phase_of(status: &RotationStatus) -> RotationPhase {
    status.phase.unwrap_or_default()
}

fn ready(status: &RotationStatus) -> Option<&Condition> {
    status.conditions.iter().find(|c| c.type_ == "Ready")
}

/// Success only for a Rotation that completed (a dry run completes too); a failed one is
/// an error, and one still running when `--timeout` elapsed has its own exit status.
pub(crate) fn conclude(rotation: &Rotation, timeout: Duration) -> anyhow::Result<()> {
    let (namespace, name) = identity(rotation)?;
    let status = status_of(rotation);
    match phase_of(&status) {
        RotationPhase::Completed => Ok(()),
        RotationPhase::Failed => {
            let step = status.steps.last();
            let at = step.map_or_else(String::new, |s| format!(" at step {}", s.name));
            let reason = ready(&status).map_or_else(String::new, |c| format!(" ({})", c.reason));
            let message = step
                .and_then(|s| s.message.clone())
                .or_else(|| ready(&status).map(|c| c.message.clone()))
                .unwrap_or_default();
            Err(Failure::new(format!(
                "Rotation {namespace}/{name} failed{at}{reason}: {}",
                one_line(&message)
            ))
            .with_hint(format!(
                "a failed Rotation changes nothing more: fix the cause and rotate again; its Events: `kubectl describe rotations.sigil.dev -n {namespace} {name}`"
            ))
            .into())
        }
        phase => {
            let step = status
                .steps
                .last()
                .filter(|s| s.finished_at.is_none())
                .map_or_else(String::new, |s| format!(", step {}", s.name));
            Err(Failure::new(format!(
                "gave up waiting after {}: Rotation {namespace}/{name} is still running (phase {}{step})",
                human(SignedDuration::try_from(timeout).unwrap_or(SignedDuration::MAX)),
                phase.as_str()
            ))
            .with_hint(format!(
                "it goes on without sigil: follow it with `{}`, or wait longer next time with --timeout",
                follow_command(&namespace, &name)
            ))
            .with_exit(EXIT_TIMEOUT)
            .into())
        }
    }
}

/// Which of a Rotation's steps the user has seen finish.
#[derive(Default)]
pub(crate) struct Progress {
    shown: usize,
}

impl Progress {
    /// One line for each step that finished since the last call; only the last step of
    /// a status can be unfinished, so finished steps are a prefix.
    pub(crate) fn advance(&mut self, status: &RotationStatus) -> Vec<String> {
        let failed = phase_of(status) == RotationPhase::Failed;
        let mut lines = Vec::new();
        while let Some(step) = status.steps.get(self.shown) {
            let Some(finished) = &step.finished_at else {
                break;
            };
            let last = self.shown + 1 == status.steps.len();
            let mark = if failed && last { '✗' } else { '✓' };
            lines.push(step_line(mark, step, finished));
            self.shown += 1;
        }
        lines
    }

    /// The step under way (its index, so the spinner can tell a new step from a new
    /// message) and what it says.
    fn current(status: &RotationStatus) -> (usize, String) {
        match status.steps.last().filter(|s| s.finished_at.is_none()) {
            Some(step) => (
                status.steps.len() - 1,
                match &step.message {
                    Some(message) => format!("{}: {}", step.name, one_line(message)),
                    None => step.name.clone(),
                },
            ),
            None if status.steps.is_empty() => (
                0,
                "waiting for sigil-controller to take the Rotation".to_owned(),
            ),
            None => (status.steps.len(), "starting the next step".to_owned()),
        }
    }
}

/// The longest step name, `await-rollout`.
const STEP_WIDTH: usize = 13;

/// `  ✓ NAME      DURATION  MESSAGE`: name padded to the longest step name, duration
/// right-aligned in 5 columns.
fn step_line(mark: char, step: &RotationStep, finished: &Time) -> String {
    let took = human(finished.0.duration_since(step.started_at.0));
    let message = step.message.as_deref().map(one_line).unwrap_or_default();
    format!("  {mark} {:<STEP_WIDTH$} {took:>5}  {message}", step.name)
        .trim_end()
        .to_owned()
}

/// Step messages may carry a provider's multi-line error; the output keeps one line per
/// step.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `<1s`, `42s`, `3m07s`, `1h05m`: status times have whole seconds only.
fn human(duration: SignedDuration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        ..1 => "<1s".to_owned(),
        1..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{:02}s", seconds / 60, seconds % 60),
        _ => format!("{}h{:02}m", seconds / 3600, seconds % 3600 / 60),
    }
}

/// From the Rotation's creation (or its first step) to the end of its last step.
fn total(rotation: &Rotation, status: &RotationStatus) -> Option<SignedDuration> {
    let start = rotation
        .metadata
        .creation_timestamp
        .as_ref()
        .or_else(|| status.steps.first().map(|s| &s.started_at))?;
    let end = status.steps.last()?.finished_at.as_ref()?;
    Some(end.0.duration_since(start.0))
}

/// `Rotation NS/NAME: TARGET (NOTES)`.
fn heading(rotation: &Rotation) -> String {
    let namespace = rotation.metadata.namespace.as_deref().unwrap_or_default();
    let name = rotation.metadata.name.as_deref().unwrap_or_default();
    let target = match &rotation.spec.external_secret_ref {
        Some(ExternalSecretRef {
            name,
            secret_key: Some(key),
        }) => format!("ExternalSecret {name}, key {key}"),
        Some(reference) => format!("ExternalSecret {}", reference.name),
        None => "the sealing key".to_owned(),
    };
    let mut notes = Vec::new();
    if rotation.spec.is_dry_run() {
        notes.push("dry run");
    }
    if !rotation.spec.restart_or_default() {
        notes.push("no restart");
    }
    let notes = if notes.is_empty() {
        String::new()
    } else {
        format!(" ({})", notes.join(", "))
    };
    format!("Rotation {namespace}/{name}: {target}{notes}")
}

fn field(label: &str, value: impl std::fmt::Display) -> String {
    format!("  {:<16}  {value}", format!("{label}:"))
}

/// `N VERB: a, b, c and 2 more`, or `none VERB`.
fn listed(names: &[String], verb: &str) -> String {
    if names.is_empty() {
        return format!("none {verb}");
    }
    let mut text = format!(
        "{} {verb}: {}",
        names.len(),
        names[..names.len().min(LISTED)].join(", ")
    );
    if names.len() > LISTED {
        text.push_str(&format!(" and {} more", names.len() - LISTED));
    }
    text
}

/// What a finished Rotation did (or, for a dry run, would do).
pub(crate) fn summary(rotation: &Rotation) -> Vec<String> {
    let status = status_of(rotation);
    let dry = rotation.spec.is_dry_run();
    let phase = phase_of(&status);
    let took = total(rotation, &status).map_or_else(String::new, |d| format!(" in {}", human(d)));
    let mut lines = vec![match phase {
        RotationPhase::Completed if dry => format!("Dry run completed{took}: nothing was changed"),
        RotationPhase::Failed => format!(
            "Failed{took}{}",
            ready(&status).map_or_else(String::new, |c| format!(" ({})", c.reason))
        ),
        phase => format!("{}{took}", phase.as_str()),
    }];
    let version = match (&status.base_version, &status.new_version) {
        (Some(base), _) if dry => format!("{base}, a new one would replace it"),
        (Some(base), Some(new)) => format!("{base} -> {new}"),
        (None, Some(new)) => format!("{new} (new)"),
        (Some(base), None) => format!("{base}, unchanged"),
        (None, None) => "unchanged".to_owned(),
    };
    let (refreshed, restarted) = if dry {
        ("would be refreshed", "would be restarted")
    } else {
        ("refreshed", "restarted")
    };
    if rotation.spec.sealing_key.is_some() {
        lines.push(field("sealing key", version));
        if !status.sealing_keys.is_empty() {
            let uses: Vec<String> = status
                .sealing_keys
                .iter()
                .map(|k| {
                    let active = if k.active { " (active)" } else { "" };
                    format!("{}{active}: {} SealedSecrets", k.key_id, k.sealed_secrets)
                })
                .collect();
            lines.push(field("keys in use", uses.join("; ")));
        }
        let older: u32 = status
            .sealing_keys
            .iter()
            .filter(|k| !k.active)
            .map(|k| k.sealed_secrets)
            .sum();
        if phase == RotationPhase::Completed && !dry && older > 0 {
            lines.push(field(
                "next",
                format!("re-seal the {older} SealedSecrets on older keys with `sigil reseal`, then revoke those keys"),
            ));
        }
        return lines;
    }
    lines.push(field("version", version));
    lines.push(field(
        "ExternalSecrets",
        listed(&status.external_secrets, refreshed),
    ));
    lines.push(field("Secrets", listed(&status.secrets, refreshed)));
    let workloads = if rotation.spec.restart_or_default() {
        let names: Vec<String> = status
            .workloads
            .iter()
            .map(|w| format!("{} {}/{}", w.kind, w.namespace, w.name))
            .collect();
        listed(&names, restarted)
    } else {
        "not restarted (--no-restart)".to_owned()
    };
    lines.push(field("workloads", workloads));
    lines
}

/// Where progress goes: finished steps as lines (text output only), and on a terminal a
/// spinner with the step under way.
struct Screen {
    lines: bool,
    spinner: Option<ProgressBar>,
    step: Option<usize>,
}

impl Screen {
    fn new(format: ReportFormat) -> Self {
        let lines = format == ReportFormat::Text;
        // JSON output keeps stdout for the Rotation alone: its spinner goes to stderr.
        let (terminal, target) = if lines {
            (io::stdout().is_terminal(), ProgressDrawTarget::stdout())
        } else {
            (io::stderr().is_terminal(), ProgressDrawTarget::stderr())
        };
        let spinner = terminal.then(|| {
            let spinner = ProgressBar::with_draw_target(None, target);
            spinner.set_style(
                ProgressStyle::with_template("  {spinner} {wide_msg} {elapsed}")
                    .expect("the spinner template is valid"),
            );
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        Self {
            lines,
            spinner,
            step: None,
        }
    }

    fn line(&self, text: &str) -> anyhow::Result<()> {
        if !self.lines {
            return Ok(());
        }
        match &self.spinner {
            Some(spinner) => spinner.println(text),
            None => writeln!(io::stdout().lock(), "{text}")?,
        }
        Ok(())
    }

    fn show(&mut self, (step, message): (usize, String)) {
        let Some(spinner) = &self.spinner else {
            return;
        };
        if self.step != Some(step) {
            self.step = Some(step);
            spinner.reset_elapsed();
        }
        spinner.set_message(message);
    }

    fn finish(&self) {
        if let Some(spinner) = &self.spinner {
            spinner.finish_and_clear();
        }
    }
}

impl Drop for Screen {
    fn drop(&mut self) {
        self.finish();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sigil_types::{SealingKeyTarget, SealingKeyUse, WorkloadRef};

    fn at(second: i64) -> Time {
        Time(jiff::Timestamp::from_second(1_700_000_000 + second).unwrap())
    }

    fn step(name: &str, started: i64, finished: Option<i64>, message: &str) -> RotationStep {
        RotationStep {
            name: name.to_owned(),
            started_at: at(started),
            finished_at: finished.map(at),
            message: Some(message.to_owned()),
        }
    }

    fn ready_condition(reason: &str, message: &str) -> Condition {
        Condition {
            type_: "Ready".to_owned(),
            status: "False".to_owned(),
            reason: reason.to_owned(),
            message: message.to_owned(),
            last_transition_time: at(0),
            observed_generation: None,
        }
    }

    fn rotation(spec: RotationSpec, status: RotationStatus) -> Rotation {
        let mut rotation = Rotation::new("db-x7k2q", spec);
        rotation.metadata.namespace = Some("prod".to_owned());
        rotation.metadata.creation_timestamp = Some(at(0));
        rotation.status = Some(status);
        rotation
    }

    fn external(key: Option<&str>) -> RotationSpec {
        RotationSpec {
            external_secret_ref: Some(ExternalSecretRef {
                name: "db".to_owned(),
                secret_key: key.map(str::to_owned),
            }),
            ..RotationSpec::default()
        }
    }

    /// The statuses a poller sees for a Rotation that completes: steps appear unfinished,
    /// then finished; a poll may also miss a step's unfinished state altogether.
    fn completed_sequence() -> Vec<RotationStatus> {
        let resolve = step(
            "resolve",
            0,
            Some(0),
            "rotating vault key db, now at version 3",
        );
        let stage = step("stage", 0, Some(1), "wrote version 4 of vault key db");
        let promote = step(
            "promote",
            1,
            Some(1),
            "version 4 of vault key db is current",
        );
        let propagate = step(
            "propagate",
            1,
            Some(75),
            "1 Secret(s) of 1 ExternalSecret(s) hold version 4",
        );
        let restart = step("restart", 75, Some(76), "restarted 1 workload(s)");
        let complete = step("complete", 76, Some(76), "rotation completed");
        let with = |phase, steps: Vec<RotationStep>| RotationStatus {
            phase: Some(phase),
            steps,
            ..RotationStatus::default()
        };
        vec![
            RotationStatus::default(),
            with(
                RotationPhase::Pending,
                vec![step("resolve", 0, None, "waiting for the lock")],
            ),
            with(
                RotationPhase::Promoted,
                vec![resolve.clone(), stage.clone(), promote.clone()],
            ),
            with(
                RotationPhase::Promoted,
                vec![
                    resolve.clone(),
                    stage.clone(),
                    promote.clone(),
                    step("propagate", 1, None, "waiting for 1 ExternalSecret"),
                ],
            ),
            RotationStatus {
                base_version: Some("3".to_owned()),
                new_version: Some("4".to_owned()),
                external_secrets: vec!["prod/db".to_owned()],
                secrets: vec!["prod/db".to_owned()],
                workloads: vec![WorkloadRef {
                    kind: "Deployment".to_owned(),
                    namespace: "prod".to_owned(),
                    name: "api".to_owned(),
                }],
                ..with(
                    RotationPhase::Completed,
                    vec![resolve, stage, promote, propagate, restart, complete],
                )
            },
        ]
    }

    fn render(statuses: &[RotationStatus]) -> Vec<String> {
        let mut progress = Progress::default();
        statuses.iter().flat_map(|s| progress.advance(s)).collect()
    }

    #[test]
    fn progress_prints_each_finished_step_once() {
        assert_eq!(
            render(&completed_sequence()),
            [
                "  ✓ resolve         <1s  rotating vault key db, now at version 3",
                "  ✓ stage            1s  wrote version 4 of vault key db",
                "  ✓ promote         <1s  version 4 of vault key db is current",
                "  ✓ propagate     1m14s  1 Secret(s) of 1 ExternalSecret(s) hold version 4",
                "  ✓ restart          1s  restarted 1 workload(s)",
                "  ✓ complete        <1s  rotation completed",
            ]
        );
    }

    #[test]
    fn the_failed_step_is_marked_and_its_message_kept_on_one_line() {
        let statuses = [RotationStatus {
            phase: Some(RotationPhase::Failed),
            steps: vec![
                step("resolve", 0, Some(0), "rotating vault key db"),
                step("stage", 0, Some(2), "could not write:\n  permission denied"),
            ],
            ..RotationStatus::default()
        }];
        assert_eq!(
            render(&statuses),
            [
                "  ✓ resolve         <1s  rotating vault key db",
                "  ✗ stage            2s  could not write: permission denied",
            ]
        );
    }

    #[test]
    fn the_spinner_shows_the_step_under_way() {
        let sequence = completed_sequence();
        assert_eq!(
            Progress::current(&sequence[0]),
            (
                0,
                "waiting for sigil-controller to take the Rotation".to_owned()
            )
        );
        assert_eq!(
            Progress::current(&sequence[3]),
            (3, "propagate: waiting for 1 ExternalSecret".to_owned())
        );
    }

    #[test]
    fn summary_of_a_completed_rotation() {
        let done = rotation(
            external(Some("password")),
            completed_sequence().pop().unwrap(),
        );
        assert_eq!(
            heading(&done),
            "Rotation prod/db-x7k2q: ExternalSecret db, key password"
        );
        assert_eq!(
            summary(&done),
            [
                "Completed in 1m16s",
                "  version:          3 -> 4",
                "  ExternalSecrets:  1 refreshed: prod/db",
                "  Secrets:          1 refreshed: prod/db",
                "  workloads:        1 restarted: Deployment prod/api",
            ]
        );
    }

    #[test]
    fn summary_of_a_dry_run_and_of_no_restart() {
        let spec = RotationSpec {
            dry_run: Some(true),
            restart: Some(false),
            ..external(None)
        };
        let status = RotationStatus {
            phase: Some(RotationPhase::Completed),
            base_version: Some("3".to_owned()),
            steps: vec![step("resolve", 0, Some(1), "dry run: would write ...")],
            secrets: (1..=7).map(|i| format!("prod/db-{i}")).collect(),
            ..RotationStatus::default()
        };
        let plan = rotation(spec, status);
        assert_eq!(
            heading(&plan),
            "Rotation prod/db-x7k2q: ExternalSecret db (dry run, no restart)"
        );
        assert_eq!(
            summary(&plan),
            [
                "Dry run completed in 1s: nothing was changed",
                "  version:          3, a new one would replace it",
                "  ExternalSecrets:  none would be refreshed",
                "  Secrets:          7 would be refreshed: prod/db-1, prod/db-2, prod/db-3, prod/db-4, prod/db-5 and 2 more",
                "  workloads:        not restarted (--no-restart)",
            ]
        );
        assert!(conclude(&plan, Duration::from_secs(60)).is_ok());
    }

    #[test]
    fn summary_of_a_sealing_key_rotation() {
        let spec = RotationSpec {
            sealing_key: Some(SealingKeyTarget {}),
            ..RotationSpec::default()
        };
        let status = RotationStatus {
            phase: Some(RotationPhase::Completed),
            base_version: Some("k1".to_owned()),
            new_version: Some("k2".to_owned()),
            steps: vec![step("complete", 0, Some(3), "new SealedSecrets use key k2")],
            sealing_keys: vec![
                SealingKeyUse {
                    key_id: "k2".to_owned(),
                    active: true,
                    sealed_secrets: 0,
                },
                SealingKeyUse {
                    key_id: "k1".to_owned(),
                    active: false,
                    sealed_secrets: 12,
                },
            ],
            ..RotationStatus::default()
        };
        let done = rotation(spec, status);
        assert_eq!(heading(&done), "Rotation prod/db-x7k2q: the sealing key");
        assert_eq!(
            summary(&done),
            [
                "Completed in 3s",
                "  sealing key:      k1 -> k2",
                "  keys in use:      k2 (active): 0 SealedSecrets; k1: 12 SealedSecrets",
                "  next:             re-seal the 12 SealedSecrets on older keys with `sigil reseal`, then revoke those keys",
            ]
        );
    }

    #[test]
    fn exit_status_follows_the_phase() {
        let timeout = Duration::from_secs(600);
        let completed = rotation(external(None), completed_sequence().pop().unwrap());
        assert!(conclude(&completed, timeout).is_ok());

        let failed = rotation(
            external(None),
            RotationStatus {
                phase: Some(RotationPhase::Failed),
                steps: vec![step(
                    "stage",
                    0,
                    Some(2),
                    "could not write: permission denied",
                )],
                conditions: vec![ready_condition("StoreNotReady", "could not write")],
                ..RotationStatus::default()
            },
        );
        assert_eq!(
            summary(&failed),
            [
                "Failed in 2s (StoreNotReady)",
                "  version:          unchanged",
                "  ExternalSecrets:  none refreshed",
                "  Secrets:          none refreshed",
                "  workloads:        none restarted",
            ]
        );
        let err = conclude(&failed, timeout).unwrap_err();
        assert_eq!(crate::failure::exit_code(&err), 1);
        assert_eq!(
            err.to_string(),
            "Rotation prod/db-x7k2q failed at step stage (StoreNotReady): could not write: permission denied"
        );

        let running = rotation(external(None), completed_sequence()[3].clone());
        let err = conclude(&running, timeout).unwrap_err();
        assert_eq!(crate::failure::exit_code(&err), EXIT_TIMEOUT);
        assert_eq!(
            err.to_string(),
            "gave up waiting after 10m00s: Rotation prod/db-x7k2q is still running (phase Promoted, step propagate)"
        );
        let hint = err.downcast_ref::<Failure>().unwrap().hint().unwrap();
        assert!(hint.contains("`kubectl get rotations.sigil.dev -n prod db-x7k2q`"));
    }

    #[test]
    fn durations_read_like_a_person_writes_them() {
        let cases = [
            (0, "<1s"),
            (59, "59s"),
            (60, "1m00s"),
            (3599, "59m59s"),
            (3660, "1h01m"),
        ];
        for (seconds, text) in cases {
            assert_eq!(human(SignedDuration::from_secs(seconds)), text);
        }
    }
}

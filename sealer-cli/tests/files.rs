//! What `sigil` does to files: key file modes, never overwriting, merging in place,
//! sealing directories, and seal → unseal round trips through the binary.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use std::io::Write;

fn sigil(dir: &Path, args: &[&str], stdin: &[u8]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(args)
        .current_dir(dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("sigil runs");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

fn ok(dir: &Path, args: &[&str], stdin: &[u8]) -> String {
    let out = sigil(dir, args, stdin);
    assert!(
        out.status.success(),
        "sigil {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn keys(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let (private, public) = (format!("{name}.key"), format!("{name}.pub"));
    ok(
        dir,
        &[
            "keys",
            "generate",
            "--private-out",
            &private,
            "--public-out",
            &public,
            "--cluster",
            name,
        ],
        b"",
    );
    (dir.join(private), dir.join(public))
}

const SECRET: &str = "apiVersion: v1\nkind: Secret\nmetadata:\n  name: db\n  namespace: prod\nstringData:\n  password: s3cret\n  username: admin\n  host: db.prod\n";

#[test]
fn generated_keys_are_private_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let (private, public) = keys(dir.path(), "prod");
    assert_eq!(
        fs::metadata(&private).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let private_text = fs::read_to_string(&private).unwrap();
    let public_text = fs::read_to_string(&public).unwrap();
    assert!(public_text.starts_with("sigil.pub.v1 "));
    assert!(public_text.contains(" cluster=prod created=20"));
    assert!(private_text.contains("\nsigil.key.v1 "));

    let again = sigil(
        dir.path(),
        &[
            "keys",
            "generate",
            "--private-out",
            "prod.key",
            "--public-out",
            "new.pub",
        ],
        b"",
    );
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("prod.key already exists"));
    assert_eq!(fs::read_to_string(&private).unwrap(), private_text);
    assert!(
        !dir.path().join("new.pub").exists(),
        "nothing half-made is left behind"
    );
}

#[test]
fn sealed_for_two_clusters_each_opens_it() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path(), "eu");
    keys(dir.path(), "us");
    let sealed = ok(
        dir.path(),
        &["seal", "--cert", "eu.pub", "--cert", "us.pub"],
        SECRET.as_bytes(),
    );
    for key in ["eu.key", "us.key"] {
        let secret = ok(
            dir.path(),
            &["unseal", "--recovery-key", key],
            sealed.as_bytes(),
        );
        assert!(secret.contains("password: czNjcmV0"), "{secret}");
        assert!(secret.contains("username: YWRtaW4="), "{secret}");
    }
}

#[test]
fn merge_into_reseals_only_the_given_keys_in_place() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path(), "prod");
    ok(
        dir.path(),
        &["seal", "--cert", "prod.pub", "-w", "db.yaml"],
        SECRET.as_bytes(),
    );
    let before = fs::read_to_string(dir.path().join("db.yaml")).unwrap();

    let update = "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: prod}\nstringData: {password: rotated, api-token: t}\n";
    ok(
        dir.path(),
        &["seal", "--cert", "prod.pub", "--merge-into", "db.yaml"],
        update.as_bytes(),
    );
    let after = fs::read_to_string(dir.path().join("db.yaml")).unwrap();

    let line = |text: &str, key: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(&format!("{key}:")))
            .map(str::to_owned)
    };
    for unchanged in ["username", "host"] {
        assert_eq!(
            line(&before, unchanged),
            line(&after, unchanged),
            "{unchanged}"
        );
    }
    assert_ne!(line(&before, "password"), line(&after, "password"));
    let keys: Vec<_> = after
        .lines()
        .skip_while(|l| !l.contains("encryptedData"))
        .skip(1)
        .map(|l| l.trim().split(':').next().unwrap().to_owned())
        .collect();
    assert_eq!(
        keys,
        ["api-token", "host", "password", "username"],
        "sorted"
    );
    let opened = ok(
        dir.path(),
        &["unseal", "--recovery-key", "prod.key", "-f", "db.yaml"],
        b"",
    );
    assert!(opened.contains("password: cm90YXRlZA=="), "{opened}");

    let wrong = "apiVersion: v1\nkind: Secret\nmetadata: {name: other, namespace: prod}\nstringData: {password: x}\n";
    let out = sigil(
        dir.path(),
        &["seal", "--cert", "prod.pub", "--merge-into", "db.yaml"],
        wrong.as_bytes(),
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("metadata.name is `db` but the Secret's is `other`")
    );
    assert_eq!(
        fs::read_to_string(dir.path().join("db.yaml")).unwrap(),
        after
    );
}

#[test]
fn merge_into_keeps_every_recipient_unless_told_which_to_drop() {
    let dir = tempfile::tempdir().unwrap();
    let (prod_key, _) = keys(dir.path(), "prod");
    keys(dir.path(), "breakglass");
    ok(
        dir.path(),
        &[
            "seal",
            "--cert",
            "prod.pub",
            "--cert",
            "breakglass.pub",
            "-w",
            "db.yaml",
        ],
        SECRET.as_bytes(),
    );
    let before = fs::read_to_string(dir.path().join("db.yaml")).unwrap();
    let update = "apiVersion: v1\nkind: Secret\nmetadata: {name: db, namespace: prod}\nstringData: {password: rotated}\n";
    let merge = |extra: &[&str]| {
        let mut args = vec!["seal", "--cert", "prod.pub", "--merge-into", "db.yaml"];
        args.extend(extra);
        sigil(dir.path(), &args, update.as_bytes())
    };

    let refused = merge(&[]);
    assert_eq!(refused.status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(dir.path().join("db.yaml")).unwrap(),
        before,
        "a refused merge leaves the file as it was"
    );

    // With both certs the break-glass key still opens the merged value.
    ok(
        dir.path(),
        &[
            "seal",
            "--cert",
            "prod.pub",
            "--cert",
            "breakglass.pub",
            "--merge-into",
            "db.yaml",
        ],
        update.as_bytes(),
    );
    let opened = ok(
        dir.path(),
        &[
            "unseal",
            "--recovery-key",
            "breakglass.key",
            "-f",
            "db.yaml",
        ],
        b"",
    );
    assert!(opened.contains("password: cm90YXRlZA=="), "{opened}");

    // Dropping is said, with the key dropped.
    let dropped = merge(&["--drop-recipients"]);
    assert!(dropped.status.success());
    let stderr = String::from_utf8_lossy(&dropped.stderr);
    let breakglass = fs::read_to_string(dir.path().join("breakglass.pub")).unwrap();
    let breakglass_id = breakglass.split(' ').nth(1).unwrap();
    assert!(
        stderr.contains(&format!("password no longer open with {breakglass_id}")),
        "{stderr}"
    );
    let opened = ok(
        dir.path(),
        &[
            "unseal",
            "--recovery-key",
            prod_key.to_str().unwrap(),
            "-f",
            "db.yaml",
        ],
        b"",
    );
    assert!(opened.contains("password: cm90YXRlZA=="), "{opened}");
}

#[test]
fn a_directory_is_sealed_into_a_mirror_tree_or_not_at_all() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path(), "prod");
    fs::create_dir_all(dir.path().join("in/apps/api")).unwrap();
    fs::write(dir.path().join("in/db.yaml"), SECRET).unwrap();
    fs::write(dir.path().join("in/apps/api/token.json"), r#"{"apiVersion":"v1","kind":"Secret","metadata":{"name":"token","namespace":"api"},"stringData":{"token":"t"}}"#).unwrap();
    fs::write(dir.path().join("in/README.md"), "not a manifest").unwrap();
    let sealed = sigil(
        dir.path(),
        &["seal", "--cert", "prod.pub", "-f", "in", "-w", "out"],
        b"",
    );
    assert!(sealed.status.success());
    assert_eq!(
        String::from_utf8_lossy(&sealed.stderr),
        "note: skipped 1 files under in that are not .yaml, .yml or .json: README.md\nsealed 2 files into out\n"
    );
    assert!(
        fs::read_to_string(dir.path().join("out/db.yaml"))
            .unwrap()
            .contains("kind: SealedSecret")
    );
    // A JSON file gives JSON.
    let token: serde_json::Value = serde_json::from_str(
        &fs::read_to_string(dir.path().join("out/apps/api/token.json")).unwrap(),
    )
    .unwrap();
    assert_eq!(token["metadata"]["name"], "token");
    assert!(!dir.path().join("out/README.md").exists());

    // A source gone: its SealedSecret stays, unless --prune removes it (and says so);
    // a file under -w that is not a SealedSecret is never removed.
    fs::remove_file(dir.path().join("in/apps/api/token.json")).unwrap();
    fs::write(
        dir.path().join("out/kustomization.yaml"),
        "resources: [db.yaml]\n",
    )
    .unwrap();
    ok(
        dir.path(),
        &["seal", "--cert", "prod.pub", "-f", "in", "-w", "out"],
        b"",
    );
    assert!(dir.path().join("out/apps/api/token.json").exists());
    let pruned = sigil(
        dir.path(),
        &[
            "seal", "--cert", "prod.pub", "-f", "in", "-w", "out", "--prune",
        ],
        b"",
    );
    assert!(pruned.status.success());
    assert!(
        String::from_utf8_lossy(&pruned.stderr).contains(
            "--prune: removed 1 SealedSecret files whose source is gone: apps/api/token.json"
        ),
        "{}",
        String::from_utf8_lossy(&pruned.stderr)
    );
    assert!(!dir.path().join("out/apps/api/token.json").exists());
    assert!(dir.path().join("out/kustomization.yaml").exists());

    fs::write(
        dir.path().join("in/apps/broken.yaml"),
        "apiVersion: v1\nkind: Secret\nmetadata: {name: x, namespace: y}\n",
    )
    .unwrap();
    let out = sigil(
        dir.path(),
        &["seal", "--cert", "prod.pub", "-f", "in", "-w", "out2"],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("in/apps/broken.yaml, document 1: the Secret has no data")
    );
    assert!(!dir.path().join("out2").exists(), "no partial tree");
}

#[test]
fn a_large_directory_is_sealed_file_by_file_and_every_bad_file_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path(), "prod");
    fs::create_dir_all(dir.path().join("in")).unwrap();
    for i in 0..200 {
        let secret = SECRET.replace("name: db", &format!("name: db-{i:03}"));
        fs::write(dir.path().join(format!("in/s-{i:03}.yaml")), secret).unwrap();
    }
    let out = sigil(
        dir.path(),
        &["seal", "--cert", "prod.pub", "-f", "in", "-w", "out"],
        b"",
    );
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        "sealed 200 files into out\n"
    );
    for i in 0..200 {
        let sealed = fs::read_to_string(dir.path().join(format!("out/s-{i:03}.yaml"))).unwrap();
        assert!(
            sealed.contains(&format!("name: db-{i:03}\n")),
            "out/s-{i:03}.yaml"
        );
    }
    for i in [0, 101, 199] {
        let file = format!("out/s-{i:03}.yaml");
        let opened = ok(
            dir.path(),
            &["unseal", "--recovery-key", "prod.key", "-f", &file],
            b"",
        );
        assert!(opened.contains(&format!("name: db-{i:03}\n")), "{file}");
    }

    // Every bad file is reported, in order, whichever thread gets there first.
    for bad in [150, 40, 199] {
        fs::write(
            dir.path().join(format!("in/s-{bad:03}.yaml")),
            "apiVersion: v1\nkind: Secret\nmetadata: {name: x, namespace: y}\n",
        )
        .unwrap();
    }
    for _ in 0..3 {
        let out = sigil(
            dir.path(),
            &["seal", "--cert", "prod.pub", "-f", "in", "-w", "out2"],
            b"",
        );
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.starts_with(
                "error: 3 of 200 files could not be sealed, so nothing was written:\n  in/s-040.yaml, document 1: the Secret has no data"
            ) && stderr.contains("\n  in/s-150.yaml, document 1")
                && stderr.contains("\n  in/s-199.yaml, document 1"),
            "{stderr}"
        );
        assert!(!dir.path().join("out2").exists(), "no partial tree");
    }
}

#[test]
fn the_input_file_is_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path(), "prod");
    fs::write(dir.path().join("db.yaml"), SECRET).unwrap();
    let out = sigil(
        dir.path(),
        &[
            "seal",
            "--cert",
            "prod.pub",
            "-f",
            "db.yaml",
            "-w",
            "./db.yaml",
        ],
        b"",
    );
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(
        fs::read_to_string(dir.path().join("db.yaml")).unwrap(),
        SECRET
    );
}

#[test]
fn a_closed_pipe_is_not_an_error() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path(), "prod");
    let docs: String = (0..2000)
        .map(|i| SECRET.replace("name: db", &format!("name: db{i}")) + "---\n")
        .collect();
    let mut child = Command::new(env!("CARGO_BIN_EXE_sigil"))
        .args(["seal", "--cert", "prod.pub"])
        .current_dir(dir.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(docs.as_bytes())
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stderr.is_empty());
}

/// Runs `sigil args` with a terminal as stdin (util-linux `script` makes one).
fn on_a_terminal(dir: &Path, args: &str) -> String {
    let out = Command::new("script")
        .args([
            "-qec",
            &format!("{} {args}", env!("CARGO_BIN_EXE_sigil")),
            "/dev/null",
        ])
        .current_dir(dir)
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn reading_from_a_terminal_is_refused_with_what_to_pipe() {
    let dir = tempfile::tempdir().unwrap();
    keys(dir.path(), "prod");
    let manifests = on_a_terminal(dir.path(), "seal --cert prod.pub");
    assert!(
        manifests.contains("no input: -f is `-` (stdin), and stdin is a terminal")
            && manifests.contains("hint: pass -f FILE"),
        "{manifests}"
    );
    let raw = on_a_terminal(
        dir.path(),
        "seal --raw --cert prod.pub -n prod --name db --key password",
    );
    assert!(
        raw.contains("--raw reads the value from stdin, and stdin is a terminal"),
        "{raw}"
    );
}

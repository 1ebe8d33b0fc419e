//! `sigil keys`: key files for bootstrap and break-glass.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use anyhow::Context as _;
use sigil_core::{KeyAttributes, PrivateKey, PrivateKeyEntry, PublicKeyEntry};

use crate::cli::{BackupArgs, CertArgs, GenerateArgs, ImportArgs};
use crate::cluster;
use crate::failure::{Failure, io_failure};

fn create_new(path: &Path, mode: u32) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|err| {
            if err.kind() == std::io::ErrorKind::AlreadyExists {
                Failure::new(format!("{} already exists", path.display()))
                    .with_hint("sigil never overwrites a key file: choose another path, or move the old file away first")
                    .into()
            } else {
                io_failure("create", path, &err).into()
            }
        })
}

pub(crate) fn generate(args: &GenerateArgs) -> anyhow::Result<()> {
    if args.private_out == args.public_out {
        return Err(
            Failure::new("--private-out and --public-out name the same file")
                .with_hint("write the private and the public key to two files")
                .into(),
        );
    }
    let key = PrivateKey::generate()?;
    let attributes = KeyAttributes {
        cluster: args.cluster.clone(),
        created: Some(
            jiff::Timestamp::now()
                .round(jiff::Unit::Second)
                .context("cannot read the clock")?
                .to_string(),
        ),
    };
    if let Some(cluster) = &args.cluster
        && (cluster.is_empty() || cluster.contains(char::is_whitespace) || cluster.contains('#'))
    {
        return Err(
            Failure::new(format!("--cluster `{cluster}` is not a usable name"))
                .with_hint("use a name without spaces or `#`, e.g. prod-eu-1")
                .into(),
        );
    }
    let public = PublicKeyEntry {
        key: *key.public_key(),
        attributes: attributes.clone(),
    };
    let private = PrivateKeyEntry { key, attributes };

    let mut private_file = create_new(&args.private_out, 0o600)?;
    let public_file = create_new(&args.public_out, 0o644);
    let mut public_file = match public_file {
        Ok(file) => file,
        Err(err) => {
            // Leave nothing half-made behind: the private key is useless without its
            // public half on record.
            drop(private_file);
            let _ = std::fs::remove_file(&args.private_out);
            return Err(err);
        }
    };
    let private_text = private.to_line();
    private_file
        .write_all(
            format!(
                "# sigil private sealing key: keep offline; it opens every value sealed to {}\n",
                private.key.id()
            )
            .as_bytes(),
        )
        .and_then(|()| private_file.write_all(private_text.as_bytes()))
        .and_then(|()| private_file.write_all(b"\n"))
        .and_then(|()| private_file.sync_all())
        .map_err(|err| io_failure("write", &args.private_out, &err))?;
    public_file
        .write_all(format!("{}\n", public.to_line()).as_bytes())
        .and_then(|()| public_file.sync_all())
        .map_err(|err| io_failure("write", &args.public_out, &err))?;
    println!("key ID: {}", private.key.id());
    println!(
        "private key: {} (mode 0600: keep it offline)",
        args.private_out.display()
    );
    println!(
        "public key: {} (seal with `sigil seal --cert {}`)",
        args.public_out.display(),
        args.public_out.display()
    );
    Ok(())
}

pub(crate) fn cert(args: &CertArgs) -> anyhow::Result<()> {
    let text = cluster::block_on(cluster::public_keys(&args.cluster))?;
    crate::output::emit(args.out.as_deref(), &text)
}

pub(crate) fn backup(args: &BackupArgs) -> anyhow::Result<()> {
    let (text, count) = cluster::block_on(cluster::backup(&args.cluster))?;
    let mut file = create_new(&args.out, 0o600)?;
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|err| io_failure("write", &args.out, &err))?;
    eprintln!(
        "wrote {count} sealing keys of namespace {} to {} (mode 0600: keep it offline)",
        args.cluster.controller_namespace,
        args.out.display()
    );
    Ok(())
}

pub(crate) fn import(args: &ImportArgs) -> anyhow::Result<()> {
    let path = &args.private_key;
    let text = zeroize::Zeroizing::new(std::fs::read_to_string(path).map_err(|err| {
        Failure::new(format!("cannot read key file {}: {err}", path.display()))
            .with_hint("pass a private key file from `sigil keys generate` or `sigil keys backup`")
    })?);
    let keys = sigil_core::keyfile::parse_private(&text).map_err(|err| {
        Failure::new(format!("key file {}: {err}", path.display()))
            .with_hint("a private key file has lines `sigil.key.v1 <key-id> <base64 key>`")
    })?;
    let (created, present) = cluster::block_on(cluster::import(&args.cluster, &keys))?;
    println!(
        "imported {created} keys into namespace {} ({present} already there)",
        args.cluster.controller_namespace
    );
    Ok(())
}

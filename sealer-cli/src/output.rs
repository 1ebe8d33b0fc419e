//! Writing documents: YAML or JSON, keys in sorted order so Git diffs show only what
//! changed, to stdout or atomically to a file.

use std::io::Write;
use std::path::Path;

use anyhow::Context as _;
use serde_json::Value;
use zeroize::Zeroizing;

use crate::cli::Format;
use crate::failure::{fail, io_failure};

/// Where a command that reads `-f` and writes `-w` puts its output.
pub(crate) enum Destination<'a> {
    /// One input (a file or stdin) into `-w FILE`, or stdout without one.
    File(Option<&'a Path>),
    /// A directory input, file by file into the same relative paths under `-w OUTDIR`.
    Directory(&'a Path),
}

/// Checks `-f input` and `-w out` before anything is read: a directory needs an output
/// directory, and sigil never writes over its input. `verb` says what becomes of each
/// file of a directory ("sealed") and `written` what the command writes
/// ("SealedSecrets"), for the hints.
pub(crate) fn destination<'a>(
    input: &Path,
    out: Option<&'a Path>,
    verb: &str,
    written: &str,
) -> anyhow::Result<Destination<'a>> {
    if !input.is_dir() {
        if let Some(out) = out
            && same_file(out, input)
        {
            return fail(
                format!("-w {} is the input file", out.display()),
                format!("write the {written} to another file; sigil never overwrites its input"),
            );
        }
        return Ok(Destination::File(out));
    }
    let Some(out_dir) = out else {
        return fail(
            format!(
                "{} is a directory, and no -w OUTDIR was given",
                input.display()
            ),
            format!("pass -w OUTDIR: each file is {verb} into the same relative path under OUTDIR"),
        );
    };
    if same_file(out_dir, input) {
        return fail(
            format!("-w {} is the input directory", out_dir.display()),
            format!("write the {written} to another directory; sigil never overwrites its input"),
        );
    }
    Ok(Destination::Directory(out_dir))
}

fn same_file(a: &Path, b: &Path) -> bool {
    match (a.canonicalize(), b.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Renders documents; map keys come out sorted because `serde_json::Map` is ordered.
pub(crate) fn render(documents: &[Value], format: Format) -> anyhow::Result<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::new());
    match format {
        Format::Yaml => {
            for (index, document) in documents.iter().enumerate() {
                if index > 0 {
                    out.push_str("---\n");
                }
                // Block scalars would fold long base64 values into `>-` blocks.
                let options = serde_saphyr::ser_options! { prefer_block_scalars: false };
                let yaml = serde_saphyr::to_string_with_options(document, options)
                    .context("cannot write YAML")?;
                out.push_str(&yaml);
            }
        }
        Format::Json => {
            let list;
            let value = match documents {
                [one] => one,
                many => {
                    list = serde_json::json!({"apiVersion": "v1", "kind": "List", "items": many});
                    &list
                }
            };
            out.push_str(&serde_json::to_string_pretty(value).context("cannot write JSON")?);
            out.push('\n');
        }
    }
    Ok(out)
}

/// Writes to `out`, or to stdout when there is none.
pub(crate) fn emit(out: Option<&Path>, text: &str) -> anyhow::Result<()> {
    match out {
        Some(path) => write_atomic(path, text),
        None => {
            let mut stdout = std::io::stdout().lock();
            stdout.write_all(text.as_bytes())?;
            stdout.flush()?;
            Ok(())
        }
    }
}

/// Replaces `path` in one step, so a crash never leaves a half-written file.
pub(crate) fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    std::fs::create_dir_all(dir).map_err(|err| io_failure("create", dir, &err))?;
    let file_name = path.file_name().map_or_else(
        || "output".into(),
        |name| name.to_string_lossy().into_owned(),
    );
    let temp = dir.join(format!(".{file_name}.sigil-{}", std::process::id()));
    let written = std::fs::write(&temp, text).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written.map_err(|err| io_failure("write", path, &err).into())
}

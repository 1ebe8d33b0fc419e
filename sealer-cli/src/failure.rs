//! User-facing errors: what went wrong and where, plus a hint on how to fix it.

use std::fmt;
use std::io;

/// Exit status of an error: bad input, an API error, a Rotation that failed.
pub(crate) const EXIT_ERROR: u8 = 1;
/// Exit status of a usage error (clap uses the same for its own).
pub(crate) const EXIT_USAGE: u8 = 2;
/// Exit status when `--timeout` elapsed while a Rotation was still running.
pub(crate) const EXIT_TIMEOUT: u8 = 3;

/// An error the user can fix, with the fix.
#[derive(Debug)]
pub(crate) struct Failure {
    message: String,
    hint: Option<String>,
    exit: u8,
}

impl Failure {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            hint: None,
            exit: EXIT_ERROR,
        }
    }

    pub(crate) fn hint(&self) -> Option<&str> {
        self.hint.as_deref()
    }

    pub(crate) fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Ends the program with `code` instead of [`EXIT_ERROR`].
    pub(crate) fn with_exit(mut self, code: u8) -> Self {
        self.exit = code;
        self
    }
}

/// The exit status for an error: the [`Failure`]'s own, else [`EXIT_ERROR`].
pub(crate) fn exit_code(err: &anyhow::Error) -> u8 {
    err.downcast_ref::<Failure>()
        .map_or(EXIT_ERROR, |failure| failure.exit)
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Failure {}

/// Shorthand for returning a [`Failure`] with a hint.
pub(crate) fn fail<T>(message: impl Into<String>, hint: impl Into<String>) -> anyhow::Result<T> {
    Err(Failure::new(message).with_hint(hint).into())
}

/// A failed read or write of `path` (`doing`: "read", "write", "create"), with a hint
/// for what the user can do about the OS's reason.
pub(crate) fn io_failure(doing: &str, path: &std::path::Path, err: &io::Error) -> Failure {
    let hint = match err.kind() {
        io::ErrorKind::NotFound if doing != "write" && doing != "create" => {
            "check the path: it is relative to the current directory".to_owned()
        }
        io::ErrorKind::NotFound => {
            "the directory it goes in does not exist: create it, or write elsewhere".to_owned()
        }
        io::ErrorKind::IsADirectory => format!("give a file to {doing}, not a directory"),
        io::ErrorKind::NotADirectory => {
            "a part of the path is a file, not a directory: check the path".to_owned()
        }
        io::ErrorKind::AlreadyExists => {
            "sigil never overwrites it: choose another path, or move the old file away first"
                .to_owned()
        }
        io::ErrorKind::PermissionDenied | io::ErrorKind::ReadOnlyFilesystem => format!(
            "you may not {doing} it: check its permissions and its directory's (`ls -l`), or use another path"
        ),
        io::ErrorKind::InvalidData => {
            "it is not UTF-8 text: give a YAML or JSON manifest".to_owned()
        }
        _ => "check the path and the disk, then try again".to_owned(),
    };
    Failure::new(format!("cannot {doing} {}: {err}", path.display())).with_hint(hint)
}

/// A reader of our output went away (`sigil seal ... | head`): not an error.
pub(crate) fn is_broken_pipe(err: &anyhow::Error) -> bool {
    err.chain().any(|cause| {
        cause
            .downcast_ref::<io::Error>()
            .is_some_and(|e| e.kind() == io::ErrorKind::BrokenPipe)
    })
}

//! `sigil-api`: not built yet beyond this entry point; see the project's open issues.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("error: sigil-api is not implemented yet");
    ExitCode::FAILURE
}

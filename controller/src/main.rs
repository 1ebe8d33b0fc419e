//! `sigil-controller`: not built yet beyond this entry point; see the project's open issues.

use std::process::ExitCode;

fn main() -> ExitCode {
    eprintln!("error: sigil-controller is not implemented yet");
    ExitCode::FAILURE
}

//! `sigil`: seal Kubernetes Secrets so they are safe to commit to Git, open them offline
//! in an emergency, manage sealing keys, and rotate credentials through sigil-api. A
//! thin binary over `sigil-core`.

use std::io::{self, Write};
use std::process::ExitCode;

use clap::Parser;

mod api;
mod cli;
mod cluster;
mod document;
mod failure;
mod keys;
mod migrate;
mod output;
mod parallel;
mod reseal;
mod rotate;
mod seal;
mod unseal;
mod verify;

use cli::{Cli, Command, KeysCommand, MigrateCommand};
use failure::Failure;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Seal(args) => seal::run(&args),
        Command::Unseal(args) => unseal::run(&args),
        Command::Cert(args) => keys::cert(&args),
        Command::Keys { command } => match command {
            KeysCommand::Generate(args) => keys::generate(&args),
            KeysCommand::Backup(args) => keys::backup(&args),
            KeysCommand::Import(args) => keys::import(&args),
            KeysCommand::Rotate(args) => rotate::keys_rotate(&args),
        },
        Command::Rotate(args) => rotate::run(&args),
        Command::Verify(args) => verify::run(&args),
        Command::Reseal(args) => reseal::run(&args),
        Command::Migrate { command } => match command {
            MigrateCommand::Bitnami(args) => migrate::bitnami(&args),
        },
        Command::Completions(args) => cli::completions(&args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) if failure::is_broken_pipe(&err) => ExitCode::SUCCESS,
        Err(err) => {
            let mut stderr = io::stderr().lock();
            let _ = writeln!(stderr, "error: {err:#}");
            if let Some(hint) = err.downcast_ref::<Failure>().and_then(Failure::hint) {
                let _ = writeln!(stderr, "hint: {hint}");
            }
            ExitCode::from(failure::exit_code(&err))
        }
    }
}

//! `statectl`: see the library docs for the commands.

use std::process::ExitCode;

use clap::Parser;
use clap::error::ErrorKind;
use statectl::{Cli, run};

fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => match e.kind() {
            ErrorKind::DisplayHelp
            | ErrorKind::DisplayVersion
            | ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => e.exit(),
            _ => {
                let text = e.to_string();
                let first = text.lines().next().unwrap_or("invalid arguments");
                eprintln!("{first} (see statectl --help)");
                return ExitCode::from(2);
            }
        },
    };
    let stdout = std::io::stdout();
    let mut out = stdout.lock();
    match run(&cli, &mut out) {
        Ok(code) => ExitCode::from(code),
        Err(e) if is_broken_pipe(&e) => ExitCode::SUCCESS,
        Err(e) => {
            // One line, whatever the error's message holds.
            let message = e.to_string().replace('\n', " ");
            eprintln!("error: {message}");
            ExitCode::from(1)
        }
    }
}

/// Output cut short by the reader (`statectl dump … | head`) is not an error.
fn is_broken_pipe(error: &state_api::StateError) -> bool {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(error);
    while let Some(e) = source {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            return io.kind() == std::io::ErrorKind::BrokenPipe;
        }
        source = e.source();
    }
    false
}

//! # statectl: look into checkpoints and savepoints
//!
//! One binary with subcommands that run against a checkpoint directory or
//! object-store URL (local paths, `file://`, `s3://` with the `s3`
//! feature, on by default):
//!
//! | command | what it does |
//! |---|---|
//! | `list DIR` | checkpoints and savepoints in `DIR` and up to three levels below (checkpoint base, job and savepoint directories), with ids, times, own and shared bytes; unfinished and damaged entries are listed as such |
//! | `inspect LOCATION` | one checkpoint or savepoint: operators, handles, states with kinds and types, key-group ranges, files (`--json` for the raw metadata) |
//! | `verify LOCATION` | every referenced file exists and matches its size and checksum; exit code 0 OK, 3 missing files, 4 damaged files, 5 both |
//! | `dump LOCATION --state NAME` | the entries of one state as JSON lines |
//! | `dispose LOCATION` | deletes a savepoint: exactly the files it references and its `_metadata` |
//!
//! `LOCATION` is a checkpoint (`<job dir>/chk-<n>`), a savepoint directory,
//! or the `_metadata` file of either. Errors are one line on stderr with
//! exit code 1 (2 for command-line mistakes); long operations show a
//! progress bar on stderr when it is a terminal.

pub mod commands;
pub mod decode;
pub mod dump;
pub mod location;

use std::io::Write;

use clap::{Parser, Subcommand};
use state_api::Result;

use state_storage::restore::RestoreSource;

use crate::decode::Decoding;

/// Command-line arguments.
#[derive(Debug, Parser)]
#[command(
    name = "statectl",
    version,
    about = "List, inspect, verify, dump and dispose checkpoints and savepoints"
)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List checkpoints and savepoints with ids, times and sizes.
    List {
        /// A job directory, a checkpoint base directory (job directories
        /// below it), a savepoint directory, a directory of savepoints, or
        /// one above those (up to three levels are searched); a path or a
        /// URL.
        dir: String,
    },
    /// Show one checkpoint or savepoint: states, kinds, key-group ranges,
    /// files, own and shared bytes.
    Inspect {
        /// `<job dir>/chk-<n>`, a savepoint directory, or either's
        /// `_metadata`.
        location: String,
        /// Print the metadata as JSON instead.
        #[arg(long)]
        json: bool,
    },
    /// Check that every referenced file exists and matches its checksum.
    /// Exit code: 0 OK, 3 missing files, 4 damaged files, 5 both.
    Verify {
        /// `<job dir>/chk-<n>`, a savepoint directory, or either's
        /// `_metadata`.
        location: String,
    },
    /// Print the entries of one state as JSON lines.
    Dump {
        /// `<job dir>/chk-<n>`, a savepoint directory, or either's
        /// `_metadata`.
        location: String,
        /// The operator (may be left out when there is only one).
        #[arg(long)]
        operator: Option<String>,
        /// The state's name.
        #[arg(long)]
        state: String,
        /// How to show keys (snapshots do not record the key type).
        #[arg(long, value_enum, default_value = "hex")]
        key_type: Decoding,
        /// Stop after this many entries.
        #[arg(long)]
        limit: Option<u64>,
    },
    /// Delete a savepoint: the files it references and its `_metadata`.
    Dispose {
        /// A savepoint directory or its `_metadata`.
        location: String,
    },
}

/// Runs `cli`, writing results to `out`; returns the exit code.
///
/// # Errors
/// Whatever the command fails with; `main` prints it as one line.
pub fn run(cli: &Cli, out: &mut dyn Write) -> Result<u8> {
    match &cli.command {
        Command::List { dir } => {
            let bar = progress::Bar::new("listing directories");
            commands::list(dir, out, &mut |done, total| bar.set(done, total))?;
        }
        Command::Inspect { location, json } => {
            commands::inspect(&RestoreSource::open(location)?, *json, out)?;
        }
        Command::Verify { location } => {
            let snapshot = match RestoreSource::open(location) {
                Ok(snapshot) => snapshot,
                // A verification that cannot even read the metadata still
                // says which way it failed.
                Err(e @ state_api::StateError::FileNotFound { .. })
                | Err(e @ state_api::StateError::CheckpointNotFound { .. }) => {
                    writeln!(out, "MISSING {e}").map_err(commands::io_error)?;
                    return Ok(commands::EXIT_MISSING);
                }
                Err(e @ state_api::StateError::Corrupt { .. }) => {
                    writeln!(out, "CORRUPT {e}").map_err(commands::io_error)?;
                    return Ok(commands::EXIT_CORRUPT);
                }
                Err(e) => return Err(e),
            };
            let bar = progress::Bar::bytes("verifying");
            let verification =
                commands::verify(&snapshot, &mut |done, total| bar.set_bytes(done, total))?;
            drop(bar);
            commands::report_verification(&snapshot, &verification, out)?;
            return Ok(verification.exit_code());
        }
        Command::Dump {
            location,
            operator,
            state,
            key_type,
            limit,
        } => {
            let snapshot = RestoreSource::open(location)?;
            let request = dump::DumpRequest {
                operator: operator.as_deref(),
                state,
                key_decoding: *key_type,
                limit: *limit,
            };
            let bar = progress::Bar::new("reading handles");
            dump::dump(&snapshot, &request, out, &mut |done, total| {
                bar.set(done, total);
            })?;
        }
        Command::Dispose { location } => {
            let snapshot = RestoreSource::open(location)?;
            let bar = progress::Bar::new("deleting files");
            commands::dispose(snapshot, out, &mut |done, total| bar.set(done, total))?;
        }
    }
    Ok(0)
}

mod progress {
    //! Progress bars on stderr, drawn only when it is a terminal.

    use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

    /// A progress bar that clears itself when dropped.
    pub(crate) struct Bar(ProgressBar);

    impl Bar {
        /// A bar counting items.
        pub(crate) fn new(message: &'static str) -> Self {
            Self::styled(message, "{msg} [{bar:30}] {pos}/{len}")
        }

        /// A bar counting bytes.
        pub(crate) fn bytes(message: &'static str) -> Self {
            Self::styled(
                message,
                "{msg} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
            )
        }

        fn styled(message: &'static str, template: &str) -> Self {
            let bar = ProgressBar::with_draw_target(Some(0), ProgressDrawTarget::stderr());
            if let Ok(style) = ProgressStyle::with_template(template) {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_message(message);
            Self(bar)
        }

        pub(crate) fn set(&self, done: usize, total: usize) {
            self.set_bytes(done as u64, total as u64);
        }

        pub(crate) fn set_bytes(&self, done: u64, total: u64) {
            self.0.set_length(total);
            self.0.set_position(done);
        }
    }

    impl Drop for Bar {
        fn drop(&mut self) {
            self.0.finish_and_clear();
        }
    }
}

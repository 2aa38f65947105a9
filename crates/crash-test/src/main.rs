//! `crash-test`: the main job's keyed workload killed with SIGKILL, over
//! and over, on the model of RocksDB's `db_crashtest.py`.
//!
//! `crash-test run` starts worker processes on one job directory. Each
//! worker ("life") opens the checkpoint store (collecting what earlier
//! lives left unreferenced), restores the latest completed checkpoint at a
//! random parallelism, compares every key with a model replayed to the
//! checkpoint's source offset, and goes on processing, checkpointing,
//! materializing and subsuming until it is killed: at a random moment, or
//! at a crash point (the nth storage operation of a kind: the `_metadata`
//! commit, shared or exclusive uploads, deletions, listings, reads). A
//! final life takes one more checkpoint, stops, and counts the files in
//! storage that no retained checkpoint references; the driver counts what
//! is left in the local working directory.
//!
//! ```text
//! crash-test run --trials 100 --dir target/crash/rocksdb -- --backend rocksdb --num-retained 3
//! ```
//!
//! Exit code 0 when nothing was lost, corrupt, leaked or failed, 1
//! otherwise. See `scripts/crash-test.sh` for every configuration.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use state_job::options::Options;

mod driver;
mod harness;
mod worker;

/// Command line.
#[derive(Debug, Parser)]
#[command(
    version,
    about = "Kills the keyed job with SIGKILL and checks every restore"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs trials: lives killed at random moments and crash points.
    Run {
        /// Lives to kill.
        #[arg(long, default_value_t = 20)]
        trials: u64,
        /// Seed of kill times, crash points and parallelisms.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Working directory (job directories, local directories, logs of
        /// failed lives).
        #[arg(long)]
        dir: PathBuf,
        /// Longest life before a kill, in milliseconds.
        #[arg(long, default_value_t = 3_000)]
        max_life_ms: u64,
        /// Lives on one job directory before a new job starts.
        #[arg(long, default_value_t = 25)]
        lives_per_job: u64,
        /// Checkpoint directory (a path or URL such as s3://bucket/prefix);
        /// default: under --dir.
        #[arg(long)]
        checkpoint_dir: Option<String>,
        /// Events between checkpoint triggers.
        #[arg(long, default_value_t = 2_000)]
        checkpoint_events: u64,
        /// The job's flags (see state-job --help), after `--`.
        #[arg(last = true)]
        job_flags: Vec<String>,
    },
    /// One life (started by `run`).
    Worker {
        /// Parallelism of this life.
        #[arg(long, default_value_t = 2)]
        parallelism: u32,
        /// Kill the process at the nth storage operation of a kind on a
        /// path containing a pattern: OP:PATTERN:N.
        #[arg(long)]
        crash_at: Option<String>,
        /// The final life: process this many events, checkpoint, stop and
        /// count unreferenced files.
        #[arg(long)]
        final_events: Option<u64>,
        /// Events between checkpoint triggers.
        #[arg(long, default_value_t = 2_000)]
        checkpoint_events: u64,
        /// The job's flags, after `--`.
        #[arg(last = true)]
        job_flags: Vec<String>,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Run {
            trials,
            seed,
            dir,
            max_life_ms,
            lives_per_job,
            checkpoint_dir,
            checkpoint_events,
            job_flags,
        } => {
            let plan = driver::DriverPlan {
                checkpoint_events,
                trials,
                seed,
                dir,
                max_life: Duration::from_millis(max_life_ms),
                lives_per_job,
                checkpoint_dir,
                job_flags,
            };
            match driver::run(&plan) {
                Ok(tally) => {
                    println!(
                        "crash-test {}: {trials} lives: {} killed at random moments, {} at crash points, \
                         {} finished the stream; lost {}, corrupt {}, errors {}, unreferenced files {}, \
                         local leftovers {}",
                        plan.job_flags.join(" "),
                        tally.killed_by_time,
                        tally.killed_at_points,
                        tally.finished,
                        tally.lost,
                        tally.corrupt,
                        tally.errors,
                        tally.leaked_files,
                        tally.local_leftovers
                    );
                    if tally.clean() {
                        ExitCode::SUCCESS
                    } else {
                        ExitCode::FAILURE
                    }
                }
                Err(e) => {
                    eprintln!("error: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Command::Worker {
            parallelism,
            crash_at,
            final_events,
            checkpoint_events,
            job_flags,
        } => {
            let crash_at = match crash_at.as_deref().map(worker::CrashPoint::parse) {
                Some(Err(e)) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(worker::EXIT_ERROR);
                }
                Some(Ok(point)) => Some(point),
                None => None,
            };
            let options = match Options::try_parse_from(
                std::iter::once("state-job".to_string()).chain(job_flags),
            ) {
                Ok(options) => options,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(worker::EXIT_ERROR);
                }
            };
            ExitCode::from(worker::run(&worker::WorkerPlan {
                options,
                parallelism,
                crash_at,
                final_events,
                checkpoint_events,
            }))
        }
    }
}

//! The main job: a keyed stateful job over a generated event stream that
//! takes periodic checkpoints, fails on purpose midway, restores from the
//! latest completed checkpoint at another parallelism, finishes, and checks its
//! final state against a run without failure.

use std::process::ExitCode;

use clap::Parser;
use state_job::job::{Options, run};

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(report) if report.equal => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

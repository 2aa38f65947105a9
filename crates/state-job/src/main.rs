//! The main job: a multi-task keyed dataflow with in-band checkpoint
//! barriers that fails on purpose (a task, the storage, a crash during a
//! checkpoint), restores the latest completed checkpoint at another
//! parallelism each time, finishes, and checks its final state against a
//! run without failure (exactly once) or reports the duplicates (at least
//! once).

use std::process::ExitCode;

use clap::Parser;
use state_job::job::run;
use state_job::options::Options;

fn main() -> ExitCode {
    let options = Options::parse();
    match run(&options) {
        Ok(report) if report.passed => ExitCode::SUCCESS,
        Ok(_) => ExitCode::from(1),
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

//! The driver: starts worker processes on one job directory and kills them
//! with SIGKILL, at a random moment or at a crash point of the checkpoint
//! protocol; each new worker restores and checks. A final worker takes one
//! more checkpoint and counts what is left unreferenced.

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use state_testkit::rng::Rng;

use crate::worker::{EXIT_CORRUPT, EXIT_LEAKED, EXIT_LOST};

/// Crash points: the protocol steps a kill at a storage operation hits.
const CRASH_POINTS: [(&str, &str); 6] = [
    // Committing a checkpoint.
    ("put", "_metadata"),
    // Uploading shared state (SSTs, log files, materializations).
    ("put", "shared/"),
    // Uploading a checkpoint's exclusive files.
    ("put", "chk-"),
    // Subsumption, discards, collection and backend deletions.
    ("delete", ""),
    // Opening the store, collection.
    ("list", ""),
    // Restore and commit checks.
    ("get", ""),
];

/// What a driver run does.
#[derive(Clone, Debug)]
pub(crate) struct DriverPlan {
    /// Lives to kill.
    pub(crate) trials: u64,
    /// Seed of the kill times, crash points and parallelisms.
    pub(crate) seed: u64,
    /// Working directory of the run (job directories, local directories,
    /// logs).
    pub(crate) dir: PathBuf,
    /// Longest life before a kill.
    pub(crate) max_life: Duration,
    /// Lives on one job before a new one starts (the model replays the
    /// whole stream up to the restored offset, which grows with every life).
    pub(crate) lives_per_job: u64,
    /// Checkpoint directory (default: under `dir`), e.g. an `s3://` URL.
    pub(crate) checkpoint_dir: Option<String>,
    /// The job's flags (backend, workload), without directories.
    pub(crate) job_flags: Vec<String>,
    /// Events between checkpoint triggers in every life.
    pub(crate) checkpoint_events: u64,
}

/// What a driver run saw.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(crate) struct Tally {
    /// Lives killed at a random moment.
    pub(crate) killed_by_time: u64,
    /// Lives killed at a crash point.
    pub(crate) killed_at_points: u64,
    /// Lives that reached the end of the stream (a new job starts).
    pub(crate) finished: u64,
    /// Restores that failed: a completed checkpoint lost.
    pub(crate) lost: u64,
    /// Restores whose state differed from the model.
    pub(crate) corrupt: u64,
    /// Lives that failed otherwise (errors, panics).
    pub(crate) errors: u64,
    /// Files the final lives found unreferenced.
    pub(crate) leaked_files: u64,
    /// Entries left in the local working directory at the end.
    pub(crate) local_leftovers: u64,
}

impl Tally {
    /// Whether nothing went wrong.
    pub(crate) fn clean(&self) -> bool {
        self.lost == 0
            && self.corrupt == 0
            && self.errors == 0
            && self.leaked_files == 0
            && self.local_leftovers == 0
    }
}

/// Runs the plan; prints one line per life that went wrong and a summary.
///
/// # Errors
/// When a worker cannot be started or the directory not written.
pub(crate) fn run(plan: &DriverPlan) -> std::io::Result<Tally> {
    std::fs::create_dir_all(&plan.dir)?;
    let mut rng = Rng::new(plan.seed);
    let mut tally = Tally::default();
    let mut generation = 0u64;
    for trial in 0..plan.trials {
        if trial > 0 && trial % plan.lives_per_job.max(1) == 0 {
            generation += 1;
        }
        let crash_point = if rng.chance(1, 2) {
            let (operation, pattern) = CRASH_POINTS[rng.index(CRASH_POINTS.len())];
            Some(format!("{operation}:{pattern}:{}", 1 + rng.below(6)))
        } else {
            None
        };
        // A life aimed at a crash point gets long enough to reach it.
        let longest = plan.max_life.as_millis() as u64 * if crash_point.is_some() { 3 } else { 1 };
        let life_ms = 50 + rng.below(longest);
        let args = worker_args(plan, generation, &mut rng, crash_point.as_deref(), None);
        let log = plan.dir.join(format!("life-{trial}.log"));
        let (status, killed_by_driver) = run_worker(&args, &log, Duration::from_millis(life_ms))?;
        match classify(status) {
            Life::Killed if killed_by_driver => tally.killed_by_time += 1,
            Life::Killed => tally.killed_at_points += 1,
            Life::Exited(0) => {
                tally.finished += 1;
                generation += 1;
            }
            Life::Exited(code) => {
                match code {
                    EXIT_LOST => tally.lost += 1,
                    EXIT_CORRUPT => tally.corrupt += 1,
                    _ => tally.errors += 1,
                }
                eprintln!(
                    "trial {trial}: exit code {code} (crash point {crash_point:?}); log {}",
                    log.display()
                );
                // Start over on a new job, keep the evidence.
                generation += 1;
                continue;
            }
        }
        let _ = std::fs::remove_file(&log);
    }
    // The final life: one more checkpoint, then count what is left.
    let args = worker_args(plan, generation, &mut rng, None, Some(2_000));
    let log = plan.dir.join("final.log");
    let (status, _) = run_worker(&args, &log, Duration::from_secs(600))?;
    match classify(status) {
        Life::Exited(0) => {}
        Life::Exited(EXIT_LEAKED) => {
            tally.leaked_files += unreferenced_count(&log);
            eprintln!("final life found unreferenced files; log {}", log.display());
        }
        Life::Exited(EXIT_LOST) => tally.lost += 1,
        Life::Exited(EXIT_CORRUPT) => tally.corrupt += 1,
        other => {
            tally.errors += 1;
            eprintln!("final life: {other:?}; log {}", log.display());
        }
    }
    tally.local_leftovers = count_entries(&local_dir(plan));
    Ok(tally)
}

/// How a life ended.
#[derive(Debug)]
enum Life {
    Killed,
    Exited(u8),
}

fn classify(status: ExitStatus) -> Life {
    match status.code() {
        Some(code) => Life::Exited(u8::try_from(code).unwrap_or(u8::MAX)),
        None => Life::Killed,
    }
}

/// Runs a worker for at most `life`, then SIGKILLs it; returns how it
/// ended and whether the driver killed it.
fn run_worker(args: &[String], log: &Path, life: Duration) -> std::io::Result<(ExitStatus, bool)> {
    let output = std::fs::File::create(log)?;
    let mut child = Command::new(std::env::current_exe()?)
        .args(args)
        .stdin(Stdio::null())
        .stdout(output.try_clone()?)
        .stderr(output)
        .spawn()?;
    let deadline = Instant::now() + life;
    loop {
        if let Some(status) = child.try_wait()? {
            return Ok((status, false));
        }
        if Instant::now() >= deadline {
            // `kill` sends SIGKILL on Unix.
            child.kill()?;
            return Ok((child.wait()?, true));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn worker_args(
    plan: &DriverPlan,
    generation: u64,
    rng: &mut Rng,
    crash_point: Option<&str>,
    final_events: Option<u64>,
) -> Vec<String> {
    let mut args = vec![
        "worker".to_string(),
        "--parallelism".to_string(),
        (1 + rng.below(3)).to_string(),
        "--checkpoint-events".to_string(),
        plan.checkpoint_events.to_string(),
    ];
    if let Some(point) = crash_point {
        args.extend(["--crash-at".to_string(), point.to_string()]);
    }
    if let Some(events) = final_events {
        args.extend(["--final-events".to_string(), events.to_string()]);
    }
    let checkpoints = match &plan.checkpoint_dir {
        Some(base) => format!("{}/gen-{generation}", base.trim_end_matches('/')),
        None => plan
            .dir
            .join(format!("checkpoints/gen-{generation}"))
            .display()
            .to_string(),
    };
    args.push("--".to_string());
    args.extend([
        "--checkpoint-dir".to_string(),
        checkpoints,
        "--local-dir".to_string(),
        local_dir(plan).display().to_string(),
    ]);
    args.extend(plan.job_flags.iter().cloned());
    args
}

fn local_dir(plan: &DriverPlan) -> PathBuf {
    plan.dir.join("local")
}

fn count_entries(dir: &Path) -> u64 {
    std::fs::read_dir(dir).map_or(0, |entries| entries.count() as u64)
}

/// The count a final worker reports on its `UNREFERENCED <n>` line.
fn unreferenced_count(log: &Path) -> u64 {
    std::fs::read_to_string(log)
        .ok()
        .and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("UNREFERENCED "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(1)
}

//! The short crash test CI runs: a few lives per backend configuration on
//! local disk (and on S3 when `STATE_S3_ENDPOINT` names a server), each
//! killed with SIGKILL; every restore must equal the model and nothing may
//! be left unreferenced. The long run is `scripts/crash-test.sh`.

use std::process::Command;

/// Runs `lives` lives of one configuration; panics with the driver's output
/// when anything was lost, corrupt, leaked or failed.
fn crash(name: &str, lives: u32, flags: &str) {
    crash_with(name, lives, None, &[], flags);
}

/// [`crash`] with another checkpoint directory and extra environment.
fn crash_with(
    name: &str,
    lives: u32,
    checkpoint_dir: Option<String>,
    env: &[(&str, String)],
    flags: &str,
) {
    let dir = tempfile::tempdir().expect("temp dir");
    let mut command = Command::new(env!("CARGO_BIN_EXE_crash-test"));
    command.envs(env.iter().map(|(k, v)| (k, v)));
    command
        .args([
            "run",
            "--trials",
            &lives.to_string(),
            "--max-life-ms",
            "1500",
            "--checkpoint-events",
            "1500",
        ])
        .arg("--dir")
        .arg(dir.path());
    if let Some(checkpoint_dir) = checkpoint_dir {
        command.args(["--checkpoint-dir", &checkpoint_dir]);
    }
    command.arg("--").args(flags.split_whitespace()).args([
        "--keys",
        "300",
        "--events",
        "100000000",
    ]);
    let output = command.output().expect("crash-test runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{name}: {stdout}");
    let clean =
        stdout.contains("lost 0, corrupt 0, errors 0, unreferenced files 0, local leftovers 0");
    assert!(
        output.status.success() && clean,
        "{name}: {stdout}\n{stderr}\n{}",
        failed_lives(dir.keep())
    );
}

/// The logs the driver kept (those of lives that failed and of the final
/// life), so a failure on a CI machine whose files are gone is explained.
fn failed_lives(dir: std::path::PathBuf) -> String {
    let mut report = format!("logs of failed lives in {}:\n", dir.display());
    let mut logs: Vec<_> = std::fs::read_dir(&dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|entry| entry.path())
        .filter(|path| path.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        let tail = &lines[lines.len().saturating_sub(40)..];
        report += &format!(
            "--- {} (last {} lines)\n{}\n",
            log.display(),
            tail.len(),
            tail.join("\n")
        );
    }
    report
}

#[test]
fn heap() {
    crash("heap", 6, "--num-retained 3");
}

#[test]
fn rocksdb_incremental() {
    crash("rocksdb", 6, "--backend rocksdb --num-retained 1");
}

#[test]
fn rocksdb_full() {
    crash(
        "rocksdb-full",
        3,
        "--backend rocksdb --full-checkpoints --num-retained 3",
    );
}

#[test]
fn changelog_over_heap() {
    crash(
        "changelog-heap",
        6,
        "--changelog --materialization-interval-ms 200 --num-retained 1",
    );
}

#[test]
fn changelog_over_rocksdb() {
    crash(
        "changelog-rocksdb",
        6,
        "--backend rocksdb --changelog --materialization-interval-ms 200 --num-retained 3",
    );
}

/// On S3, when a server is given (scripts/test.sh starts one).
#[test]
fn changelog_over_rocksdb_on_s3() {
    let (Ok(endpoint), Ok(bucket)) = (
        std::env::var("STATE_S3_ENDPOINT"),
        std::env::var("STATE_S3_BUCKET"),
    ) else {
        eprintln!("SKIPPED: the S3 crash test needs STATE_S3_ENDPOINT and STATE_S3_BUCKET");
        return;
    };
    let prefix = format!("s3://{bucket}/crash-test-{}", std::process::id());
    // object_store's S3 builder reads these.
    let env = [
        ("AWS_ENDPOINT", endpoint),
        ("AWS_ALLOW_HTTP", "true".to_string()),
    ];
    crash_with(
        "changelog-rocksdb-s3",
        6,
        Some(prefix),
        &env,
        "--backend rocksdb --changelog --materialization-interval-ms 200 --num-retained 1",
    );
}

//! `statectl list`, `inspect`, `verify` and `dispose`.

use std::fmt::Write as _;
use std::io::Write;
use std::time::{Duration, UNIX_EPOCH};

use state_api::{CheckpointStorageAccess, KeyedStateHandle, Result, StateError, StateScope};
use state_storage::restore::handle_states;

use state_storage::restore::RestoreSource;

use crate::location;

/// Exit code of `verify` when files are missing.
pub const EXIT_MISSING: u8 = 3;
/// Exit code of `verify` when files are damaged (checksum, size, format).
pub const EXIT_CORRUPT: u8 = 4;
/// Exit code of `verify` when files are both missing and damaged.
pub const EXIT_MISSING_AND_CORRUPT: u8 = 5;

/// `bytes` in binary units: `1.5 MiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// A timestamp in ms since the epoch as RFC 3339 UTC.
pub fn human_time(timestamp_ms: u64) -> String {
    // RFC 3339 stops at year 9999; metadata may hold anything.
    const YEAR_10000_MS: u64 = 253_402_300_800_000;
    if timestamp_ms >= YEAR_10000_MS {
        return format!("{timestamp_ms} ms");
    }
    let time = UNIX_EPOCH + Duration::from_millis(timestamp_ms);
    humantime::format_rfc3339_millis(time).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_beyond_year_9999_are_shown_as_numbers() {
        assert_eq!(human_time(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(human_time(253_402_300_799_999), "9999-12-31T23:59:59.999Z");
        assert_eq!(human_time(u64::MAX), format!("{} ms", u64::MAX));
    }
}

/// Own (exclusive and task-owned) and shared bytes of a snapshot's files.
fn own_and_shared(snapshot: &state_storage::CompletedCheckpoint) -> (u64, u64) {
    snapshot.files().iter().fold((0, 0), |(own, shared), f| {
        if f.scope == StateScope::Shared {
            (own, shared + f.size)
        } else {
            (own + f.size, shared)
        }
    })
}

/// `statectl list DIR`: one line per checkpoint and savepoint.
///
/// # Errors
/// As [`location::list`]; output errors.
pub fn list(dir: &str, out: &mut dyn Write, progress: &mut dyn FnMut(usize, usize)) -> Result<()> {
    let listing = location::list(dir, progress)?;
    let mut rows: Vec<[String; 8]> = vec![
        [
            "KIND", "ID", "JOB", "TIME", "OWN", "SHARED", "FILES", "PATH",
        ]
        .map(String::from),
    ];
    for listed in &listing.snapshots {
        let m = &listed.metadata;
        let (own, shared) = own_and_shared(m);
        rows.push([
            m.kind.name().to_string(),
            m.checkpoint_id.to_string(),
            m.job_id.clone(),
            human_time(m.timestamp_ms),
            human_bytes(own),
            human_bytes(shared),
            m.files().len().to_string(),
            listed.path.clone(),
        ]);
    }
    for path in &listing.incomplete {
        let mut row = ["incomplete", "-", "-", "-", "-", "-", "-", ""].map(String::from);
        row[7].clone_from(path);
        rows.push(row);
    }
    for (path, reason) in &listing.unreadable {
        let mut row = ["unreadable", "-", "-", "-", "-", "-", "-", ""].map(String::from);
        row[7] = format!("{path}: {}", reason.replace('\n', " "));
        rows.push(row);
    }
    let mut text = String::new();
    if rows.len() == 1 {
        let _ = writeln!(text, "no checkpoints or savepoints in {dir}");
    } else {
        let widths: Vec<usize> = (0..8)
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                // Numbers and sizes align right, words left.
                let right = matches!(c, 1 | 4 | 5 | 6);
                let width = widths[c];
                let _ = match (c, right) {
                    (7, _) => write!(line, "{cell}"),
                    (_, true) => write!(line, "{cell:>width$}  "),
                    (_, false) => write!(line, "{cell:<width$}  "),
                };
            }
            let _ = writeln!(text, "{}", line.trim_end());
        }
    }
    out.write_all(text.as_bytes()).map_err(io_error)
}

/// `statectl inspect LOCATION`: states, kinds, key-group ranges and files.
///
/// # Errors
/// Reading the states of key-group files; output errors.
pub fn inspect(snapshot: &RestoreSource, json: bool, out: &mut dyn Write) -> Result<()> {
    if json {
        let value = serde_json::to_value(&snapshot.metadata)
            .map_err(|e| io_error(std::io::Error::other(e)))?;
        let text =
            serde_json::to_string_pretty(&value).map_err(|e| io_error(std::io::Error::other(e)))?;
        return writeln!(out, "{text}").map_err(io_error);
    }
    let m = &snapshot.metadata;
    let storage: &dyn CheckpointStorageAccess = &*snapshot.storage;
    let (own, shared) = own_and_shared(m);
    let mut text = String::new();
    let _ = writeln!(
        text,
        "{} {} of job '{}', taken {}",
        snapshot.kind_name(),
        m.checkpoint_id,
        m.job_id,
        human_time(m.timestamp_ms)
    );
    let _ = writeln!(text, "location: {}", snapshot.location);
    let _ = writeln!(
        text,
        "files: {} ({} own, {} shared); state size {}",
        m.files().len(),
        human_bytes(own),
        human_bytes(shared),
        human_bytes(m.state_size())
    );
    for (name, bytes) in &m.master_states {
        let _ = writeln!(
            text,
            "master state '{name}': {}",
            human_bytes(bytes.len() as u64)
        );
    }
    for (operator, handles) in &m.operators {
        let _ = writeln!(text, "operator '{operator}': {} handle(s)", handles.len());
        for (index, handle) in handles.iter().enumerate() {
            describe_handle(
                &mut text,
                storage,
                handle,
                &format!("  [{index}] "),
                "      ",
            )?;
        }
    }
    for (operator, handles) in &m.operator_states {
        let _ = writeln!(
            text,
            "operator state of '{operator}': {} instance(s)",
            handles.len()
        );
        for handle in handles {
            let states: Vec<String> = handle
                .sections
                .iter()
                .map(|s| format!("{} ({:?}, {} elements)", s.name, s.mode, s.elements))
                .collect();
            let _ = writeln!(
                text,
                "  [{}/{}] {} {}: {}",
                handle.subtask,
                handle.parallelism,
                handle.file.path,
                human_bytes(handle.file.size),
                states.join(", ")
            );
        }
    }
    for (operator, handles) in &m.channel_states {
        let _ = writeln!(
            text,
            "in-flight records of '{operator}': {} instance(s)",
            handles.len()
        );
        for handle in handles {
            let _ = writeln!(
                text,
                "  [{}/{}] {} {}: {} records in {} runs from {} channels",
                handle.subtask,
                handle.parallelism,
                handle.file.path,
                human_bytes(handle.file.size),
                handle.records(),
                handle.runs.len(),
                handle.channels
            );
        }
    }
    out.write_all(text.as_bytes()).map_err(io_error)
}

fn describe_handle(
    text: &mut String,
    storage: &dyn CheckpointStorageAccess,
    handle: &KeyedStateHandle,
    first: &str,
    indent: &str,
) -> Result<()> {
    let backend = match handle {
        KeyedStateHandle::KeyGroups(h) => h.backend.as_str(),
        KeyedStateHandle::Incremental(h) => h.backend.as_str(),
        KeyedStateHandle::Changelog(h) => h.backend.as_str(),
        #[allow(unreachable_patterns)] // the enum is non_exhaustive
        _ => "?",
    };
    let _ = writeln!(
        text,
        "{first}{} handle by {backend}: key groups {} of {}, {}",
        handle.format_name(),
        range_text(handle.key_group_range()),
        handle.max_parallelism(),
        human_bytes(handle.state_size())
    );
    let states = handle_states(handle, storage)?;
    for state in &states {
        let user_key = state
            .user_key_type
            .as_deref()
            .map(|t| format!(", user key {t}"))
            .unwrap_or_default();
        let _ = writeln!(
            text,
            "{indent}state '{}': {:?}, value {}, namespace {}{user_key}",
            state.name, state.kind, state.value_type, state.namespace_type
        );
    }
    if let KeyedStateHandle::Changelog(h) = handle {
        let _ = writeln!(
            text,
            "{indent}materialization {} ({}), log {} in {} part(s)",
            h.materialization_id,
            human_bytes(h.materialized_size()),
            human_bytes(h.log_size()),
            h.log.len()
        );
        for materialized in &h.materialized {
            describe_handle(
                text,
                storage,
                materialized,
                &format!("{indent}materialized: "),
                &format!("{indent}  "),
            )?;
        }
        for part in &h.log {
            let _ = writeln!(
                text,
                "{indent}log: key groups {}, records {}..{}, {} segment(s)",
                part.key_group_range,
                part.from_sqn,
                part.to_sqn,
                part.segments.len()
            );
        }
        return Ok(());
    }
    for file in handle.files() {
        let scope = match file.scope {
            StateScope::Exclusive => "own",
            StateScope::Shared => "shared",
            StateScope::TaskOwned => "task-owned",
        };
        let _ = writeln!(
            text,
            "{indent}file {} ({scope}, {}, crc32c {:08x})",
            file.path,
            human_bytes(file.size),
            file.crc32c
        );
    }
    Ok(())
}

/// A key-group range as `start..end` (end exclusive).
fn range_text(range: state_api::KeyGroupRange) -> String {
    format!("{}..{}", range.start(), range.end_exclusive())
}

/// What `verify` found.
#[derive(Debug, Default)]
pub struct Verification {
    /// Files checked.
    pub files: usize,
    /// Bytes read.
    pub bytes: u64,
    /// Paths of missing files.
    pub missing: Vec<String>,
    /// Damaged files and why.
    pub corrupt: Vec<(String, String)>,
}

impl Verification {
    /// The exit code: 0, [`EXIT_MISSING`], [`EXIT_CORRUPT`] or
    /// [`EXIT_MISSING_AND_CORRUPT`].
    pub fn exit_code(&self) -> u8 {
        match (self.missing.is_empty(), self.corrupt.is_empty()) {
            (true, true) => 0,
            (false, true) => EXIT_MISSING,
            (true, false) => EXIT_CORRUPT,
            (false, false) => EXIT_MISSING_AND_CORRUPT,
        }
    }
}

/// `statectl verify LOCATION`: every referenced file exists and matches its
/// size and checksum, each streamed (memory stays bounded).
/// `progress(done_bytes, total_bytes)` per file.
///
/// # Errors
/// Storage failures other than missing or damaged files.
pub fn verify(
    snapshot: &RestoreSource,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Verification> {
    let files = snapshot.metadata.files();
    // Saturating: sizes come from metadata that may be damaged.
    let total = files.iter().fold(0u64, |t, f| t.saturating_add(f.size));
    let mut result = Verification::default();
    for file in files {
        match snapshot.storage.verify_file(file) {
            Ok(()) => {}
            Err(StateError::FileNotFound { path }) => result.missing.push(path),
            Err(StateError::Corrupt { path, reason }) => result.corrupt.push((path, reason)),
            Err(e) => return Err(e),
        }
        result.files += 1;
        result.bytes = result.bytes.saturating_add(file.size);
        progress(result.bytes, total);
    }
    Ok(result)
}

/// Prints a verification's findings and summary.
///
/// # Errors
/// Output errors.
pub fn report_verification(
    snapshot: &RestoreSource,
    verification: &Verification,
    out: &mut dyn Write,
) -> Result<()> {
    let mut text = String::new();
    for path in &verification.missing {
        let _ = writeln!(text, "MISSING {path}");
    }
    for (path, reason) in &verification.corrupt {
        let _ = writeln!(text, "CORRUPT {path}: {reason}");
    }
    let verdict = if verification.exit_code() == 0 {
        "OK"
    } else {
        "FAILED"
    };
    let _ = writeln!(
        text,
        "{verdict}: {} {} — {} files ({}) checked, {} missing, {} damaged",
        snapshot.kind_name(),
        snapshot.metadata.checkpoint_id,
        verification.files,
        human_bytes(verification.bytes),
        verification.missing.len(),
        verification.corrupt.len()
    );
    out.write_all(text.as_bytes()).map_err(io_error)
}

/// `statectl dispose LOCATION`: deletes a savepoint (never a checkpoint).
///
/// # Errors
/// [`StateError::Config`] for a checkpoint; deletion failures.
pub fn dispose(
    snapshot: RestoreSource,
    out: &mut dyn Write,
    progress: &mut dyn FnMut(usize, usize),
) -> Result<()> {
    let Some(savepoint) = snapshot.savepoint else {
        return Err(StateError::Config {
            key: "location".into(),
            message: format!(
                "{} is checkpoint {}: checkpoints are removed by their job's retention \
                 (execution.checkpointing.num-retained), statectl disposes savepoints only",
                snapshot.location, snapshot.metadata.checkpoint_id
            ),
        });
    };
    let id = savepoint.metadata().checkpoint_id;
    let report = savepoint.dispose_with_progress(progress)?;
    let mut text = format!(
        "disposed savepoint {id} at {}: {} files ({}) deleted\n",
        snapshot.location,
        report.deleted_files,
        human_bytes(report.deleted_bytes)
    );
    if !report.foreign_files.is_empty() {
        let _ = writeln!(
            text,
            "left {} file(s) the savepoint does not reference: {}",
            report.foreign_files.len(),
            report.foreign_files.join(", ")
        );
    }
    out.write_all(text.as_bytes()).map_err(io_error)
}

/// An I/O failure of statectl itself (writing the output, a scratch
/// directory).
pub fn io_error(e: std::io::Error) -> StateError {
    StateError::Backend {
        backend: "statectl",
        source: Box::new(e),
    }
}

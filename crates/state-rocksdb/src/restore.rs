//! Restore: from incremental (RocksDB file) handles and key-group handles,
//! taken at any parallelism.
//!
//! * One incremental handle covering the whole range (same or lower
//!   parallelism): download it into the working directory, open it as the
//!   DB and clip the foreign key groups with `delete_range` on every column
//!   family (Flink's `clipDBWithKeyGroupRange`). When the handle is in the
//!   job's own checkpoint storage, its shared files seed the "confirmed
//!   uploads", so the next checkpoint does not upload them again; files of a
//!   savepoint (another storage) are never referenced by later checkpoints.
//! * Several handles (after a scale-in, or key-group handles): the
//!   incremental handle holding most of this backend's key groups is opened
//!   as the DB and clipped as above (Flink's choice of an initial handle),
//!   so its key groups are not copied at all; each other incremental handle
//!   is opened in a temporary directory (read-only) and this backend's key
//!   groups in it are written, state by state, into an SST file that is
//!   ingested into the DB (no memtable, write path or compaction); key-group
//!   handles' entries of this backend's key groups are streamed in with
//!   WAL-less write batches. Foreign key groups are never copied. Without
//!   an incremental handle the DB starts empty.
//!
//! Damage is an error, never a panic: the storage verifies every file's size
//! and checksum; handles with odd file names, no CURRENT/MANIFEST, unknown
//! backends, duplicate or conflicting states are refused; key-group entries
//! are checked against their key group.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use rocksdb::{IngestExternalFileOptions, Options, ReadOptions, SstFileWriter, WriteBatch};
use state_api::codec::ListElements;
use state_api::format::key_groups::KeyGroupsReader;
use state_api::key_group::key_group_range_for_operator;
use state_api::timers::decode_timestamp;
use state_api::{
    BackendContext, CheckpointStorageAccess, FileHandle, IncrementalStateHandle, KeyGroupRange,
    KeyGroupsStateHandle, KeyedStateHandle, Result, StateError, StateKind, StateMeta, StateScope,
};

use crate::backend::{BACKEND_NAME, Db, LocalDir, column_family_name, db_error, open_db};
use crate::keys::{ABOVE_ALL_KEYS, KeyLayout};
use crate::ttl::DbOptions;
use crate::{options, transfer};

/// Write batches are flushed at this size while copying.
const BATCH_BYTES: usize = 4 << 20;

/// Read-ahead of the scans that copy key groups out of a downloaded DB.
const READAHEAD_BYTES: usize = 4 << 20;

/// What a restore produced.
pub(crate) struct Restored {
    pub(crate) db: Db,
    /// Every restored state, in order of first appearance.
    pub(crate) metas: Vec<StateMeta>,
    /// The restored checkpoint and its shared SST files, when the DB was
    /// opened from one incremental handle.
    pub(crate) confirmed: Option<(u64, BTreeMap<String, FileHandle>)>,
}

/// Restores `context.restore` into a DB in `instance_dir/db`.
///
/// # Errors
/// See the module docs.
pub(crate) fn restore(
    context: &BackendContext,
    instance_dir: &Path,
    options: &DbOptions,
    threads: usize,
) -> Result<Restored> {
    let db_path = instance_dir.join("db");
    let storage = &**context.restore_source();
    let range = context.key_group_range;
    let mut metas = collect_metas(&context.restore, storage)?;
    metas.retain(|meta| !context.skips_state(&meta.name));
    let skip = context.skip_restored_states.as_slice();

    let layout = KeyLayout::new(context.max_parallelism);
    let base = base_handle(&context.restore, range);
    let db = match base {
        Some((_, handle)) => {
            let mut db = open_downloaded(storage, handle, &db_path, options, threads, false)?;
            for name in skip {
                let name = column_family_name(name);
                if db.cf_handle(&name).is_some() {
                    db.drop_cf(&name).map_err(db_error)?;
                }
            }
            ensure_column_families(&mut db, &metas, options)?;
            clip(&db, range, layout)?;
            db
        }
        None => {
            let mut db = open_db(options, &db_path, false)?;
            ensure_column_families(&mut db, &metas, options)?;
            db
        }
    };
    // One handle covering the range: the DB is its files. Only the job's
    // own shared files may be referenced again: files of another storage (a
    // savepoint) are not the job's to keep, so the first checkpoint uploads
    // everything anew (Flink's NO_CLAIM for savepoints, FLINK-23949).
    let confirmed = match (base, context.restore.len()) {
        (Some((_, handle)), 1)
            if handle.key_group_range.contains_range(&range)
                && context.restores_from_own_storage() =>
        {
            let shared = handle
                .shared_files
                .iter()
                .filter(|f| f.file.scope == StateScope::Shared)
                .map(|f| (f.name.clone(), f.file.clone()))
                .collect();
            Some((handle.checkpoint_id, shared))
        }
        _ => None,
    };
    for (index, handle) in context.restore.iter().enumerate() {
        if base.is_some_and(|(base, _)| base == index) {
            continue;
        }
        match handle {
            KeyedStateHandle::Incremental(handle) => {
                let temp = LocalDir::adopt(instance_dir.join(format!("restore-{index}")));
                let ingest = LocalDir::adopt(instance_dir.join(format!("ingest-{index}")));
                let source = open_downloaded(storage, handle, temp.path(), options, threads, true)?;
                copy_key_groups(
                    &source,
                    &db,
                    handle,
                    range,
                    layout,
                    skip,
                    options,
                    ingest.path(),
                    threads,
                )?;
                // The temporary DB closes before its directory is removed.
                drop(source);
                drop(temp);
            }
            KeyedStateHandle::KeyGroups(handle) => {
                stream_key_groups(storage, handle, &db, range, layout, skip)?;
            }
            #[allow(unreachable_patterns)] // the enum is non_exhaustive
            other => return Err(unsupported(other)),
        }
    }
    Ok(Restored {
        db,
        metas,
        confirmed,
    })
}

/// The incremental handle to open as the DB itself (Flink's choice of the
/// initial handle): the one holding most of `range`'s key groups, so only
/// the other handles' key groups are copied. `None` when no incremental
/// handle holds any of them.
fn base_handle(
    handles: &[KeyedStateHandle],
    range: KeyGroupRange,
) -> Option<(usize, &IncrementalStateHandle)> {
    handles
        .iter()
        .enumerate()
        .filter_map(|(index, handle)| match handle {
            KeyedStateHandle::Incremental(h) => Some((index, h)),
            _ => None,
        })
        .map(|(index, h)| (h.key_group_range.intersection(&range).len(), index, h))
        .filter(|(overlap, _, _)| *overlap > 0)
        // Most overlap; the first of equals.
        .max_by_key(|(overlap, index, _)| (*overlap, std::cmp::Reverse(*index)))
        .map(|(_, index, h)| (index, h))
}

fn unsupported(handle: &KeyedStateHandle) -> StateError {
    StateError::Restore(format!(
        "the {BACKEND_NAME} backend cannot restore a {} handle (checkpoint {})",
        handle.format_name(),
        handle.checkpoint_id()
    ))
}

/// The states of all handles, each once; the same name with other types in
/// two handles is an error.
fn collect_metas(
    handles: &[KeyedStateHandle],
    storage: &dyn CheckpointStorageAccess,
) -> Result<Vec<StateMeta>> {
    let mut metas: Vec<StateMeta> = Vec::new();
    for handle in handles {
        let (states, origin) = match handle {
            KeyedStateHandle::Incremental(h) => {
                if h.backend != BACKEND_NAME {
                    return Err(StateError::Restore(format!(
                        "checkpoint {} holds files of the '{}' backend; the {BACKEND_NAME} \
                         backend restores only its own files or key-group snapshots",
                        h.checkpoint_id, h.backend
                    )));
                }
                (
                    h.states.clone(),
                    format!("checkpoint {} ({})", h.checkpoint_id, h.backend_id),
                )
            }
            KeyedStateHandle::KeyGroups(h) => (
                KeyGroupsReader::open(storage, h)?.meta().states.clone(),
                format!("'{}' (checkpoint {})", h.file.path, h.checkpoint_id),
            ),
            #[allow(unreachable_patterns)] // the enum is non_exhaustive
            other => return Err(unsupported(other)),
        };
        for (i, meta) in states.iter().enumerate() {
            if states.iter().take(i).any(|m| m.name == meta.name) {
                return Err(StateError::corrupt(
                    origin,
                    format!("state '{}' is listed twice", meta.name),
                ));
            }
            match metas.iter().find(|m| m.name == meta.name) {
                Some(existing) => existing.check_compatible(meta).map_err(|e| {
                    StateError::Restore(format!(
                        "state '{}' of {origin} conflicts with the same state in another handle: {e}",
                        meta.name
                    ))
                })?,
                None => metas.push(meta.clone()),
            }
        }
    }
    Ok(metas)
}

/// Creates the column family of every state that has none yet.
fn ensure_column_families(db: &mut Db, metas: &[StateMeta], options: &DbOptions) -> Result<()> {
    for meta in metas {
        let name = column_family_name(&meta.name);
        if db.cf_handle(&name).is_none() {
            db.create_cf(&name, &options.for_new_cf(&name))
                .map_err(db_error)?;
        }
    }
    Ok(())
}

/// Downloads the files of `handle` into `dir` and opens them as a DB.
fn open_downloaded(
    storage: &dyn CheckpointStorageAccess,
    handle: &IncrementalStateHandle,
    dir: &Path,
    options: &DbOptions,
    threads: usize,
    read_only: bool,
) -> Result<Db> {
    let files: Vec<_> = handle
        .shared_files
        .iter()
        .chain(&handle.private_files)
        .collect();
    let has = |pred: &dyn Fn(&str) -> bool| handle.private_files.iter().any(|f| pred(&f.name));
    if !has(&|n| n == "CURRENT") || !has(&|n| n.starts_with("MANIFEST-")) {
        // Without them RocksDB would create an empty DB: lost state.
        return Err(StateError::corrupt(
            format!("checkpoint {}", handle.checkpoint_id),
            "incremental handle without CURRENT and MANIFEST files",
        ));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| crate::backend::local_error("create directory", dir, e))?;
    transfer::download(storage, &files, dir, threads)?;
    let mut open_options = options.clone();
    open_options.base.create_if_missing(false);
    open_db(&open_options, dir, read_only)
}

/// Deletes every key outside `range` from every column family.
fn clip(db: &Db, range: KeyGroupRange, layout: KeyLayout) -> Result<()> {
    let (lower, upper) = layout.range_bounds(range);
    let write = options::write_options();
    let names = Db::list_cf(&Options::default(), db.path()).map_err(db_error)?;
    for name in names {
        let cf = column_family(db, &name)?;
        if !lower.is_empty() && lower.iter().any(|b| *b != 0) {
            db.delete_range_cf_opt(cf, &[][..], &lower[..], &write)
                .map_err(db_error)?;
        }
        db.delete_range_cf_opt(cf, &upper[..], &ABOVE_ALL_KEYS[..], &write)
            .map_err(db_error)?;
    }
    Ok(())
}

/// Copies the key groups of `range` that `handle` holds from `source` into
/// `target`, state by state: each state's entries are written, in key
/// order, into SST files in `ingest_dir` and ingested (moved) into the
/// target's column family, which bypasses the memtables, the write path and
/// the compactions that write batches would cause. The key groups are split
/// into up to `threads` contiguous parts, each scanned into its own file by
/// its own thread (the files do not overlap, so one ingestion takes them
/// all): the scan is CPU-bound, entry by entry through RocksDB's iterator and
/// file writer.
#[allow(clippy::too_many_arguments)]
fn copy_key_groups(
    source: &Db,
    target: &Db,
    handle: &IncrementalStateHandle,
    range: KeyGroupRange,
    layout: KeyLayout,
    skip: &[String],
    options: &DbOptions,
    ingest_dir: &Path,
    threads: usize,
) -> Result<()> {
    let part = handle.key_group_range.intersection(&range);
    if part.is_empty() {
        return Ok(());
    }
    std::fs::create_dir_all(ingest_dir)
        .map_err(|e| crate::backend::local_error("create directory", ingest_dir, e))?;
    let parts = split_key_groups(part, threads);
    let mut ingest = IngestExternalFileOptions::default();
    ingest.set_move_files(true);
    for (n, meta) in handle
        .states
        .iter()
        .filter(|m| !skip.contains(&m.name))
        .enumerate()
    {
        let name = column_family_name(&meta.name);
        let Some(from) = source.cf_handle(&name) else {
            continue; // a state without entries
        };
        let to = column_family(target, &name)?;
        let cf_options = options.for_cf(&name);
        let written = transfer::run_parallel(&parts, threads, |part| {
            let file = ingest_dir.join(format!("{n}-{}.sst", part.start()));
            let bounds = layout.range_bounds(*part);
            let entries = scan_into_sst(source, from, bounds, &cf_options, &file)?;
            Ok((entries > 0).then_some(file))
        })?;
        let files: Vec<PathBuf> = written.into_iter().flatten().collect();
        if files.is_empty() {
            continue; // RocksDB refuses an SST file without entries
        }
        target
            .ingest_external_file_cf_opts(to, &ingest, files)
            .map_err(db_error)?;
    }
    Ok(())
}

/// `range` in up to `parts` contiguous, non-empty pieces: Flink's operator
/// ranges over its key groups.
fn split_key_groups(range: KeyGroupRange, parts: usize) -> Vec<KeyGroupRange> {
    let len = range.len() as u32;
    let parts = (parts as u32).clamp(1, len.max(1));
    (0..parts)
        .filter_map(|i| {
            let piece = key_group_range_for_operator(len, parts, i).ok()?;
            KeyGroupRange::new(
                range.start() + piece.start(),
                range.start() + piece.end_exclusive(),
            )
            .ok()
        })
        .collect()
}

/// Writes the entries of column family `from` between `bounds` into a new
/// SST file at `file`; returns how many (none: no file worth ingesting).
fn scan_into_sst(
    source: &Db,
    from: &rocksdb::ColumnFamily,
    (lower, upper): (Vec<u8>, Vec<u8>),
    cf_options: &Options,
    file: &Path,
) -> Result<u64> {
    let mut read = ReadOptions::default();
    read.set_iterate_lower_bound(lower);
    read.set_iterate_upper_bound(upper);
    read.fill_cache(false);
    // The downloaded files' checksums were verified whole; a sequential
    // scan reads ahead.
    read.set_verify_checksums(false);
    read.set_readahead_size(READAHEAD_BYTES);
    let mut iter = source.raw_iterator_cf_opt(from, read);
    iter.seek_to_first();
    let mut writer = SstFileWriter::create(cf_options);
    let mut written = 0u64;
    while let Some((key, value)) = iter.item() {
        if written == 0 {
            writer.open(file).map_err(db_error)?;
        }
        writer.put(key, value).map_err(db_error)?;
        written += 1;
        iter.next();
    }
    iter.status().map_err(db_error)?;
    if written > 0 {
        writer.finish().map_err(db_error)?;
    }
    Ok(written)
}

/// Streams the entries of this backend's key groups from a key-group file.
fn stream_key_groups(
    storage: &dyn CheckpointStorageAccess,
    handle: &KeyGroupsStateHandle,
    db: &Db,
    range: KeyGroupRange,
    layout: KeyLayout,
    skip: &[String],
) -> Result<()> {
    let path = handle.file.path.as_str();
    let reader = KeyGroupsReader::open(storage, handle)?;
    // Per file state index: its column family, `None` for skipped states.
    let targets: Vec<Option<(String, StateKind)>> = reader
        .meta()
        .states
        .iter()
        .map(|m| (!skip.contains(&m.name)).then(|| (column_family_name(&m.name), m.kind)))
        .collect();
    let write = options::write_options();
    let mut batch = WriteBatch::default();
    let mut composite = Vec::with_capacity(64);
    reader.for_each_entry(storage, range, |key_group, entry| {
        let corrupt =
            |reason: String| StateError::corrupt(path, format!("key group {key_group}: {reason}"));
        let actual = layout.key_group_of_key(entry.key);
        if actual != key_group {
            return Err(corrupt(format!(
                "a key stored under key group {key_group} belongs to key group {actual}"
            )));
        }
        let Some((name, kind)) = targets
            .get(entry.state as usize)
            .ok_or_else(|| corrupt(format!("record of unknown state index {}", entry.state)))?
        else {
            return Ok(()); // a skipped state
        };
        if *kind == StateKind::List {
            if entry.value.is_empty() {
                return Ok(()); // an empty list is an absent list
            }
            if ListElements::new(entry.value).any(|e| e.is_err()) {
                return Err(corrupt(format!(
                    "malformed list value of state index {}",
                    entry.state
                )));
            }
        }
        composite.clear();
        if *kind == StateKind::Timers {
            let timestamp = entry.user_key.and_then(decode_timestamp).ok_or_else(|| {
                corrupt(format!(
                    "timer record of state index {} without an 8-byte timestamp",
                    entry.state
                ))
            })?;
            layout.write_timer(
                &mut composite,
                key_group,
                timestamp,
                entry.key,
                entry.namespace,
            );
        } else {
            layout.write_composite(
                &mut composite,
                key_group,
                entry.key,
                entry.namespace,
                entry.user_key,
            );
        }
        batch.put_cf(column_family(db, name)?, &composite, entry.value);
        if batch.size_in_bytes() >= BATCH_BYTES {
            db.write_opt(std::mem::take(&mut batch), &write)
                .map_err(db_error)?;
        }
        Ok(())
    })?;
    db.write_opt(batch, &write).map_err(db_error)
}

/// The column family `name` of `db` (restore looks names up once per
/// state; operations use the backend's resolved handles).
fn column_family<'a>(db: &'a Db, name: &str) -> Result<&'a rocksdb::ColumnFamily> {
    db.cf_handle(name).ok_or_else(|| StateError::Backend {
        backend: BACKEND_NAME,
        source: format!("column family '{name}' is missing").into(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_groups_split_into_contiguous_covering_parts() {
        for (start, end) in [(0, 128), (64, 128), (3, 10), (5, 6), (0, 32_768)] {
            let range = KeyGroupRange::new(start, end).unwrap();
            for parts in [0, 1, 2, 3, 4, 7, 200] {
                let split = split_key_groups(range, parts);
                assert_eq!(
                    split.len(),
                    parts.clamp(1, range.len()),
                    "{range:?} / {parts}"
                );
                assert_eq!(split.first().unwrap().start(), start);
                assert_eq!(split.last().unwrap().end_exclusive(), end);
                for pair in split.windows(2) {
                    assert_eq!(pair[0].end_exclusive(), pair[1].start(), "contiguous");
                }
                let sizes: Vec<usize> = split.iter().map(KeyGroupRange::len).collect();
                let (min, max) = (sizes.iter().min().unwrap(), sizes.iter().max().unwrap());
                assert!(
                    *min >= 1 && max - min <= 1,
                    "near-equal, non-empty: {sizes:?}"
                );
            }
        }
    }
}

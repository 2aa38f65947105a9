//! Parallel transfer of RocksDB files to and from checkpoint storage.
//!
//! Uploads and downloads run `threads` files at a time on scoped threads
//! (Flink's `state.backend.rocksdb.checkpoint.transfer.thread.num`, default
//! 4). Results come back in input order and the first error in input order
//! is reported, so a damaged checkpoint gives the same error every time.

use std::fs::File;
use std::io::{self, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

use parking_lot::Mutex;
use state_api::storage::write_with_retries;
use state_api::{CheckpointStorageAccess, FileHandle, NamedFile, Result, StateError, StateScope};

use crate::backend::local_error;

/// One local file to upload.
#[derive(Debug)]
pub(crate) struct Upload {
    /// RocksDB's name of the file (`000012.sst`, `MANIFEST-000005`, ...).
    pub(crate) name: String,
    /// Where it is on local disk.
    pub(crate) path: PathBuf,
    /// Where it goes.
    pub(crate) scope: StateScope,
}

/// Runs `job` on every item with up to `threads` threads; results in input
/// order.
pub(crate) fn run_parallel<T: Sync, R: Send>(
    items: &[T],
    threads: usize,
    job: impl Fn(&T) -> Result<R> + Sync,
) -> Result<Vec<R>> {
    let next = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Result<R>>>> =
        Mutex::new((0..items.len()).map(|_| None).collect());
    let workers = threads.clamp(1, items.len().max(1));
    std::thread::scope(|scope| {
        for _ in 0..workers {
            scope.spawn(|| {
                loop {
                    let index = next.fetch_add(1, Ordering::Relaxed);
                    let Some(item) = items.get(index) else { break };
                    let outcome = job(item);
                    let failed = outcome.is_err();
                    if let Some(slot) = results.lock().get_mut(index) {
                        *slot = Some(outcome);
                    }
                    if failed {
                        // Let the other workers stop early too.
                        next.store(items.len(), Ordering::Relaxed);
                    }
                }
            });
        }
    });
    let mut out = Vec::with_capacity(items.len());
    for (index, result) in results.into_inner().into_iter().enumerate() {
        match result {
            Some(Ok(value)) => out.push(value),
            Some(Err(e)) => return Err(e),
            // Skipped after an earlier failure: that failure comes first.
            None => {
                return Err(StateError::Backend {
                    backend: crate::BACKEND_NAME,
                    source: format!("transfer of item {index} did not run").into(),
                });
            }
        }
    }
    Ok(out)
}

/// Uploads `files` for checkpoint `checkpoint_id`, returning their handles
/// in order. When one fails, the ones already uploaded are deleted again
/// (best effort): no checkpoint will ever reference them.
///
/// # Errors
/// Local read errors, storage errors.
pub(crate) fn upload(
    storage: &dyn CheckpointStorageAccess,
    checkpoint_id: u64,
    files: &[Upload],
    threads: usize,
) -> Result<Vec<NamedFile>> {
    let done: Mutex<Vec<FileHandle>> = Mutex::new(Vec::new());
    let result = run_parallel(files, threads, |upload| {
        let source = File::open(&upload.path).map_err(|e| local_error("open", &upload.path, e))?;
        let file = upload_file(storage, checkpoint_id, upload.scope, &upload.name, &source)?;
        done.lock().push(file.clone());
        Ok(NamedFile {
            name: upload.name.clone(),
            file,
        })
    });
    if result.is_err() {
        for file in done.into_inner() {
            let _ = storage.delete(&file);
        }
    }
    result
}

/// Uploads the open local file `source` (RocksDB's name `name`) to
/// `scope`, with retries: a failed attempt starts over from the start of
/// the file, under a new name.
///
/// # Errors
/// Local read errors, storage errors.
pub(crate) fn upload_file(
    storage: &dyn CheckpointStorageAccess,
    checkpoint_id: u64,
    scope: StateScope,
    name: &str,
    source: &File,
) -> Result<FileHandle> {
    let shown = || format!("local {name}");
    write_with_retries(|| {
        let mut source = source;
        // A local failure, not one for `write_with_retries` to repeat.
        source
            .seek(SeekFrom::Start(0))
            .map_err(|e| local_error("seek", Path::new(name), e))?;
        let hint = format!("{}-{name}", crate::BACKEND_NAME);
        let mut out = storage.create_output(checkpoint_id, scope, &hint)?;
        io::copy(&mut source, &mut out).map_err(|e| StateError::storage("write", shown(), e))?;
        out.flush()
            .map_err(|e| StateError::storage("write", shown(), e))?;
        out.close()
    })
}

/// Whether `name` is a plain file name that cannot leave the directory it
/// is written into (handles come from storage and may be tampered with).
pub(crate) fn is_plain_file_name(name: &str) -> bool {
    !name.is_empty() && name != "." && name != ".." && !name.contains(['/', '\\', '\0'])
}

/// Downloads `files` into `dir` under their RocksDB names. The storage
/// verifies every file's size and checksum.
///
/// # Errors
/// [`StateError::FileNotFound`], [`StateError::Corrupt`] (also for file names
/// that are not plain names, or listed twice), local write errors.
pub(crate) fn download(
    storage: &dyn CheckpointStorageAccess,
    files: &[&NamedFile],
    dir: &Path,
    threads: usize,
) -> Result<()> {
    for (index, file) in files.iter().enumerate() {
        if !is_plain_file_name(&file.name) {
            return Err(StateError::corrupt(
                file.file.path.clone(),
                format!(
                    "handle names it '{}', which is not a plain file name",
                    file.name
                ),
            ));
        }
        if files.iter().take(index).any(|f| f.name == file.name) {
            return Err(StateError::corrupt(
                file.file.path.clone(),
                format!("handle lists the file name '{}' twice", file.name),
            ));
        }
    }
    run_parallel(files, threads, |file| {
        let bytes = storage.read(&file.file)?;
        let target = dir.join(&file.name);
        std::fs::write(&target, &bytes).map_err(|e| local_error("write", &target, e))
    })
    .map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_results_keep_order_and_first_error() {
        let items: Vec<u32> = (0..20).collect();
        let doubled = run_parallel(&items, 4, |i| Ok(i * 2)).expect("no error");
        assert_eq!(doubled, items.iter().map(|i| i * 2).collect::<Vec<_>>());
        let err = run_parallel(&items, 4, |i| {
            if *i >= 5 {
                Err(StateError::FileNotFound {
                    path: i.to_string(),
                })
            } else {
                Ok(*i)
            }
        })
        .expect_err("fails");
        assert!(matches!(err, StateError::FileNotFound { path } if path == "5"));
        assert!(
            run_parallel(&[] as &[u32], 4, |i| Ok(*i))
                .expect("empty")
                .is_empty()
        );
    }

    #[test]
    fn only_plain_names_are_accepted() {
        assert!(is_plain_file_name("000012.sst"));
        for bad in ["", ".", "..", "../x", "a/b", "a\\b"] {
            assert!(!is_plain_file_name(bad), "{bad}");
        }
    }
}

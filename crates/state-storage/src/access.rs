//! [`ObjectStoreCheckpointStorage`]: [`CheckpointStorageAccess`] on any
//! `object_store` backend.

use std::collections::VecDeque;
use std::fmt;
use std::io;
use std::ops::Range;
use std::sync::Arc;

use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::memory::InMemory;
use object_store::path::Path;
use object_store::{
    GetOptions, MultipartUpload, ObjectStore, ObjectStoreExt, PutMode, PutOptions, PutPayload,
};
use state_api::{
    CheckpointOutputStream, CheckpointStorageAccess, FileHandle, Result, StateError, StateScope,
};
use tokio::task::JoinHandle;

use crate::errors::from_store;
use crate::framing::{self, FOOTER_LEN, Footer};
use crate::layout;
use crate::retry::{RetryPolicy, retry};
use crate::runtime::BlockingRuntime;

/// Files up to this many payload bytes are uploaded with one `put` on
/// close; larger ones stream as multipart uploads in parts of this size
/// (above S3's 5 MiB minimum part size).
pub const MULTIPART_PART_SIZE: usize = 8 * 1024 * 1024;

/// Parts of one multipart upload in flight at a time; bounds the memory of
/// a stream to about `(1 + MAX_PARTS_IN_FLIGHT) * MULTIPART_PART_SIZE`.
const MAX_PARTS_IN_FLIGHT: usize = 2;

/// HEAD requests of [`ObjectStoreCheckpointStorage::missing_objects`] in
/// flight at a time.
const MAX_HEADS_IN_FLIGHT: usize = 16;

/// Checkpoint storage of one job on an [`ObjectStore`]: local disk, memory,
/// S3, GCS or Azure.
///
/// All files live under the job directory [`root`](Self::root)
/// (`<base>/<job-id>`) in Flink's layout (see [`crate::layout`]), each
/// with a checksum footer (see [`crate::framing`]).
///
/// The storage owns a small I/O runtime and polls every future of the
/// object store there; its blocking methods may be called from any thread,
/// also from inside another tokio runtime, provided the store does its I/O
/// on the runtime polling it (see [`new`](Self::new)). Clones share the
/// store and the runtime.
#[derive(Clone)]
pub struct ObjectStoreCheckpointStorage {
    store: Arc<dyn ObjectStore>,
    root: Path,
    location: String,
    layout: layout::DirectoryLayout,
    runtime: Arc<BlockingRuntime>,
    retry: RetryPolicy,
}

impl ObjectStoreCheckpointStorage {
    /// Storage of job `job_id` under `base_prefix` of `store`: the job
    /// directory is `<base_prefix>/<job_id>`.
    ///
    /// # Runtimes
    /// Every future of `store` is polled on the storage's own I/O runtime
    /// while the calling thread blocks. That works from any thread, inside a
    /// tokio runtime or not, when `store` does its I/O on the runtime that
    /// polls it: every `object_store` backend does so by default (HTTP
    /// connections, `spawn_blocking` of the local file system). A store
    /// built to spawn its I/O on some other runtime's handle (for example
    /// with a `SpawnedReqwestConnector`) depends on that runtime making
    /// progress: calling the storage from inside it when it is a
    /// current-thread runtime blocks its only thread and deadlocks (on a
    /// multi-thread runtime each call blocks one worker, and it deadlocks
    /// once every worker is blocked so). Such a store must spawn
    /// on a runtime that none of the storage's callers block, or the
    /// storage must be called only from outside that runtime (for example
    /// through `tokio::task::spawn_blocking`). The storage cannot tell which
    /// runtime a store uses, so it cannot guard against this.
    ///
    /// # Errors
    /// [`StateError::Config`] for a job id that is not one plain path
    /// segment; [`StateError::Storage`] when the I/O runtime cannot start.
    pub fn new(store: Arc<dyn ObjectStore>, base_prefix: Path, job_id: &str) -> Result<Self> {
        let location = format!("{store}/{base_prefix}");
        Self::with_location(store, base_prefix, job_id, location)
    }

    /// Storage of job `job_id` in a new, empty in-memory store (tests,
    /// examples).
    ///
    /// # Errors
    /// As [`new`](Self::new).
    pub fn in_memory(job_id: &str) -> Result<Self> {
        Self::with_location(
            Arc::new(InMemory::new()),
            Path::default(),
            job_id,
            "memory:///".to_string(),
        )
    }

    /// Storage of job `job_id` in the local directory `dir` (created when
    /// missing): files go to `<dir>/<job_id>/`.
    ///
    /// # Errors
    /// [`StateError::Storage`] when the directory cannot be created or
    /// opened; as [`new`](Self::new).
    pub fn local(dir: impl AsRef<std::path::Path>, job_id: &str) -> Result<Self> {
        let dir = dir.as_ref();
        let shown = dir.display().to_string();
        std::fs::create_dir_all(dir).map_err(|e| StateError::storage("create dir", &shown, e))?;
        let (store, location) = Self::local_store(dir)?;
        Self::with_location(store, Path::default(), job_id, location)
    }

    /// Storage rooted at the existing local directory `dir` itself, whatever
    /// its name (tools reading a moved savepoint, a job directory).
    ///
    /// # Errors
    /// [`StateError::FileNotFound`] when `dir` is not a directory (nothing
    /// is created); [`StateError::Storage`] when it cannot be opened.
    pub fn local_dir(dir: impl AsRef<std::path::Path>) -> Result<Self> {
        let dir = dir.as_ref();
        let missing = || StateError::FileNotFound {
            path: dir.display().to_string(),
        };
        let dir = std::fs::canonicalize(dir).map_err(|_| missing())?;
        if !dir.is_dir() {
            return Err(missing());
        }
        let (store, location) = Self::local_store(&dir)?;
        Self::rooted(store, Path::default(), location)
    }

    /// The local file system store at `dir` and its `file://` location.
    fn local_store(dir: &std::path::Path) -> Result<(Arc<dyn ObjectStore>, String)> {
        let shown = dir.display().to_string();
        let store = object_store::local::LocalFileSystem::new_with_prefix(dir)
            .map_err(|e| StateError::storage("open dir", &shown, e))?
            // Deleting a checkpoint's files also removes its empty directory.
            .with_automatic_cleanup(true)
            // A committed `_metadata` must never survive a crash that its
            // state files do not: sync files and directory entries, as
            // remote object stores do implicitly.
            .with_fsync(true);
        // Messages show the absolute directory, however `dir` was given.
        let absolute = std::fs::canonicalize(dir).map_or(shown, |p| p.display().to_string());
        Ok((Arc::new(store), format!("file://{absolute}")))
    }

    /// Shared constructor; `location` describes the base for messages.
    pub(crate) fn with_location(
        store: Arc<dyn ObjectStore>,
        base_prefix: Path,
        job_id: &str,
        location: String,
    ) -> Result<Self> {
        layout::validate_job_id(job_id)?;
        let location = if location.ends_with('/') {
            format!("{location}{job_id}")
        } else {
            format!("{location}/{job_id}")
        };
        Self::rooted(store, base_prefix.join(job_id), location)
    }

    /// The storage of the directory `root` of `store`, shown as `location`.
    fn rooted(store: Arc<dyn ObjectStore>, root: Path, location: String) -> Result<Self> {
        Ok(Self {
            store,
            root,
            location,
            layout: layout::DirectoryLayout::Job,
            runtime: Arc::new(BlockingRuntime::new()?),
            retry: RetryPolicy::default(),
        })
    }

    /// The same storage with another retry policy for its requests
    /// (builder style; [`RetryPolicy::default`] unless set). See
    /// [`crate::retry`].
    pub fn with_retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// How requests are retried.
    pub fn retry_policy(&self) -> RetryPolicy {
        self.retry
    }

    /// The same storage with another file layout (builder style): a
    /// savepoint directory puts every file at its top.
    pub fn with_layout(mut self, layout: layout::DirectoryLayout) -> Self {
        self.layout = layout;
        self
    }

    /// How new files are laid out.
    pub fn layout(&self) -> layout::DirectoryLayout {
        self.layout
    }

    /// The underlying object store.
    pub fn object_store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// The job directory in the object store; handle paths are relative to
    /// it.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs `fut` on the storage's I/O runtime, blocking until it is done.
    pub(crate) fn run<F, T>(&self, operation: &'static str, path: &str, fut: F) -> Result<T>
    where
        F: std::future::Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        self.runtime.run(operation, path, fut)
    }

    /// Reads the whole stored object at `relative` (a path relative to the
    /// root), framing included; for files without a handle such as
    /// `_metadata`.
    ///
    /// # Errors
    /// [`StateError::FileNotFound`], [`StateError::Storage`].
    pub fn get_object(&self, relative: &str) -> Result<Bytes> {
        let location = layout::resolve(&self.root, relative)?;
        let store = Arc::clone(&self.store);
        let path = relative.to_string();
        let policy = self.retry;
        self.run("get", relative, async move {
            retry(policy, || async {
                store.get(&location).await?.bytes().await
            })
            .await
            .map_err(|e| from_store("get", &path, e))
        })
    }

    /// Reads the whole stored object at `relative` as
    /// [`get_object`](Self::get_object) does, refusing one of more than
    /// `limit` bytes before loading it (a damaged or hostile `_metadata`
    /// must not make the reader load gigabytes).
    ///
    /// # Errors
    /// [`StateError::Corrupt`] for an object over the limit;
    /// [`StateError::FileNotFound`], [`StateError::Storage`].
    pub fn get_object_at_most(&self, relative: &str, limit: u64) -> Result<Bytes> {
        let location = layout::resolve(&self.root, relative)?;
        let store = Arc::clone(&self.store);
        let path = relative.to_string();
        let policy = self.retry;
        self.run("get", relative, async move {
            let result = retry(policy, || store.get(&location))
                .await
                .map_err(|e| from_store("get", &path, e))?;
            if result.meta.size > limit {
                return Err(StateError::corrupt(
                    path,
                    format!("{} bytes, more than the limit of {limit}", result.meta.size),
                ));
            }
            result
                .bytes()
                .await
                .map_err(|e| from_store("get", &path, e))
        })
    }

    /// Stores `bytes` (framing included) at `relative`; with `create_only`
    /// the put fails with `Ok(false)` when another object exists there
    /// already.
    ///
    /// Transient errors are retried. A create-only put that finds an object
    /// with exactly `bytes` reports success: an earlier attempt whose answer
    /// was lost stored it (or another writer stored the same bytes).
    ///
    /// # Errors
    /// [`StateError::Storage`] when the put still fails after the retries;
    /// the object may then exist or not.
    pub(crate) fn put_object(
        &self,
        relative: &str,
        bytes: Bytes,
        create_only: bool,
    ) -> Result<bool> {
        let location = layout::resolve(&self.root, relative)?;
        let store = Arc::clone(&self.store);
        let path = relative.to_string();
        let mode = if create_only {
            PutMode::Create
        } else {
            PutMode::Overwrite
        };
        let policy = self.retry;
        self.run("put", relative, async move {
            let put = retry(policy, || {
                let payload = PutPayload::from(bytes.clone());
                store.put_opts(&location, payload, PutOptions::from(mode.clone()))
            })
            .await;
            match put {
                Ok(_) => Ok(true),
                Err(object_store::Error::AlreadyExists { .. }) => {
                    let stored = retry(policy, || async {
                        store.get(&location).await?.bytes().await
                    })
                    .await
                    .map_err(|e| StateError::storage("put", path, e))?;
                    Ok(stored == bytes)
                }
                Err(e) => Err(StateError::storage("put", path, e)),
            }
        })
    }

    /// Deletes the object at `relative`; a missing object is not an error.
    ///
    /// # Errors
    /// [`StateError::Storage`].
    pub(crate) fn delete_object(&self, relative: &str) -> Result<()> {
        let location = layout::resolve(&self.root, relative)?;
        let store = Arc::clone(&self.store);
        let path = relative.to_string();
        let policy = self.retry;
        self.run("delete", relative, async move {
            match retry(policy, || store.delete(&location)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
                Err(e) => Err(StateError::storage("delete", path, e)),
            }
        })
    }

    /// Paths (relative to the job directory) of every stored file under
    /// `relative_prefix` (a directory such as `chk-3` or `shared`), or of
    /// the whole job directory for `None`, sorted.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] for a prefix that is not a relative path;
    /// [`StateError::Storage`] when listing fails.
    pub fn list_files(&self, relative_prefix: Option<&str>) -> Result<Vec<String>> {
        let prefix = match relative_prefix {
            Some(p) => layout::resolve(&self.root, p)?,
            None => self.root.clone(),
        };
        // The job directory itself is named by its location in errors.
        let shown = relative_prefix.map_or_else(|| self.location.clone(), str::to_string);
        let store = Arc::clone(&self.store);
        let root = self.root.clone();
        let policy = self.retry;
        self.run("list", &shown.clone(), async move {
            let metas: Vec<_> = retry(policy, || store.list(Some(&prefix)).try_collect())
                .await
                .map_err(|e| StateError::storage("list", shown, e))?;
            let mut paths: Vec<String> = metas
                .iter()
                .filter_map(|m| layout::relative_to(&root, &m.location))
                .collect();
            paths.sort();
            Ok(paths)
        })
    }

    /// Whether an object exists at `relative`.
    ///
    /// # Errors
    /// [`StateError::Storage`].
    pub(crate) fn exists(&self, relative: &str) -> Result<bool> {
        let location = layout::resolve(&self.root, relative)?;
        let store = Arc::clone(&self.store);
        let path = relative.to_string();
        let policy = self.retry;
        self.run("head", relative, async move {
            match retry(policy, || store.head(&location)).await {
                Ok(_) => Ok(true),
                Err(object_store::Error::NotFound { .. }) => Ok(false),
                Err(e) => Err(StateError::storage("head", path, e)),
            }
        })
    }

    /// The paths among `relative_paths` that have no object, in the given
    /// order: one HEAD per path, up to 16 at a time.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] for a path that is not a relative path;
    /// [`StateError::Storage`] for the first HEAD that fails otherwise.
    pub(crate) fn missing_objects(&self, relative_paths: Vec<String>) -> Result<Vec<String>> {
        let Some(first) = relative_paths.first().cloned() else {
            return Ok(Vec::new());
        };
        let targets = relative_paths
            .into_iter()
            .map(|path| Ok((layout::resolve(&self.root, &path)?, path)))
            .collect::<Result<Vec<_>>>()?;
        let store = Arc::clone(&self.store);
        let policy = self.retry;
        self.run("head", &first, async move {
            let heads = targets.into_iter().map(|(location, path)| {
                let store = Arc::clone(&store);
                async move {
                    match retry(policy, || store.head(&location)).await {
                        Ok(_) => Ok(None),
                        Err(object_store::Error::NotFound { .. }) => Ok(Some(path)),
                        Err(e) => Err(StateError::storage("head", path, e)),
                    }
                }
            });
            let found: Vec<Option<String>> = futures::stream::iter(heads)
                .buffered(MAX_HEADS_IN_FLIGHT)
                .try_collect()
                .await?;
            Ok(found.into_iter().flatten().collect())
        })
    }

    /// Names of the directories directly in the root directory (`chk-3`,
    /// `shared`, ...), sorted.
    ///
    /// # Errors
    /// [`StateError::Storage`].
    pub fn list_dirs(&self) -> Result<Vec<String>> {
        self.list_dirs_in(None)
    }

    /// The directories directly in `relative_prefix` (or the root for
    /// `None`), as paths relative to the root (`job-1/chk-3`), sorted.
    ///
    /// # Errors
    /// [`StateError::Corrupt`] for a prefix that is not a relative path;
    /// [`StateError::Storage`].
    pub fn list_dirs_in(&self, relative_prefix: Option<&str>) -> Result<Vec<String>> {
        let store = Arc::clone(&self.store);
        let root = self.root.clone();
        let prefix = match relative_prefix {
            Some(p) => layout::resolve(&self.root, p)?,
            None => self.root.clone(),
        };
        let shown = relative_prefix.map_or_else(|| self.location.clone(), str::to_string);
        let policy = self.retry;
        self.run("list", &shown.clone(), async move {
            let listing = retry(policy, || store.list_with_delimiter(Some(&prefix)))
                .await
                .map_err(|e| StateError::storage("list", shown, e))?;
            let mut dirs: Vec<String> = listing
                .common_prefixes
                .iter()
                .filter_map(|p| layout::relative_to(&root, p))
                .collect();
            dirs.sort();
            Ok(dirs)
        })
    }

    /// Deletes every object under `relative_prefix` (a directory such as
    /// `chk-3`), or in the whole root for `None`. Deletes as much as it can
    /// and reports the first failure.
    ///
    /// # Errors
    /// [`StateError::Storage`].
    pub(crate) fn delete_prefix(&self, relative_prefix: Option<&str>) -> Result<()> {
        let mut first_error = None;
        for path in self.list_files(relative_prefix)? {
            if let Err(e) = self.delete_object(&path) {
                first_error.get_or_insert(e);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Checks a stored file as [`read`](CheckpointStorageAccess::read)
    /// does (it exists, and its size and CRC-32C match the handle and the
    /// footer), streaming it: memory stays bounded whatever the file's
    /// size. For tools that verify whole checkpoints.
    ///
    /// # Errors
    /// [`StateError::FileNotFound`], [`StateError::Corrupt`] naming the
    /// mismatch, [`StateError::Storage`].
    pub fn verify_file(&self, file: &FileHandle) -> Result<()> {
        let location = self.resolve(file)?;
        let store = Arc::clone(&self.store);
        let file = file.clone();
        let path = file.path.clone();
        let policy = self.retry;
        self.run("verify", &path.clone(), async move {
            let result = retry(policy, || store.get(&location))
                .await
                .map_err(|e| from_store("get", &path, e))?;
            framing::check_stored_len(&file, result.meta.size)?;
            let mut stream = result.into_stream();
            let mut crc = 0u32;
            let mut seen = 0u64;
            // The bytes after the payload: the footer, or more when the
            // object is longer than the handle says.
            let mut tail = Vec::with_capacity(FOOTER_LEN);
            while let Some(chunk) = stream.next().await {
                let chunk = chunk.map_err(|e| from_store("get", &path, e))?;
                let payload_part = usize::try_from(file.size.saturating_sub(seen))
                    .map_or(chunk.len(), |left| left.min(chunk.len()));
                let (payload, rest) = chunk.split_at(payload_part);
                crc = crc32c::crc32c_append(crc, payload);
                if tail.len() < 64 * 1024 {
                    tail.extend_from_slice(rest);
                }
                seen += chunk.len() as u64;
            }
            let footer = Footer::decode(&tail)
                .map_err(|reason| StateError::corrupt(path.clone(), reason))?;
            let payload_len = seen.saturating_sub(FOOTER_LEN as u64);
            // An object longer than handle + footer has bytes the CRC above
            // did not cover; the length check reports it.
            framing::check(&file, &footer, payload_len, crc)
        })
    }

    fn resolve(&self, file: &FileHandle) -> Result<Path> {
        layout::resolve(&self.root, &file.path)
    }
}

impl fmt::Debug for ObjectStoreCheckpointStorage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreCheckpointStorage")
            .field("location", &self.location)
            .field("root", &self.root.as_ref())
            .finish_non_exhaustive()
    }
}

impl CheckpointStorageAccess for ObjectStoreCheckpointStorage {
    fn create_output(
        &self,
        checkpoint_id: u64,
        scope: StateScope,
        name_hint: &str,
    ) -> Result<Box<dyn CheckpointOutputStream>> {
        let (path, scope) = self.layout.new_file(checkpoint_id, scope, name_hint);
        let location = layout::resolve(&self.root, &path)?;
        Ok(Box::new(ObjectOutputStream {
            storage: self.clone(),
            path,
            location,
            scope,
            crc: 0,
            position: 0,
            buffer: Vec::new(),
            multipart: None,
            failed: false,
        }))
    }

    fn read(&self, file: &FileHandle) -> Result<Bytes> {
        let location = self.resolve(file)?;
        let expected_len = file.size.saturating_add(FOOTER_LEN as u64);
        let store = Arc::clone(&self.store);
        let path = file.path.clone();
        let policy = self.retry;
        let stored = self.run("get", &file.path, async move {
            let result = retry(policy, || store.get(&location))
                .await
                .map_err(|e| from_store("get", &path, e))?;
            // Checked before a byte is loaded: a handle (hostile, or of
            // another file) must not make the reader load a huge object.
            check_stored_len(&path, result.meta.size, expected_len)?;
            result
                .bytes()
                .await
                .map_err(|e| from_store("get", &path, e))
        })?;
        let payload = framing::verify(file, &stored)?;
        Ok(stored.slice(payload))
    }

    fn read_range(&self, file: &FileHandle, range: Range<u64>) -> Result<Bytes> {
        if range.start > range.end || range.end > file.size {
            return Err(StateError::corrupt(
                file.path.clone(),
                format!(
                    "range {}..{} is outside the file's {} bytes",
                    range.start, range.end, file.size
                ),
            ));
        }
        let location = self.resolve(file)?;
        let expected_len = file.size.saturating_add(FOOTER_LEN as u64);
        let store = Arc::clone(&self.store);
        let path = file.path.clone();
        let policy = self.retry;
        self.run("get range", &file.path, async move {
            if range.is_empty() {
                // Stores refuse empty ranges; still report a missing or
                // truncated file as a non-empty read would.
                let meta = retry(policy, || store.head(&location))
                    .await
                    .map_err(|e| from_store("head", &path, e))?;
                check_stored_len(&path, meta.size, expected_len)?;
                return Ok(Bytes::new());
            }
            let get = || {
                let options = GetOptions::new().with_range(Some(range.clone()));
                store.get_opts(&location, options)
            };
            let result = match retry(policy, get).await {
                Ok(result) => result,
                Err(e @ object_store::Error::NotFound { .. }) => {
                    return Err(from_store("get range", &path, e));
                }
                Err(e) => {
                    // Stores refuse ranges beyond the object's end; tell a
                    // truncated file apart from a failing store.
                    if let Ok(meta) = store.head(&location).await {
                        check_stored_len(&path, meta.size, expected_len)?;
                    }
                    return Err(from_store("get range", &path, e));
                }
            };
            check_stored_len(&path, result.meta.size, expected_len)?;
            let bytes = result
                .bytes()
                .await
                .map_err(|e| from_store("get range", &path, e))?;
            if bytes.len() as u64 != range.end - range.start {
                return Err(StateError::corrupt(
                    path,
                    format!(
                        "truncated: asked for {} bytes at {}, got {}",
                        range.end - range.start,
                        range.start,
                        bytes.len()
                    ),
                ));
            }
            Ok(bytes)
        })
    }

    fn delete(&self, file: &FileHandle) -> Result<()> {
        self.delete_object(&file.path)
    }

    fn location(&self) -> String {
        self.location.clone()
    }
}

/// Checks that a stored object is exactly as long as its handle says.
fn check_stored_len(path: &str, stored: u64, expected: u64) -> Result<()> {
    if stored < expected {
        Err(StateError::corrupt(
            path,
            format!(
                "truncated: {stored} bytes stored, handle says {} payload bytes plus a {FOOTER_LEN}-byte footer",
                expected.saturating_sub(FOOTER_LEN as u64)
            ),
        ))
    } else if stored > expected {
        Err(StateError::corrupt(
            path,
            format!(
                "size mismatch: {stored} bytes stored, handle says {} payload bytes plus a {FOOTER_LEN}-byte footer",
                expected.saturating_sub(FOOTER_LEN as u64)
            ),
        ))
    } else {
        Ok(())
    }
}

/// A multipart upload under way.
struct Multipart {
    // `None` once completed or aborted.
    upload: Option<Box<dyn MultipartUpload>>,
    in_flight: VecDeque<JoinHandle<object_store::Result<()>>>,
}

/// The [`CheckpointOutputStream`] of [`ObjectStoreCheckpointStorage`]:
/// buffers, checksums incrementally, and switches to a multipart upload
/// once the file outgrows one part.
struct ObjectOutputStream {
    storage: ObjectStoreCheckpointStorage,
    path: String,
    location: Path,
    scope: StateScope,
    crc: u32,
    position: u64,
    buffer: Vec<u8>,
    multipart: Option<Multipart>,
    // Set after a failed upload: the file can no longer be completed.
    failed: bool,
}

impl ObjectOutputStream {
    /// Uploads the full buffer as the next part, starting the multipart
    /// upload on the first call.
    fn flush_part(&mut self) -> Result<()> {
        if self.multipart.is_none() {
            let store = Arc::clone(&self.storage.store);
            let location = self.location.clone();
            let path = self.path.clone();
            let policy = self.storage.retry;
            let upload = self
                .storage
                .run("start multipart upload", &self.path, async move {
                    retry(policy, || store.put_multipart(&location))
                        .await
                        .map_err(|e| StateError::storage("start multipart upload", path, e))
                })?;
            self.multipart = Some(Multipart {
                upload: Some(upload),
                in_flight: VecDeque::new(),
            });
        }
        let part = Bytes::from(std::mem::take(&mut self.buffer));
        let path = self.path.clone();
        let (Some(handle), Some(multipart)) = (self.storage.runtime.handle(), &mut self.multipart)
        else {
            return Err(StateError::storage(
                "upload part",
                path,
                "the storage's I/O runtime is shut down",
            ));
        };
        let Some(upload) = multipart.upload.as_mut() else {
            return Err(StateError::storage(
                "upload part",
                path,
                "upload already finished",
            ));
        };
        // Some stores start the part's work when it is created, which needs
        // the runtime's context.
        let part_future = {
            let _context = handle.enter();
            upload.put_part(PutPayload::from(part))
        };
        multipart.in_flight.push_back(handle.spawn(part_future));
        while multipart.in_flight.len() > MAX_PARTS_IN_FLIGHT {
            wait_for_part(&path, &mut multipart.in_flight)?;
        }
        Ok(())
    }

    /// Sends the last part, waits for all parts and completes the upload.
    fn finish_multipart(&mut self) -> Result<()> {
        self.flush_part()?;
        let path = self.path.clone();
        let Some(multipart) = self.multipart.as_mut() else {
            return Err(StateError::storage("complete upload", path, "no upload"));
        };
        while !multipart.in_flight.is_empty() {
            wait_for_part(&path, &mut multipart.in_flight)?;
        }
        let Some(mut upload) = multipart.upload.take() else {
            return Err(StateError::storage(
                "complete upload",
                path,
                "upload already finished",
            ));
        };
        let shown = path.clone();
        let result = self.storage.run("complete upload", &path, async move {
            match upload.complete().await {
                Ok(_) => Ok(Ok(())),
                // Hand the upload back so it can be aborted.
                Err(e) => Ok(Err((
                    upload,
                    StateError::storage("complete upload", shown, e),
                ))),
            }
        })?;
        result.map_err(|(upload, e)| {
            multipart.upload = Some(upload);
            e
        })
    }

    /// A failed close: the last request may still have been applied (its
    /// answer lost), so the file is deleted, best effort; whatever is left
    /// is an orphan for the store's garbage collection.
    fn fail<T>(&mut self, error: StateError) -> Result<T> {
        self.failed = true;
        let _ = self.storage.delete_object(&self.path);
        Err(error)
    }
}

/// Waits for the oldest part upload in flight.
fn wait_for_part(
    path: &str,
    in_flight: &mut VecDeque<JoinHandle<object_store::Result<()>>>,
) -> Result<()> {
    let Some(part) = in_flight.pop_front() else {
        return Ok(());
    };
    match futures::executor::block_on(part) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(StateError::storage("upload part", path, e)),
        Err(e) => Err(StateError::storage("upload part", path, e)),
    }
}

impl io::Write for ObjectOutputStream {
    fn write(&mut self, mut buf: &[u8]) -> io::Result<usize> {
        if self.failed {
            return Err(io::Error::other(format!(
                "checkpoint file '{}' failed to upload earlier",
                self.path
            )));
        }
        let written = buf.len();
        self.crc = crc32c::crc32c_append(self.crc, buf);
        self.position += written as u64;
        while !buf.is_empty() {
            // Flush a full buffer only when more bytes follow, so a file of
            // exactly one part still goes up in a single put.
            if self.buffer.len() >= MULTIPART_PART_SIZE
                && let Err(e) = self.flush_part()
            {
                self.failed = true;
                return Err(io::Error::other(e));
            }
            let room = MULTIPART_PART_SIZE - self.buffer.len();
            let (now, later) = buf.split_at(room.min(buf.len()));
            self.buffer.extend_from_slice(now);
            buf = later;
        }
        Ok(written)
    }

    fn flush(&mut self) -> io::Result<()> {
        // Bytes become visible only on close; nothing to push early.
        Ok(())
    }
}

impl CheckpointOutputStream for ObjectOutputStream {
    fn position(&self) -> u64 {
        self.position
    }

    fn close(mut self: Box<Self>) -> Result<FileHandle> {
        if self.failed {
            return Err(StateError::storage(
                "close",
                self.path.clone(),
                "an earlier write failed",
            ));
        }
        let footer = Footer {
            crc32c: self.crc,
            payload_len: self.position,
        };
        self.buffer.extend_from_slice(&footer.encode());
        if self.multipart.is_some() {
            if let Err(e) = self.finish_multipart() {
                // Drop aborts the upload.
                return self.fail(e);
            }
        } else {
            let bytes = Bytes::from(std::mem::take(&mut self.buffer));
            let store = Arc::clone(&self.storage.store);
            let location = self.location.clone();
            let path = self.path.clone();
            let policy = self.storage.retry;
            let put = self.storage.run("put", &self.path, async move {
                // The name is unique: a repeated put writes the same bytes.
                retry(policy, || {
                    store.put(&location, PutPayload::from(bytes.clone()))
                })
                .await
                .map(|_| ())
                .map_err(|e| StateError::storage("put", path, e))
            });
            if let Err(e) = put {
                return self.fail(e);
            }
        }
        Ok(FileHandle {
            path: std::mem::take(&mut self.path),
            scope: self.scope,
            size: self.position,
            crc32c: self.crc,
        })
    }
}

impl Drop for ObjectOutputStream {
    fn drop(&mut self) {
        // A stream dropped before a successful close must leave nothing
        // visible: abort the multipart upload (a single put only happens in
        // close, so there is nothing to undo otherwise).
        let Some(multipart) = self.multipart.as_mut() else {
            return;
        };
        for part in multipart.in_flight.drain(..) {
            part.abort();
        }
        if let Some(mut upload) = multipart.upload.take() {
            // Best effort: a failed abort leaves an incomplete upload that
            // is invisible to readers and listing, which stores expire.
            let _ = self.storage.run("abort upload", &self.path, async move {
                upload
                    .abort()
                    .await
                    .map_err(|e| StateError::storage("abort upload", "", e))
            });
        }
    }
}

#[cfg(feature = "conformance")]
mod fault {
    use bytes::Bytes;
    use state_api::conformance::FaultInjector;
    use state_api::{FileHandle, Result, StateError};

    use super::ObjectStoreCheckpointStorage;

    impl FaultInjector for ObjectStoreCheckpointStorage {
        fn corrupt_byte(&self, file: &FileHandle, payload_offset: u64) -> Result<()> {
            let mut stored = self.get_object(&file.path)?.to_vec();
            let byte = usize::try_from(payload_offset)
                .ok()
                .and_then(|i| stored.get_mut(i))
                .ok_or_else(|| {
                    StateError::storage(
                        "corrupt",
                        file.path.clone(),
                        format!("offset {payload_offset} is beyond the stored object"),
                    )
                })?;
            *byte ^= 0xff;
            self.put_object(&file.path, Bytes::from(stored), false)
                .map(|_| ())
        }

        fn truncate(&self, file: &FileHandle, keep_bytes: u64) -> Result<()> {
            let stored = self.get_object(&file.path)?;
            let keep = usize::try_from(keep_bytes)
                .unwrap_or(usize::MAX)
                .min(stored.len());
            self.put_object(&file.path, stored.slice(..keep), false)
                .map(|_| ())
        }

        fn remove(&self, file: &FileHandle) -> Result<()> {
            self.delete_object(&file.path)
        }
    }
}

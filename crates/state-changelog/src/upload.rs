//! The DSTL uploader: batches log segments of every backend of a process
//! into files and uploads them on a thread pool, with retries, timeouts and
//! back-pressure.
//!
//! * Writers [`submit`](ChangelogUploader::submit) encoded segments. A
//!   scheduler thread collects them for [`DstlConfig::persist_delay`] or
//!   until [`DstlConfig::persist_size_threshold`] bytes, then hands each
//!   storage's segments to an upload thread as **one file**, as Flink groups
//!   the changes of all backends of a task manager.
//! * An upload attempt that fails or takes longer than
//!   [`DstlConfig::upload_timeout`] is followed by another, up to
//!   [`DstlConfig::max_attempts`]; a timed-out attempt keeps running and
//!   the first attempt to succeed is the upload. One that succeeds after
//!   the upload was decided deletes its own file. The segment's [`SegmentSlot`] then holds the
//!   segment's handle or the error.
//! * `submit` blocks while more than [`DstlConfig::max_in_flight`] bytes wait
//!   for upload, which slows the writers down instead of growing memory.
//! * Files are tracked until every segment in them is released by its
//!   writer. A file that no completed checkpoint referenced is then deleted
//!   here; once a checkpoint referencing it completed, the checkpoint
//!   store's shared-state registry owns it and deletes it after
//!   subsumption.

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, mpsc};
use std::thread::JoinHandle;
use std::time::Instant;

use bytes::Bytes;
use parking_lot::{Condvar, Mutex};
use state_api::{
    ChangelogSegment, CheckpointStorageAccess, FileHandle, Result, StateError, StateScope,
};

use crate::config::DstlConfig;
use crate::metrics::UploaderMetrics;
use crate::segment;

/// Name hint of log files in checkpoint storage.
const FILE_HINT: &str = "changelog";

/// The outcome of one submitted segment, filled in by the uploader.
#[derive(Debug, Default)]
pub struct SegmentSlot {
    state: Mutex<SlotState>,
    done: Condvar,
}

#[derive(Debug, Default)]
struct SlotState {
    outcome: Option<std::result::Result<ChangelogSegment, String>>,
    /// The writer no longer needs the segment.
    released: bool,
    /// ... but a checkpoint may still be committed with it: never delete.
    keep_file: bool,
}

impl SegmentSlot {
    /// Waits for the upload and returns the segment's handle.
    ///
    /// # Errors
    /// [`StateError::Storage`] when every attempt failed.
    pub fn wait(&self) -> Result<ChangelogSegment> {
        let mut state = self.state.lock();
        while state.outcome.is_none() {
            self.done.wait(&mut state);
        }
        match state.outcome.as_ref() {
            Some(Ok(segment)) => Ok(segment.clone()),
            Some(Err(message)) => Err(upload_error(message.clone())),
            None => unreachable!("waited for an outcome"),
        }
    }

    /// The outcome if the upload finished: `Some(true)` uploaded,
    /// `Some(false)` failed.
    pub fn finished(&self) -> Option<bool> {
        self.state.lock().outcome.as_ref().map(|o| o.is_ok())
    }

    /// The uploaded segment, if the upload succeeded.
    pub fn uploaded(&self) -> Option<ChangelogSegment> {
        match self.state.lock().outcome.as_ref() {
            Some(Ok(segment)) => Some(segment.clone()),
            _ => None,
        }
    }
}

fn upload_error(message: String) -> StateError {
    StateError::storage("changelog upload", FILE_HINT, message)
}

/// Counters of an uploader, for benchmarks and monitoring.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UploaderStats {
    /// Log files uploaded.
    pub files_uploaded: u64,
    /// Payload bytes uploaded (all attempts that succeeded).
    pub bytes_uploaded: u64,
    /// Attempts that failed or timed out.
    pub failed_attempts: u64,
    /// Log files deleted by the uploader (never referenced by a completed
    /// checkpoint).
    pub files_deleted: u64,
    /// Total time writers were blocked by back-pressure, in microseconds.
    pub backpressure_micros: u64,
}

#[derive(Default)]
struct Counters {
    files_uploaded: AtomicU64,
    bytes_uploaded: AtomicU64,
    failed_attempts: AtomicU64,
    files_deleted: AtomicU64,
    backpressure_micros: AtomicU64,
}

struct Request {
    storage: Arc<dyn CheckpointStorageAccess>,
    data: Bytes,
    first_sqn: u64,
    end_sqn: u64,
    slot: Arc<SegmentSlot>,
}

#[derive(Default)]
struct Queue {
    requests: Vec<Request>,
    bytes: usize,
    first_at: Option<Instant>,
    shutdown: bool,
}

/// Files to delete go to their own thread, so deletions never queue behind
/// (or in front of) the uploads checkpoints wait for.
type Deletion = (Arc<dyn CheckpointStorageAccess>, FileHandle);

/// A log file and the segments in it that writers still hold.
struct TrackedFile {
    storage: Arc<dyn CheckpointStorageAccess>,
    file: FileHandle,
    live_segments: usize,
    /// A completed checkpoint references it: the checkpoint store owns it.
    confirmed: bool,
}

struct Inner {
    config: DstlConfig,
    queue: Mutex<Queue>,
    queue_changed: Condvar,
    in_flight: Mutex<usize>,
    space: Condvar,
    jobs: Mutex<Option<mpsc::Sender<Vec<Request>>>>,
    deletions: Mutex<Option<mpsc::Sender<Deletion>>>,
    files: Mutex<HashMap<String, TrackedFile>>,
    counters: Counters,
    metrics: UploaderMetrics,
}

/// Uploads the change logs of the backends that share it; see the
/// [module docs](self).
///
/// ```
/// use state_changelog::{ChangelogUploader, DstlConfig};
/// let uploader = ChangelogUploader::new(DstlConfig::default()).unwrap();
/// assert_eq!(uploader.stats().files_uploaded, 0);
/// ```
pub struct ChangelogUploader {
    inner: Arc<Inner>,
    threads: Vec<JoinHandle<()>>,
}

impl std::fmt::Debug for ChangelogUploader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChangelogUploader")
            .field("config", &self.inner.config)
            .field("stats", &self.stats())
            .finish()
    }
}

impl ChangelogUploader {
    /// Starts the scheduler and `config.upload_threads` upload threads.
    ///
    /// # Errors
    /// [`StateError::Config`] for invalid settings; a failure to spawn threads.
    pub fn new(config: DstlConfig) -> Result<Self> {
        config.validate()?;
        let (sender, receiver) = mpsc::channel::<Vec<Request>>();
        let receiver = Arc::new(Mutex::new(receiver));
        let (delete_sender, delete_receiver) = mpsc::channel::<Deletion>();
        let inner = Arc::new(Inner {
            config,
            queue: Mutex::new(Queue::default()),
            queue_changed: Condvar::new(),
            in_flight: Mutex::new(0),
            space: Condvar::new(),
            jobs: Mutex::new(Some(sender)),
            deletions: Mutex::new(Some(delete_sender)),
            files: Mutex::new(HashMap::new()),
            counters: Counters::default(),
            metrics: UploaderMetrics::new(),
        });
        let spawn_error = |e: std::io::Error| StateError::Backend {
            backend: "changelog",
            source: Box::new(e),
        };
        let mut threads = Vec::with_capacity(inner.config.upload_threads + 1);
        let scheduler = Arc::clone(&inner);
        threads.push(
            std::thread::Builder::new()
                .name("dstl-batcher".into())
                .spawn(move || scheduler.run_scheduler())
                .map_err(spawn_error)?,
        );
        let deleter = Arc::clone(&inner);
        threads.push(
            std::thread::Builder::new()
                .name("dstl-delete".into())
                .spawn(move || deleter.run_deleter(&delete_receiver))
                .map_err(spawn_error)?,
        );
        for index in 0..inner.config.upload_threads {
            let worker = Arc::clone(&inner);
            let jobs = Arc::clone(&receiver);
            threads.push(
                std::thread::Builder::new()
                    .name(format!("dstl-upload-{index}"))
                    .spawn(move || worker.run_worker(&jobs))
                    .map_err(spawn_error)?,
            );
        }
        Ok(Self { inner, threads })
    }

    /// The settings.
    pub fn config(&self) -> &DstlConfig {
        &self.inner.config
    }

    /// The counters so far.
    pub fn stats(&self) -> UploaderStats {
        let c = &self.inner.counters;
        UploaderStats {
            files_uploaded: c.files_uploaded.load(Ordering::Relaxed),
            bytes_uploaded: c.bytes_uploaded.load(Ordering::Relaxed),
            failed_attempts: c.failed_attempts.load(Ordering::Relaxed),
            files_deleted: c.files_deleted.load(Ordering::Relaxed),
            backpressure_micros: c.backpressure_micros.load(Ordering::Relaxed),
        }
    }

    /// Bytes submitted and not uploaded yet.
    pub fn in_flight_bytes(&self) -> usize {
        *self.inner.in_flight.lock()
    }

    /// Queues an encoded segment (records `first_sqn..end_sqn`) for upload
    /// to `storage`, blocking while too many bytes are in flight.
    pub(crate) fn submit(
        &self,
        storage: Arc<dyn CheckpointStorageAccess>,
        data: Bytes,
        first_sqn: u64,
        end_sqn: u64,
    ) -> Arc<SegmentSlot> {
        let slot = Arc::new(SegmentSlot::default());
        let len = data.len();
        {
            let mut in_flight = self.inner.in_flight.lock();
            let max = self.inner.config.max_in_flight;
            if *in_flight > 0 && *in_flight + len > max {
                let started = Instant::now();
                // One segment larger than the limit still goes alone.
                while *in_flight > 0 && *in_flight + len > max {
                    self.inner.space.wait(&mut in_flight);
                }
                self.inner
                    .counters
                    .backpressure_micros
                    .fetch_add(started.elapsed().as_micros() as u64, Ordering::Relaxed);
            }
            *in_flight += len;
        }
        let mut queue = self.inner.queue.lock();
        queue.first_at.get_or_insert_with(Instant::now);
        queue.bytes += len;
        queue.requests.push(Request {
            storage,
            data,
            first_sqn,
            end_sqn,
            slot: Arc::clone(&slot),
        });
        self.inner
            .metrics
            .queue_size
            .set(queue.requests.len() as f64);
        self.inner.queue_changed.notify_all();
        slot
    }

    /// The writer no longer needs the segment of `slot`. Its file is deleted
    /// once no segment in it is needed and no completed checkpoint
    /// referenced it, unless `keep_file` says a checkpoint may still be
    /// committed with it (the checkpoint store then owns the file).
    pub(crate) fn release(&self, slot: &SegmentSlot, keep_file: bool) {
        let path = {
            let mut state = slot.state.lock();
            if state.released {
                return;
            }
            state.released = true;
            state.keep_file = keep_file;
            match state.outcome.as_ref() {
                Some(Ok(segment)) => segment.file.path.clone(),
                // Failed uploads left no file; pending ones are released
                // by the upload thread when they finish.
                _ => return,
            }
        };
        if keep_file {
            self.confirm(&path);
        }
        self.inner.release_file(&path);
    }

    /// A completed checkpoint references `path`: from now on the checkpoint
    /// store decides when it is deleted.
    pub(crate) fn confirm(&self, path: &str) {
        if let Some(tracked) = self.inner.files.lock().get_mut(path) {
            tracked.confirmed = true;
        }
    }

    /// Number of log files with segments that writers still hold.
    pub fn tracked_files(&self) -> usize {
        self.inner.files.lock().len()
    }
}

impl Drop for ChangelogUploader {
    fn drop(&mut self) {
        self.inner.queue.lock().shutdown = true;
        self.inner.queue_changed.notify_all();
        for thread in self.threads.drain(..) {
            // A panicked thread already reported itself.
            let _ = thread.join();
        }
    }
}

impl Inner {
    fn run_scheduler(self: &Arc<Self>) {
        loop {
            let batch = {
                let mut queue = self.queue.lock();
                loop {
                    if queue.requests.is_empty() {
                        if queue.shutdown {
                            // The other threads stop once their channels close.
                            self.jobs.lock().take();
                            self.deletions.lock().take();
                            return;
                        }
                        self.queue_changed.wait(&mut queue);
                        continue;
                    }
                    let due = queue.first_at.map(|t| t + self.config.persist_delay);
                    let now = Instant::now();
                    if queue.shutdown
                        || queue.bytes >= self.config.persist_size_threshold
                        || due.is_none_or(|due| due <= now)
                    {
                        break;
                    }
                    if let Some(due) = due {
                        self.queue_changed.wait_until(&mut queue, due);
                    }
                }
                queue.bytes = 0;
                queue.first_at = None;
                self.metrics.queue_size.set(0.0);
                std::mem::take(&mut queue.requests)
            };
            // One file per storage.
            let mut groups: Vec<Vec<Request>> = Vec::new();
            for request in batch {
                match groups
                    .iter_mut()
                    .find(|g| Arc::ptr_eq(&g[0].storage, &request.storage))
                {
                    Some(group) => group.push(request),
                    None => groups.push(vec![request]),
                }
            }
            for group in groups {
                self.send(group);
            }
        }
    }

    fn send(&self, requests: Vec<Request>) {
        let sent = self
            .jobs
            .lock()
            .as_ref()
            .map(|jobs| jobs.send(requests).is_ok());
        debug_assert!(sent != Some(false), "upload threads stopped early");
    }

    fn delete(&self, storage: Arc<dyn CheckpointStorageAccess>, file: FileHandle) {
        // After shutdown the file stays: an orphan, never a broken checkpoint.
        if let Some(deletions) = self.deletions.lock().as_ref() {
            let _ = deletions.send((storage, file));
        }
    }

    fn run_worker(self: &Arc<Self>, jobs: &Mutex<mpsc::Receiver<Vec<Request>>>) {
        loop {
            let job = jobs.lock().recv();
            match job {
                Ok(requests) => {
                    let upload = std::panic::AssertUnwindSafe(|| self.upload(&requests));
                    if std::panic::catch_unwind(upload).is_err() {
                        // Waiters must never block forever on a slot.
                        self.fail_unanswered(&requests, "the upload thread panicked");
                    }
                }
                Err(_) => return,
            }
        }
    }

    fn run_deleter(&self, deletions: &mpsc::Receiver<Deletion>) {
        while let Ok((storage, file)) = deletions.recv() {
            if storage.delete(&file).is_ok() {
                self.counters.files_deleted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// After [`upload`](Self::upload) panicked: answers every request that
    /// has no outcome yet with `message`, and gives the batch's bytes back
    /// to the in-flight budget (`upload` does that last).
    fn fail_unanswered(&self, requests: &[Request], message: &str) {
        for request in requests {
            let mut state = request.slot.state.lock();
            if state.outcome.is_none() {
                state.outcome = Some(Err(message.to_string()));
                request.slot.done.notify_all();
            }
        }
        let total: usize = requests.iter().map(|r| r.data.len()).sum();
        *self.in_flight.lock() -= total;
        self.space.notify_all();
    }

    fn upload(self: &Arc<Self>, requests: &[Request]) {
        let total: usize = requests.iter().map(|r| r.data.len()).sum();
        let mut file = Vec::with_capacity(total + 4 * requests.len());
        let mut offsets = Vec::with_capacity(requests.len());
        for request in requests {
            offsets.push(file.len() as u64);
            file.extend_from_slice(&request.data);
            // The segment's CRC, computed here rather than on the writer's
            // thread.
            file.extend_from_slice(&segment::checksum(&request.data));
        }
        let storage = Arc::clone(&requests[0].storage);
        let file_len = file.len() as u64;
        let started = Instant::now();
        let (outcome, attempts) = self.upload_with_retries(&storage, Bytes::from(file));
        self.metrics.requests.increment(1);
        self.metrics.attempts.record(f64::from(attempts));
        match outcome {
            Ok(handle) => {
                self.metrics.sizes.record(file_len as f64);
                self.metrics
                    .latencies_nanos
                    .record(started.elapsed().as_nanos() as f64);
                self.counters.files_uploaded.fetch_add(1, Ordering::Relaxed);
                self.counters
                    .bytes_uploaded
                    .fetch_add(file_len, Ordering::Relaxed);
                self.files.lock().insert(
                    handle.path.clone(),
                    TrackedFile {
                        storage: Arc::clone(&storage),
                        file: handle.clone(),
                        live_segments: requests.len(),
                        confirmed: false,
                    },
                );
                for (request, offset) in requests.iter().zip(offsets) {
                    let segment = ChangelogSegment {
                        file: handle.clone(),
                        offset,
                        length: request.data.len() as u64 + 4,
                        first_sqn: request.first_sqn,
                        end_sqn: request.end_sqn,
                    };
                    let (released, keep_file) = {
                        let mut state = request.slot.state.lock();
                        state.outcome = Some(Ok(segment));
                        request.slot.done.notify_all();
                        (state.released, state.keep_file)
                    };
                    if released {
                        if keep_file && let Some(tracked) = self.files.lock().get_mut(&handle.path)
                        {
                            tracked.confirmed = true;
                        }
                        self.release_file(&handle.path);
                    }
                }
            }
            Err(message) => {
                self.metrics.failures.increment(1);
                for request in requests {
                    request.slot.state.lock().outcome = Some(Err(message.clone()));
                    request.slot.done.notify_all();
                }
            }
        }
        *self.in_flight.lock() -= total;
        self.space.notify_all();
    }

    fn release_file(&self, path: &str) {
        let mut files = self.files.lock();
        let Some(tracked) = files.get_mut(path) else {
            return;
        };
        tracked.live_segments = tracked.live_segments.saturating_sub(1);
        if tracked.live_segments > 0 {
            return;
        }
        let Some(tracked) = files.remove(path) else {
            return;
        };
        drop(files);
        if !tracked.confirmed {
            self.delete(tracked.storage, tracked.file);
        }
    }

    /// Uploads `file`, starting a new attempt when one fails or times out.
    /// Returns the outcome and the attempts it took.
    ///
    /// A timed-out attempt is not abandoned: it races the attempts started
    /// after it, and whichever succeeds first is the upload (Flink's
    /// `upload.timeout` semantics), so a slow but working store is not
    /// turned into failures. The upload fails once every attempt failed, or
    /// when the last attempt has run for the timeout too without any of them
    /// succeeding. Attempts that succeed after that delete their file.
    fn upload_with_retries(
        &self,
        storage: &Arc<dyn CheckpointStorageAccess>,
        file: Bytes,
    ) -> (std::result::Result<FileHandle, String>, u32) {
        let race = Arc::new(Race::default());
        let mut started = 0;
        loop {
            if let Err(message) = race.start(storage, file.clone()) {
                race.record_failure(message);
            }
            started += 1;
            let deadline = Instant::now() + self.config.upload_timeout;
            if started == self.config.max_attempts {
                return (self.last_attempt(&race, started, deadline), started);
            }
            match race.wait(started, deadline) {
                RaceState::Won(handle) => return (Ok(handle), started),
                // One more failure; the next attempt starts after the pause.
                RaceState::Failed { .. } => std::thread::sleep(self.config.retry_delay),
                // The timeout: the next attempt starts now, beside this one.
                RaceState::Running => {}
            }
            self.counters
                .failed_attempts
                .fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Waits for the race once the last attempt started: until one attempt
    /// succeeds, every attempt failed, or the last one timed out.
    fn last_attempt(
        &self,
        race: &Race,
        started: u32,
        deadline: Instant,
    ) -> std::result::Result<FileHandle, String> {
        loop {
            match race.wait(started, deadline) {
                RaceState::Won(handle) => return Ok(handle),
                RaceState::Failed { all: true, message } => {
                    return Err(self.failed(started, &message));
                }
                // Earlier attempts still run: they get the rest of the time.
                RaceState::Failed { all: false, .. } => {}
                RaceState::Running => {
                    return race.give_up().ok_or_else(|| {
                        let timeout = self.config.upload_timeout;
                        self.failed(started, &format!("timed out after {timeout:?}"))
                    });
                }
            }
        }
    }

    /// The error of an upload that ran out of attempts (the last one counted
    /// as failed).
    fn failed(&self, attempts: u32, message: &str) -> String {
        self.counters
            .failed_attempts
            .fetch_add(1, Ordering::Relaxed);
        format!(
            "attempt {attempts} of {}: {message}",
            self.config.max_attempts
        )
    }
}

/// The attempts of one upload, racing: the first success wins.
#[derive(Default)]
struct Race {
    state: Mutex<RaceInner>,
    changed: Condvar,
}

#[derive(Default)]
struct RaceInner {
    /// The first successful attempt's file.
    winner: Option<FileHandle>,
    /// Attempts that ended in an error, and the last error.
    failures: u32,
    /// Failures [`Race::wait`] reported already.
    reported_failures: u32,
    last_error: String,
    /// The uploader gave up (or has its winner): later successes delete
    /// their file.
    settled: bool,
}

/// What [`Race::wait`] saw.
enum RaceState {
    /// An attempt succeeded.
    Won(FileHandle),
    /// Another attempt failed (`all`: every attempt started so far has).
    Failed { all: bool, message: String },
    /// No attempt ended since the last wait.
    Running,
}

impl Race {
    /// Starts one attempt on its own thread.
    fn start(
        self: &Arc<Self>,
        storage: &Arc<dyn CheckpointStorageAccess>,
        file: Bytes,
    ) -> std::result::Result<(), String> {
        let race = Arc::clone(self);
        let target = Arc::clone(storage);
        std::thread::Builder::new()
            .name("dstl-attempt".into())
            .spawn(move || {
                let outcome = write_file(&*target, &file);
                let mut state = race.state.lock();
                match outcome {
                    Ok(handle) if state.settled || state.winner.is_some() => {
                        drop(state);
                        // Best effort: the file is an orphan otherwise (the
                        // store's garbage collection finds it).
                        let _ = target.delete(&handle);
                    }
                    Ok(handle) => state.winner = Some(handle),
                    Err(message) => {
                        state.failures += 1;
                        state.last_error = message;
                    }
                }
                race.changed.notify_all();
            })
            .map(|_| ())
            .map_err(|e| format!("cannot start an upload thread: {e}"))
    }

    fn record_failure(&self, message: String) {
        let mut state = self.state.lock();
        state.failures += 1;
        state.last_error = message;
    }

    /// Waits until an attempt succeeds, another one fails, or `deadline`.
    fn wait(&self, started: u32, deadline: Instant) -> RaceState {
        let mut state = self.state.lock();
        loop {
            if let Some(handle) = state.winner.clone() {
                state.settled = true;
                return RaceState::Won(handle);
            }
            if state.failures > state.reported_failures {
                state.reported_failures = state.failures;
                return RaceState::Failed {
                    all: state.failures >= started,
                    message: state.last_error.clone(),
                };
            }
            if self.changed.wait_until(&mut state, deadline).timed_out() {
                return match state.winner.clone() {
                    Some(handle) => {
                        state.settled = true;
                        RaceState::Won(handle)
                    }
                    None => RaceState::Running,
                };
            }
        }
    }

    /// Stops waiting: returns a winner that arrived just now, or settles
    /// the race so that later successes delete their files.
    fn give_up(&self) -> Option<FileHandle> {
        let mut state = self.state.lock();
        state.settled = true;
        state.winner.clone()
    }
}

fn write_file(
    storage: &dyn CheckpointStorageAccess,
    file: &[u8],
) -> std::result::Result<FileHandle, String> {
    let mut out = storage
        .create_output(0, StateScope::Shared, FILE_HINT)
        .map_err(|e| e.to_string())?;
    out.write_all(file).map_err(|e| e.to_string())?;
    out.close().map_err(|e| e.to_string())
}

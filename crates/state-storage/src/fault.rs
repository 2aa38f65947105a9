//! [`FaultInjectingStore`]: an [`ObjectStore`] wrapper that fails, delays
//! and lies, for testing what a job does when its storage misbehaves.
//!
//! It wraps any store and, per operation, at seeded random rates:
//!
//! * **fails** the call before it reaches the inner store (nothing happens,
//!   the caller gets an error);
//! * makes the outcome **unclear**: the write or delete *happens* on the
//!   inner store, and the caller still gets an error (a response lost on
//!   the way back, a timeout after the server applied the request);
//! * **delays** the call by a random latency;
//! * fails single **parts** of multipart uploads, or their completion, so
//!   uploads end half-done.
//!
//! Besides the random faults, [`inject`](FaultInjectingStore::inject)
//! queues scripted ones ("the next put of a path containing `_metadata` is
//! applied but reports an error"), for tests of one exact case.
//!
//! Errors are `object_store::Error::Generic` with store name
//! [`FAULT_STORE_NAME`], which every caller must treat as transient.
//!
//! ```
//! use std::sync::Arc;
//! use object_store::memory::InMemory;
//! use state_storage::fault::{FaultConfig, FaultInjectingStore};
//!
//! let store = Arc::new(FaultInjectingStore::new(
//!     Arc::new(InMemory::new()),
//!     FaultConfig { seed: 7, error_rate: 0.1, unclear_rate: 0.05, ..FaultConfig::default() },
//! ));
//! let storage = state_storage::ObjectStoreCheckpointStorage::new(
//!     store.clone(), Default::default(), "job-1")?;
//! # let _ = storage;
//! assert_eq!(store.stats().injected(), 0);
//! # Ok::<(), state_api::StateError>(())
//! ```

use std::collections::VecDeque;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, ListResult, MultipartUpload, ObjectMeta, ObjectStore,
    PutMultipartOptions, PutOptions, PutPayload, PutResult, UploadPart,
};
use parking_lot::Mutex;

/// Store name of the errors this wrapper injects.
pub const FAULT_STORE_NAME: &str = "fault-injection";

/// Kinds of operations, for rates and scripted faults.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Operation {
    /// A single put (also create-only puts).
    Put,
    /// Starting a multipart upload.
    StartMultipart,
    /// Uploading one part of a multipart upload.
    PutPart,
    /// Completing a multipart upload.
    CompleteMultipart,
    /// A get (whole object, range or head).
    Get,
    /// Deleting an object.
    Delete,
    /// Listing.
    List,
    /// Copying an object.
    Copy,
}

impl Operation {
    /// Whether the operation changes the store, so that its outcome can be
    /// unclear (applied, but reported as failed).
    pub fn writes(self) -> bool {
        matches!(
            self,
            Operation::Put | Operation::CompleteMultipart | Operation::Delete | Operation::Copy
        )
    }
}

/// What a scripted or random fault does to one call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// The call fails before anything happens.
    Fail,
    /// The call happens, and the caller gets an error anyway.
    Unclear,
}

/// Rates and seed of the random faults.
#[derive(Clone, Debug, PartialEq)]
pub struct FaultConfig {
    /// Seed of the fault decisions: the same seed and the same sequence of
    /// calls give the same faults.
    pub seed: u64,
    /// Probability that a call fails without effect.
    pub error_rate: f64,
    /// Probability that a write or delete is applied but reported as failed.
    pub unclear_rate: f64,
    /// Random latency added to every call: uniformly between the two bounds.
    pub latency: Option<(Duration, Duration)>,
    /// Operations the random faults apply to (all when empty).
    pub operations: Vec<Operation>,
}

impl Default for FaultConfig {
    fn default() -> Self {
        Self {
            seed: 0,
            error_rate: 0.0,
            unclear_rate: 0.0,
            latency: None,
            operations: Vec::new(),
        }
    }
}

impl FaultConfig {
    /// Random failures at `rate` (half of them unclear for writes) with the
    /// given seed.
    pub fn failing(seed: u64, rate: f64) -> Self {
        Self {
            seed,
            error_rate: rate / 2.0,
            unclear_rate: rate / 2.0,
            ..Self::default()
        }
    }
}

/// Counts of what the wrapper did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FaultStats {
    /// Calls that reached the wrapper.
    pub calls: u64,
    /// Calls failed without effect.
    pub failed: u64,
    /// Calls applied and reported as failed.
    pub unclear: u64,
}

impl FaultStats {
    /// Faults injected in all.
    pub fn injected(&self) -> u64 {
        self.failed + self.unclear
    }
}

/// A fault queued for the next matching call.
#[derive(Clone, Debug)]
struct Scripted {
    operation: Operation,
    path_contains: String,
    fault: Fault,
}

/// A function called before every operation (see
/// [`FaultInjectingStore::set_hook`]).
pub type OperationHook = Arc<dyn Fn(Operation, &str) + Send + Sync>;

struct Shared {
    config: Mutex<FaultConfig>,
    hook: Mutex<Option<OperationHook>>,
    enabled: AtomicBool,
    rng: Mutex<SplitMix64>,
    scripted: Mutex<VecDeque<Scripted>>,
    calls: AtomicU64,
    failed: AtomicU64,
    unclear: AtomicU64,
}

impl Shared {
    /// Decides the fault of one call, if any.
    fn decide(&self, operation: Operation, path: &str) -> Option<Fault> {
        self.calls.fetch_add(1, Ordering::Relaxed);
        let hook = self.hook.lock().clone();
        if let Some(hook) = hook {
            hook(operation, path);
        }
        let fault = self.scripted_fault(operation, path).or_else(|| {
            if !self.enabled.load(Ordering::Relaxed) {
                return None;
            }
            let config = self.config.lock();
            if !config.operations.is_empty() && !config.operations.contains(&operation) {
                return None;
            }
            let draw = self.rng.lock().next_f64();
            if draw < config.error_rate {
                Some(Fault::Fail)
            } else if operation.writes() && draw < config.error_rate + config.unclear_rate {
                Some(Fault::Unclear)
            } else {
                None
            }
        });
        match fault {
            Some(Fault::Fail) => self.failed.fetch_add(1, Ordering::Relaxed),
            Some(Fault::Unclear) => self.unclear.fetch_add(1, Ordering::Relaxed),
            None => 0,
        };
        fault
    }

    fn scripted_fault(&self, operation: Operation, path: &str) -> Option<Fault> {
        let mut scripted = self.scripted.lock();
        let index = scripted
            .iter()
            .position(|s| s.operation == operation && path.contains(&s.path_contains))?;
        scripted.remove(index).map(|s| s.fault)
    }

    fn latency(&self) -> Option<Duration> {
        let (low, high) = self.config.lock().latency?;
        let spread = high.saturating_sub(low).as_nanos() as f64;
        let extra = (self.rng.lock().next_f64() * spread) as u64;
        Some(low + Duration::from_nanos(extra))
    }
}

/// An [`ObjectStore`] that injects seeded faults into another; see the
/// [module docs](self).
#[derive(Clone)]
pub struct FaultInjectingStore {
    inner: Arc<dyn ObjectStore>,
    shared: Arc<Shared>,
}

impl FaultInjectingStore {
    /// Wraps `inner`, injecting faults as `config` says.
    pub fn new(inner: Arc<dyn ObjectStore>, config: FaultConfig) -> Self {
        let rng = SplitMix64(config.seed);
        Self {
            inner,
            shared: Arc::new(Shared {
                config: Mutex::new(config),
                hook: Mutex::new(None),
                enabled: AtomicBool::new(true),
                rng: Mutex::new(rng),
                scripted: Mutex::new(VecDeque::new()),
                calls: AtomicU64::new(0),
                failed: AtomicU64::new(0),
                unclear: AtomicU64::new(0),
            }),
        }
    }

    /// The wrapped store (no faults).
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Turns the random faults on or off (scripted ones always apply).
    pub fn set_enabled(&self, enabled: bool) {
        self.shared.enabled.store(enabled, Ordering::Relaxed);
    }

    /// Replaces the rates (the random sequence goes on).
    pub fn set_config(&self, config: FaultConfig) {
        *self.shared.config.lock() = config;
    }

    /// Queues `fault` for the next call of `operation` on a path containing
    /// `path_contains` (empty: any path). Queued faults apply in order,
    /// also while random faults are disabled.
    pub fn inject(&self, operation: Operation, path_contains: &str, fault: Fault) {
        self.shared.scripted.lock().push_back(Scripted {
            operation,
            path_contains: path_contains.to_string(),
            fault,
        });
    }

    /// Calls `hook` with every operation and its path before the operation
    /// reaches the inner store (after any latency): a crash test kills its
    /// process there, at an exact point of the checkpoint protocol.
    pub fn set_hook(&self, hook: Option<OperationHook>) {
        *self.shared.hook.lock() = hook;
    }

    /// Queues `fault` for the next `times` calls of `operation` on paths
    /// containing `path_contains` (to outlast a retry policy, say).
    pub fn inject_times(
        &self,
        operation: Operation,
        path_contains: &str,
        fault: Fault,
        times: u32,
    ) {
        for _ in 0..times {
            self.inject(operation, path_contains, fault);
        }
    }

    /// Scripted faults that did not apply yet.
    pub fn pending_injections(&self) -> usize {
        self.shared.scripted.lock().len()
    }

    /// What the wrapper did so far.
    pub fn stats(&self) -> FaultStats {
        FaultStats {
            calls: self.shared.calls.load(Ordering::Relaxed),
            failed: self.shared.failed.load(Ordering::Relaxed),
            unclear: self.shared.unclear.load(Ordering::Relaxed),
        }
    }

    async fn before(&self, operation: Operation, path: &str) -> Option<Fault> {
        if let Some(delay) = self.shared.latency() {
            tokio::time::sleep(delay).await;
        }
        self.shared.decide(operation, path)
    }
}

/// The error of an injected fault.
fn injected(operation: Operation, path: &str, fault: Fault) -> object_store::Error {
    let what = match fault {
        Fault::Fail => "failed",
        Fault::Unclear => "applied, but reported as failed",
    };
    object_store::Error::Generic {
        store: FAULT_STORE_NAME,
        source: format!("injected fault: {operation:?} of '{path}' {what}").into(),
    }
}

impl fmt::Display for FaultInjectingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultInjecting({})", self.inner)
    }
}

impl fmt::Debug for FaultInjectingStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultInjectingStore")
            .field("inner", &self.inner)
            .field("config", &*self.shared.config.lock())
            .field("stats", &self.stats())
            .finish()
    }
}

#[async_trait]
impl ObjectStore for FaultInjectingStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.before(Operation::Put, location.as_ref()).await {
            None => self.inner.put_opts(location, payload, opts).await,
            Some(Fault::Fail) => Err(injected(Operation::Put, location.as_ref(), Fault::Fail)),
            Some(Fault::Unclear) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected(Operation::Put, location.as_ref(), Fault::Unclear))
            }
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        if let Some(fault) = self
            .before(Operation::StartMultipart, location.as_ref())
            .await
        {
            return Err(injected(
                Operation::StartMultipart,
                location.as_ref(),
                fault,
            ));
        }
        let upload = self.inner.put_multipart_opts(location, opts).await?;
        Ok(Box::new(FaultyUpload {
            inner: upload,
            shared: Arc::clone(&self.shared),
            path: location.to_string(),
        }))
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        if let Some(fault) = self.before(Operation::Get, location.as_ref()).await {
            return Err(injected(Operation::Get, location.as_ref(), fault));
        }
        self.inner.get_opts(location, options).await
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        let this = self.clone();
        locations
            .then(move |location| {
                let this = this.clone();
                async move {
                    let location = location?;
                    let fault = this.before(Operation::Delete, location.as_ref()).await;
                    if fault == Some(Fault::Fail) {
                        return Err(injected(Operation::Delete, location.as_ref(), Fault::Fail));
                    }
                    let once = futures::stream::iter([Ok(location.clone())]).boxed();
                    let mut deleted = this.inner.delete_stream(once);
                    while let Some(result) = deleted.next().await {
                        result?;
                    }
                    match fault {
                        Some(fault) => Err(injected(Operation::Delete, location.as_ref(), fault)),
                        None => Ok(location),
                    }
                }
            })
            .boxed()
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        let shown = prefix.map(|p| p.to_string()).unwrap_or_default();
        if let Some(fault) = self.shared.decide(Operation::List, &shown) {
            return futures::stream::once(
                async move { Err(injected(Operation::List, &shown, fault)) },
            )
            .boxed();
        }
        self.inner.list(prefix)
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        let shown = prefix.map(|p| p.to_string()).unwrap_or_default();
        if let Some(fault) = self.before(Operation::List, &shown).await {
            return Err(injected(Operation::List, &shown, fault));
        }
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        match self.before(Operation::Copy, to.as_ref()).await {
            None => self.inner.copy_opts(from, to, options).await,
            Some(Fault::Fail) => Err(injected(Operation::Copy, to.as_ref(), Fault::Fail)),
            Some(Fault::Unclear) => {
                self.inner.copy_opts(from, to, options).await?;
                Err(injected(Operation::Copy, to.as_ref(), Fault::Unclear))
            }
        }
    }
}

/// A multipart upload whose parts and completion may fail.
struct FaultyUpload {
    inner: Box<dyn MultipartUpload>,
    shared: Arc<Shared>,
    path: String,
}

impl fmt::Debug for FaultyUpload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyUpload")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

#[async_trait]
impl MultipartUpload for FaultyUpload {
    fn put_part(&mut self, data: PutPayload) -> UploadPart {
        match self.shared.decide(Operation::PutPart, &self.path) {
            None => self.inner.put_part(data),
            Some(fault) => {
                // An unclear part counts as failed: the caller cannot use
                // the upload either way.
                let error = injected(Operation::PutPart, &self.path, fault);
                Box::pin(async move { Err(error) })
            }
        }
    }

    async fn complete(&mut self) -> object_store::Result<PutResult> {
        match self.shared.decide(Operation::CompleteMultipart, &self.path) {
            None => self.inner.complete().await,
            Some(Fault::Fail) => Err(injected(
                Operation::CompleteMultipart,
                &self.path,
                Fault::Fail,
            )),
            Some(Fault::Unclear) => {
                self.inner.complete().await?;
                Err(injected(
                    Operation::CompleteMultipart,
                    &self.path,
                    Fault::Unclear,
                ))
            }
        }
    }

    async fn abort(&mut self) -> object_store::Result<()> {
        self.inner.abort().await
    }
}

/// A small, fast, seedable generator (SplitMix64): fault decisions need
/// reproducibility, not quality.
#[derive(Clone, Debug)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn next_f64(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use object_store::memory::InMemory;
    use object_store::{ObjectStoreExt, PutMode};

    use super::*;

    fn block_on<F: std::future::Future>(f: F) -> F::Output {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(f)
    }

    #[test]
    fn scripted_unclear_put_is_applied_and_reported_failed() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = FaultInjectingStore::new(Arc::clone(&inner), FaultConfig::default());
        store.inject(Operation::Put, "_metadata", Fault::Unclear);
        let path = Path::from("chk-1/_metadata");
        block_on(async {
            // Another path does not match.
            store.put(&Path::from("a"), "x".into()).await.unwrap();
            let error = store
                .put_opts(&path, "m".into(), PutMode::Create.into())
                .await
                .unwrap_err();
            assert!(error.to_string().contains("applied, but reported"));
            assert_eq!(inner.get(&path).await.unwrap().bytes().await.unwrap(), "m");
            // Applied once; the next call is clean.
            store.put(&path, "n".into()).await.unwrap();
        });
        assert_eq!(store.pending_injections(), 0);
        assert_eq!(store.stats().unclear, 1);
    }

    #[test]
    fn failed_delete_keeps_the_object_and_unclear_delete_removes_it() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = FaultInjectingStore::new(Arc::clone(&inner), FaultConfig::default());
        let path = Path::from("shared/f");
        block_on(async {
            store.put(&path, "x".into()).await.unwrap();
            store.inject(Operation::Delete, "", Fault::Fail);
            assert!(store.delete(&path).await.is_err());
            assert!(inner.head(&path).await.is_ok());
            store.inject(Operation::Delete, "", Fault::Unclear);
            assert!(store.delete(&path).await.is_err());
            assert!(inner.head(&path).await.is_err());
        });
    }

    #[test]
    fn random_faults_follow_the_seed_and_rate() {
        let run = |seed| {
            let store = FaultInjectingStore::new(
                Arc::new(InMemory::new()),
                FaultConfig::failing(seed, 0.2),
            );
            block_on(async {
                let mut outcomes = Vec::new();
                for i in 0..1000 {
                    let path = Path::from(format!("f{i}"));
                    outcomes.push(store.put(&path, "x".into()).await.is_ok());
                }
                (outcomes, store.stats())
            })
        };
        let (first, stats) = run(3);
        assert_eq!(run(3).0, first, "same seed, same faults");
        assert_ne!(run(4).0, first);
        let failures = first.iter().filter(|ok| !**ok).count();
        assert!((150..250).contains(&failures), "{failures} of 1000 at 20%");
        assert_eq!(stats.injected() as usize, failures);
    }

    #[test]
    fn failing_part_leaves_the_upload_unusable_and_nothing_visible() {
        let inner: Arc<dyn ObjectStore> = Arc::new(InMemory::new());
        let store = FaultInjectingStore::new(Arc::clone(&inner), FaultConfig::default());
        let path = Path::from("shared/big");
        store.inject(Operation::PutPart, "big", Fault::Fail);
        block_on(async {
            let mut upload = store.put_multipart(&path).await.unwrap();
            assert!(upload.put_part(vec![1u8; 16].into()).await.is_err());
            upload.abort().await.unwrap();
            assert!(inner.head(&path).await.is_err());
        });
    }
}

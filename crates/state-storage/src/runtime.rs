//! The bridge from blocking callers to the async `object_store` API.

use std::future::Future;

use state_api::{Result, StateError};
use tokio::runtime::{Builder, Handle, Runtime};

/// Worker threads of the I/O runtime: uploads and downloads are I/O bound,
/// two threads keep several requests in flight without competing with the
/// task threads for cores.
const WORKER_THREADS: usize = 2;

/// A small multi-thread tokio runtime owned by one storage.
///
/// Every operation is spawned onto it and awaited with a plain executor, so
/// callers may block from any thread, including a worker of some other tokio
/// runtime, where `Runtime::block_on` would panic.
pub(crate) struct BlockingRuntime {
    // `Option` so `Drop` can take it and shut it down without blocking.
    runtime: Option<Runtime>,
}

impl BlockingRuntime {
    /// Starts the runtime's threads.
    pub(crate) fn new() -> Result<Self> {
        let runtime = Builder::new_multi_thread()
            .worker_threads(WORKER_THREADS)
            .thread_name("state-storage-io")
            .enable_all()
            .build()
            .map_err(|e| StateError::storage("start runtime", "state-storage-io", e))?;
        Ok(Self {
            runtime: Some(runtime),
        })
    }

    /// The runtime's handle, for entering its context.
    pub(crate) fn handle(&self) -> Option<&Handle> {
        self.runtime.as_ref().map(Runtime::handle)
    }

    /// Runs `fut` on the runtime and blocks the calling thread until it
    /// finishes. `operation` and `path` name the call in errors (a panicked
    /// or cancelled task).
    pub(crate) fn run<F, T>(&self, operation: &'static str, path: &str, fut: F) -> Result<T>
    where
        F: Future<Output = Result<T>> + Send + 'static,
        T: Send + 'static,
    {
        let handle = self.handle().ok_or_else(|| {
            StateError::storage(operation, path, "the storage's I/O runtime is shut down")
        })?;
        match futures::executor::block_on(handle.spawn(fut)) {
            Ok(result) => result,
            Err(join_error) => Err(StateError::storage(operation, path, join_error)),
        }
    }
}

impl Drop for BlockingRuntime {
    fn drop(&mut self) {
        // Dropping a `Runtime` blocks until its tasks finish, and panics when
        // that happens inside another runtime's async context; the background
        // shutdown does neither.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl std::fmt::Debug for BlockingRuntime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BlockingRuntime")
            .field("worker_threads", &WORKER_THREADS)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_from_a_plain_thread() {
        let rt = BlockingRuntime::new().unwrap();
        assert_eq!(rt.run("test", "x", async { Ok(7) }).unwrap(), 7);
    }

    #[test]
    fn runs_and_drops_inside_another_runtime() {
        let outer = Builder::new_current_thread().build().unwrap();
        outer.block_on(async {
            let rt = BlockingRuntime::new().unwrap();
            assert_eq!(rt.run("test", "x", async { Ok(1) }).unwrap(), 1);
            drop(rt);
        });
    }

    #[test]
    fn a_panicking_task_is_an_error() {
        let rt = BlockingRuntime::new().unwrap();
        let err = rt
            .run::<_, ()>("get", "chk-1/x", async { panic!("boom") })
            .unwrap_err();
        assert!(matches!(
            err,
            StateError::Storage {
                operation: "get",
                ..
            }
        ));
    }
}

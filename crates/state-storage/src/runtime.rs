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
/// Every operation is spawned onto it and awaited with a plain executor
/// (`futures::executor::block_on` on the task's join handle), never with
/// `Runtime::block_on` (which panics inside another runtime) nor
/// `block_in_place` (which panics on a current-thread runtime). So callers
/// may block from any thread: a plain thread, a worker of a multi-thread
/// runtime, or the only thread of a current-thread runtime.
///
/// That holds as long as the operation's future needs only this runtime:
/// it is polled here, and an `object_store` backend does its I/O wherever it
/// is polled (its HTTP connections and `spawn_blocking` calls land on this
/// runtime). A future that waits for work on *another* runtime, such as a
/// store built to spawn its requests on a caller's handle, deadlocks when
/// the caller blocks the only thread of that runtime (a current-thread
/// runtime): the blocked thread is the one that would run the request. The
/// bridge cannot tell which runtime a future depends on, so there is no
/// guard; [`ObjectStoreCheckpointStorage::new`](crate::ObjectStoreCheckpointStorage::new)
/// documents the requirement for stores passed in.
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

    /// The futures run on the storage's own runtime threads whatever thread
    /// calls: this is what makes blocking inside a current-thread runtime
    /// safe for stores that do their I/O where they are polled.
    #[test]
    fn futures_are_polled_on_the_storage_runtime() {
        let rt = BlockingRuntime::new().unwrap();
        let probe = || async {
            Ok((
                std::thread::current().name().map(str::to_owned),
                Handle::current().runtime_flavor(),
            ))
        };
        let expected = (
            Some("state-storage-io".to_owned()),
            tokio::runtime::RuntimeFlavor::MultiThread,
        );
        assert_eq!(rt.run("test", "x", probe()).unwrap(), expected);
        let current_thread = Builder::new_current_thread().build().unwrap();
        let got = current_thread.block_on(async { rt.run("test", "x", probe()) });
        assert_eq!(got.unwrap(), expected);
        let multi_thread = Builder::new_multi_thread()
            .worker_threads(1)
            .build()
            .unwrap();
        let rt = std::sync::Arc::new(rt);
        let inner = std::sync::Arc::clone(&rt);
        let got = multi_thread
            .block_on(multi_thread.spawn(async move { inner.run("test", "x", probe()) }))
            .unwrap();
        assert_eq!(got.unwrap(), expected);
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

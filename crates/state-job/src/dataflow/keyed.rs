//! A keyed operator instance with two inputs: the events (counted,
//! aggregated, windowed) and the adjustments (summed), read through a
//! [`CheckpointedInput`] that aligns barriers or persists in-flight
//! records. Windows close when the watermark (the least of the inputs'
//! watermarks) passes their end; their totals go to the sink.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::Instant;

use state_api::{CheckpointStorageAccess, KeyedStateBackend, Result, SnapshotOptions, StateError};
use state_runtime::channel::{ChannelSender, GateWaker};
use state_runtime::coordinator::{Notification, TaskSnapshot};
use state_runtime::input::{CheckpointedInput, Trigger};

use super::acks::PendingAcks;
use super::control::{Control, TaskContext};
use super::elements::{KeyedInput, StreamKind};
use super::task_loop::{self, InputTask};
use crate::OPERATOR_ID;
use crate::events::Event;
use crate::operator::{KeyedAggregator, WindowTotals};

/// The injected task failure: the first keyed instance to process an
/// event at or past the offset it holds fails, and disarms it
/// (`u64::MAX`: disarmed).
pub type TaskFailureSwitch = Arc<AtomicU64>;

/// What a keyed instance hands back when the job ends.
pub struct KeyedOutput {
    /// Its backend, with the final state.
    pub backend: Box<dyn KeyedStateBackend>,
    /// The operator's state handles.
    pub operator: KeyedAggregator,
}

/// One parallel instance of the keyed operator. See the [module docs](self).
pub struct KeyedTask {
    /// Mailbox, reports, cancellation.
    pub ctx: TaskContext,
    /// Its keyed state.
    pub backend: Box<dyn KeyedStateBackend>,
    /// The operator.
    pub operator: KeyedAggregator,
    /// Its input channels: one per source instance of either stream.
    pub input: CheckpointedInput<KeyedInput>,
    /// Its channel to the sink (`None` once ended).
    pub output: Option<ChannelSender<WindowTotals>>,
    /// Where snapshots go.
    pub storage: Arc<dyn CheckpointStorageAccess>,
    /// The injected failure, shared by every instance.
    pub failure: TaskFailureSwitch,
    /// Highest events offset processed by any instance (the driver's
    /// progress gauge).
    pub progress: Arc<AtomicU64>,
}

/// Event time seen on each input channel, and the operator's watermark
/// (the least of them).
struct Watermarks {
    per_channel: Vec<Option<u64>>,
    current: Option<u64>,
}

impl KeyedTask {
    /// Runs until the input ended and the driver says finish, or the job
    /// is cancelled.
    ///
    /// # Errors
    /// State and storage errors, the injected failure.
    pub fn run(self) -> Result<KeyedOutput> {
        let mut running = Running {
            watermarks: Watermarks {
                per_channel: vec![None; self.input.gate().channels()],
                current: None,
            },
            uploads: Vec::new(),
            task: self,
        };
        let mut acks = PendingAcks::new(OPERATOR_ID);
        let result = task_loop::run(&mut running, &mut acks);
        // No upload may outlive the task: recovery collects what no
        // checkpoint references, and a late upload would escape it.
        for upload in running.uploads {
            let _ = upload.join();
        }
        let task = running.task;
        result.map(|()| KeyedOutput {
            backend: task.backend,
            operator: task.operator,
        })
    }
}

/// A keyed instance while it runs: the task, its watermarks and its
/// snapshots' upload threads.
struct Running {
    task: KeyedTask,
    watermarks: Watermarks,
    uploads: Vec<JoinHandle<()>>,
}

impl InputTask for Running {
    type Record = KeyedInput;

    fn ctx(&self) -> &TaskContext {
        &self.task.ctx
    }

    fn input(&mut self) -> &mut CheckpointedInput<KeyedInput> {
        &mut self.task.input
    }

    fn record(&mut self, channel: usize, record: KeyedInput) -> Result<()> {
        match record {
            KeyedInput::Record(StreamKind::Events, event) => self.task.event(&event),
            KeyedInput::Record(StreamKind::Adjustments, event) => {
                self.task.operator.adjust(&mut *self.task.backend, &event)
            }
            KeyedInput::Watermark(time) => self.task.watermark(channel, time, &mut self.watermarks),
        }
    }

    fn snapshot(&mut self, trigger: &Trigger, acks: &mut PendingAcks) {
        self.uploads.retain(|upload| !upload.is_finished());
        if let Some(upload) = self.task.snapshot(trigger, acks) {
            self.uploads.push(upload);
        }
    }

    fn notified(&mut self, notification: Notification, acks: &mut PendingAcks) -> Result<()> {
        let backend = &mut self.task.backend;
        match notification {
            Notification::Complete(id) => backend.notify_checkpoint_complete(id),
            Notification::Subsumed(id) => backend.notify_checkpoint_subsumed(id),
            Notification::Aborted(id) => {
                acks.forget(id);
                self.task.input.abort(id);
                backend.notify_checkpoint_aborted(id)
            }
        }
    }

    fn abandoned(&mut self, id: u64) {
        self.task.cancel_downstream(id);
    }

    fn input_ended(&mut self) -> Result<()> {
        // Every input ended: the watermark is infinite.
        self.task.close_windows(u64::MAX, &mut self.watermarks)?;
        self.task.output_end();
        Ok(())
    }
}

impl KeyedTask {
    fn output_end(&mut self) {
        if let Some(output) = self.output.take() {
            output.end();
        }
    }

    fn cancel_downstream(&self, id: u64) {
        if let Some(output) = &self.output {
            let _ = output.send_cancel(id);
        }
    }

    fn event(&mut self, event: &Event) -> Result<()> {
        // The gauge is coarse: one shared write per 256 offsets, not one
        // per record on a cache line all instances share.
        if event.offset.is_multiple_of(256) {
            self.progress.fetch_max(event.offset, Ordering::Relaxed);
        }
        let armed_at = self.failure.load(Ordering::Relaxed);
        if event.offset >= armed_at
            && self
                .failure
                .compare_exchange(armed_at, u64::MAX, Ordering::SeqCst, Ordering::SeqCst)
                .is_ok()
        {
            return Err(StateError::Restore(format!(
                "injected failure: task {} dies at offset {}",
                self.ctx.id, event.offset
            )));
        }
        self.operator.process(&mut *self.backend, event)
    }

    /// Channel `channel`'s watermark reached `time`: closes the windows the
    /// least watermark over the open channels passed.
    fn watermark(&mut self, channel: usize, time: u64, watermarks: &mut Watermarks) -> Result<()> {
        let seen = &mut watermarks.per_channel[channel];
        *seen = Some(seen.map_or(time, |old| old.max(time)));
        let handler = self.input.handler();
        let least = (0..watermarks.per_channel.len())
            .filter(|c| !handler.has_ended(*c))
            .map(|c| watermarks.per_channel[c])
            .try_fold(u64::MAX, |least, w| w.map(|w| least.min(w)));
        match least {
            Some(least) if watermarks.current.is_none_or(|c| least > c) => {
                self.close_windows(least, watermarks)
            }
            _ => Ok(()),
        }
    }

    /// Advances the watermark to `watermark`: the window timers it passed
    /// fire, and the totals of the windows they closed go to the sink.
    fn close_windows(&mut self, watermark: u64, watermarks: &mut Watermarks) -> Result<()> {
        watermarks.current = Some(watermark);
        let closed = self
            .operator
            .advance_watermark(&mut *self.backend, watermark)?;
        for totals in closed {
            let sent = match &self.output {
                Some(output) if totals.keys > 0 => output.send(totals).is_ok(),
                _ => true,
            };
            if !sent && !self.ctx.is_cancelled() {
                return Err(StateError::Restore("the sink went away".into()));
            }
        }
        Ok(())
    }

    /// The synchronous phase: freeze the keyed state, forward the barrier,
    /// upload on another thread (returned; `None` when the checkpoint was
    /// declined).
    fn snapshot(&mut self, trigger: &Trigger, acks: &mut PendingAcks) -> Option<JoinHandle<()>> {
        let id = trigger.barrier.id;
        let span = tracing::info_span!("checkpoint_sync", task = %self.ctx.id, checkpoint_id = id);
        let started = Instant::now();
        let options = SnapshotOptions {
            snapshot_type: trigger.barrier.options.snapshot_type,
            timestamp_ms: trigger.barrier.timestamp_ms,
        };
        let frozen = span.in_scope(|| {
            self.backend
                .snapshot(id, &options, Arc::clone(&self.storage))
        });
        let upload = match frozen {
            Ok(upload) => upload,
            Err(error) => {
                self.ctx
                    .decline(id, format!("synchronous snapshot failed: {error}"));
                self.cancel_downstream(id);
                return None;
            }
        };
        if let Some(output) = &self.output {
            let _ = output.send_barrier(trigger.barrier);
        }
        acks.started(
            trigger,
            TaskSnapshot::default(),
            true,
            started.elapsed(),
            &self.ctx,
        );
        let mailbox = self.ctx.mailbox_sender.clone();
        let waker: GateWaker<KeyedInput> = self.input.gate().waker();
        let task = self.ctx.id.clone();
        Some(std::thread::spawn(move || {
            let result = tracing::info_span!("checkpoint_async", task = %task, checkpoint_id = id)
                .in_scope(|| upload.run());
            let _ = mailbox.send(Control::UploadDone { id, result });
            waker.wake();
        }))
    }
}

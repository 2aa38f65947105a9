//! A keyed operator instance with two inputs: the events (counted,
//! aggregated, windowed) and the adjustments (summed), read through a
//! [`CheckpointedInput`] that aligns barriers or persists in-flight
//! records. Windows close when the watermark (the least of the inputs'
//! watermarks) passes their end; their totals go to the sink.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use state_api::{CheckpointStorageAccess, KeyedStateBackend, Result, SnapshotOptions, StateError};
use state_runtime::channel::{ChannelSender, GateWaker};
use state_runtime::coordinator::{Notification, TaskSnapshot};
use state_runtime::input::{CheckpointedInput, InputEvent, Trigger};

use super::acks::PendingAcks;
use super::control::{Control, TaskContext};
use super::elements::{KeyedInput, StreamKind};
use crate::OPERATOR_ID;
use crate::operator::{KeyedAggregator, WINDOW_MS, WindowTotals};

/// How long the task waits on its input before it looks at its mailbox.
const POLL: Duration = Duration::from_millis(20);

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

/// Event time seen on each input channel.
struct Watermarks {
    per_channel: Vec<Option<u64>>,
    current: Option<u64>,
    open_windows: BTreeSet<u64>,
}

impl KeyedTask {
    /// Runs until the input ended and the driver says finish, or the job
    /// is cancelled.
    ///
    /// # Errors
    /// State and storage errors, the injected failure, an upstream task
    /// that failed.
    pub fn run(mut self) -> Result<KeyedOutput> {
        let mut acks = PendingAcks::new(OPERATOR_ID);
        let mut uploads: Vec<JoinHandle<()>> = Vec::new();
        let result = self.process(&mut acks, &mut uploads);
        // No upload may outlive the task: recovery collects what no
        // checkpoint references, and a late upload would escape it.
        for upload in uploads {
            let _ = upload.join();
        }
        result.map(|()| KeyedOutput {
            backend: self.backend,
            operator: self.operator,
        })
    }

    fn process(&mut self, acks: &mut PendingAcks, uploads: &mut Vec<JoinHandle<()>>) -> Result<()> {
        let mut watermarks = Watermarks {
            per_channel: vec![None; self.input.gate().channels()],
            current: None,
            open_windows: self.operator.open_windows(&mut *self.backend)?,
        };
        let mut input_done = false;
        let mut finish = false;
        loop {
            if self.ctx.is_cancelled() {
                return Ok(());
            }
            while let Ok(control) = self.ctx.mailbox.try_recv() {
                match control {
                    Control::Notify(notification) => self.notified(notification, acks)?,
                    Control::UploadDone { id, result } => acks.upload_done(id, result, &self.ctx),
                    Control::Finish => finish = true,
                    Control::Trigger(_) => {}
                }
            }
            if input_done {
                if finish {
                    return Ok(());
                }
                std::thread::sleep(POLL);
                continue;
            }
            match self.input.next(Some(Instant::now() + POLL))? {
                InputEvent::Record { channel, record } => {
                    self.record(channel, record, &mut watermarks)?;
                }
                InputEvent::Snapshot(trigger) => self.snapshot(&trigger, acks, uploads),
                InputEvent::ChannelStateWritten {
                    id,
                    handle,
                    alignment,
                    persisted_bytes,
                } => acks.channel_state_written(id, handle, alignment, persisted_bytes, &self.ctx),
                InputEvent::Abort { id, .. } => {
                    acks.forget(id);
                    self.ctx.decline_subsumed(id);
                    self.cancel_downstream(id);
                }
                InputEvent::Finished => {
                    // Every input ended: the watermark is infinite.
                    self.close_windows(u64::MAX, &mut watermarks)?;
                    self.output_end();
                    input_done = true;
                }
                InputEvent::UpstreamFailed { .. } => {
                    self.ctx.wait_for_cancellation();
                    return Ok(());
                }
                InputEvent::Idle => {}
            }
        }
    }

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

    fn record(
        &mut self,
        channel: usize,
        record: KeyedInput,
        watermarks: &mut Watermarks,
    ) -> Result<()> {
        match record {
            KeyedInput::Record(StreamKind::Events, event) => {
                // The gauge is coarse: one shared write per 256 offsets, not
                // one per record on a cache line all instances share.
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
                self.operator.process(&mut *self.backend, &event)?;
                watermarks
                    .open_windows
                    .insert(event.timestamp_ms / WINDOW_MS);
                Ok(())
            }
            KeyedInput::Record(StreamKind::Adjustments, event) => {
                self.operator.adjust(&mut *self.backend, &event)
            }
            KeyedInput::Watermark(time) => {
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
        }
    }

    /// Advances the watermark to `watermark` and closes every window whose
    /// last millisecond it reached.
    fn close_windows(&mut self, watermark: u64, watermarks: &mut Watermarks) -> Result<()> {
        watermarks.current = Some(watermark);
        while let Some(&window) = watermarks.open_windows.first() {
            let last_ms = (window + 1).saturating_mul(WINDOW_MS) - 1;
            if last_ms > watermark {
                break;
            }
            watermarks.open_windows.pop_first();
            let totals = self.operator.close_window(&mut *self.backend, window)?;
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
    /// upload on another thread.
    fn snapshot(
        &mut self,
        trigger: &Trigger,
        acks: &mut PendingAcks,
        uploads: &mut Vec<JoinHandle<()>>,
    ) {
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
                return;
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
        uploads.retain(|upload| !upload.is_finished());
        uploads.push(std::thread::spawn(move || {
            let result = tracing::info_span!("checkpoint_async", task = %task, checkpoint_id = id)
                .in_scope(|| upload.run());
            let _ = mailbox.send(Control::UploadDone { id, result });
            waker.wake();
        }));
    }

    fn notified(&mut self, notification: Notification, acks: &mut PendingAcks) -> Result<()> {
        match notification {
            Notification::Complete(id) => self.backend.notify_checkpoint_complete(id),
            Notification::Subsumed(id) => self.backend.notify_checkpoint_subsumed(id),
            Notification::Aborted(id) => {
                acks.forget(id);
                self.input.abort(id);
                self.backend.notify_checkpoint_aborted(id)
            }
        }
    }
}

//! The loop of every task that reads a [`CheckpointedInput`] (the keyed
//! instances and the sink): the mailbox first (notices, finished uploads,
//! the driver's finish), then one input event; once the input ended, wait
//! on the mailbox for the finish.

use std::time::{Duration, Instant};

use state_api::Result;
use state_runtime::coordinator::Notification;
use state_runtime::input::{CheckpointedInput, InputEvent, Trigger};

use super::acks::PendingAcks;
use super::control::{Control, TaskContext};

/// How long a task waits on its input or mailbox before it looks at the
/// other one and at the cancellation flag.
const POLL: Duration = Duration::from_millis(20);

/// What a task does with its input's events; [`run`] drives it.
pub trait InputTask {
    /// The records of its input.
    type Record: Clone;

    /// Mailbox, reports, cancellation.
    fn ctx(&self) -> &TaskContext;

    /// Its input.
    fn input(&mut self) -> &mut CheckpointedInput<Self::Record>;

    /// Processes one record.
    ///
    /// # Errors
    /// The task fails.
    fn record(&mut self, channel: usize, record: Self::Record) -> Result<()>;

    /// Takes the synchronous snapshot of `trigger` and forwards its
    /// barrier; declines the checkpoint if it cannot.
    fn snapshot(&mut self, trigger: &Trigger, acks: &mut PendingAcks);

    /// A checkpoint's outcome. By default an aborted checkpoint is
    /// forgotten and its alignment stopped.
    ///
    /// # Errors
    /// The task fails.
    fn notified(&mut self, notification: Notification, acks: &mut PendingAcks) -> Result<()> {
        if let Notification::Aborted(id) = notification {
            acks.forget(id);
            self.input().abort(id);
        }
        Ok(())
    }

    /// The input abandoned checkpoint `id` (declined already); a task with
    /// an output cancels it downstream.
    fn abandoned(&mut self, _id: u64) {}

    /// Every input channel ended.
    ///
    /// # Errors
    /// The task fails.
    fn input_ended(&mut self) -> Result<()> {
        Ok(())
    }
}

/// Runs `task` until its input ended and the driver says finish, the job
/// is cancelled, or an upstream task failed (whose own report names the
/// cause, so this one waits for the cancellation and returns normally).
///
/// # Errors
/// Whatever the task's hooks or its input fail with.
pub fn run<T: InputTask>(task: &mut T, acks: &mut PendingAcks) -> Result<()> {
    let mut input_done = false;
    let mut finish = false;
    loop {
        if task.ctx().is_cancelled() {
            return Ok(());
        }
        while let Ok(control) = task.ctx().mailbox.try_recv() {
            finish |= handle(task, control, acks)?;
        }
        if input_done {
            if finish {
                return Ok(());
            }
            if let Ok(control) = task.ctx().mailbox.recv_timeout(POLL) {
                finish |= handle(task, control, acks)?;
            }
            continue;
        }
        match task.input().next(Some(Instant::now() + POLL))? {
            InputEvent::Record { channel, record } => task.record(channel, record)?,
            InputEvent::Snapshot(trigger) => task.snapshot(&trigger, acks),
            InputEvent::ChannelStateWritten {
                id,
                handle,
                alignment,
                persisted_bytes,
            } => acks.channel_state_written(id, handle, alignment, persisted_bytes, task.ctx()),
            InputEvent::Abort { id, .. } => {
                acks.forget(id);
                task.ctx().decline_subsumed(id);
                task.abandoned(id);
            }
            InputEvent::Finished => {
                task.input_ended()?;
                input_done = true;
            }
            InputEvent::UpstreamFailed { .. } => {
                task.ctx().wait_for_cancellation();
                return Ok(());
            }
            InputEvent::Idle => {}
        }
    }
}

/// Acts on one mailbox message; returns whether it was the finish.
fn handle<T: InputTask>(task: &mut T, control: Control, acks: &mut PendingAcks) -> Result<bool> {
    match control {
        Control::Notify(notification) => task.notified(notification, acks)?,
        Control::UploadDone { id, result } => acks.upload_done(id, result, task.ctx()),
        Control::Finish => return Ok(true),
        // Only sources are triggered through their mailbox.
        Control::Trigger(_) => {}
    }
    Ok(false)
}

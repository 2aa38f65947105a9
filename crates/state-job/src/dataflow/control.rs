//! How the job's tasks and its driver talk: each task has a mailbox the
//! driver (through the coordinator's [`TaskGateway`]) and the task's own
//! upload threads write to, and every task reports to the driver over one
//! channel.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{Receiver, Sender};

use state_api::{Result, SnapshotResult};
use state_runtime::CheckpointBarrier;
use state_runtime::coordinator::{
    FailureReason, Notification, TaskCheckpointMetrics, TaskGateway, TaskId, TaskSnapshot,
};

/// A message in a task's mailbox.
#[derive(Debug)]
pub enum Control {
    /// Start checkpoint `barrier.id` (sources only).
    Trigger(CheckpointBarrier),
    /// A checkpoint's outcome.
    Notify(Notification),
    /// The asynchronous phase of the task's snapshot `id` ended.
    UploadDone {
        /// The checkpoint.
        id: u64,
        /// Its result.
        result: Result<SnapshotResult>,
    },
    /// The job is done: a task whose input ended returns.
    Finish,
}

/// What a task reports to the driver.
#[derive(Debug)]
pub enum TaskReport {
    /// The task's part of checkpoint `id` is written.
    Ack {
        /// The task.
        task: TaskId,
        /// The checkpoint.
        id: u64,
        /// Its handles.
        snapshot: TaskSnapshot,
        /// Its measurements.
        metrics: TaskCheckpointMetrics,
    },
    /// The task cannot take checkpoint `id`.
    Decline {
        /// The checkpoint.
        id: u64,
        /// Why.
        reason: FailureReason,
    },
    /// A source read all of its splits.
    SourceFinished(TaskId),
    /// The task returned normally.
    Finished(TaskId),
    /// The task failed (an error or a panic).
    Failed(TaskId, String),
}

/// What every task holds: its id, mailbox, report channel and the job's
/// cancellation flag.
pub struct TaskContext {
    /// The task.
    pub id: TaskId,
    /// Its mailbox.
    pub mailbox: Receiver<Control>,
    /// A sender into its own mailbox (for its upload threads).
    pub mailbox_sender: Sender<Control>,
    /// Reports to the driver.
    pub reports: Sender<TaskReport>,
    /// Set when the job fails over or stops dead: return at once.
    pub cancelled: Arc<AtomicBool>,
}

impl TaskContext {
    /// Whether the task must return now.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// An upstream or downstream task went away: it reports its own
    /// failure, so this task only waits for the failover to cancel it
    /// (the driver then sees the root cause, not its echoes).
    pub fn wait_for_cancellation(&self) {
        while !self.is_cancelled() {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }

    /// Sends a report; the driver may be gone (the job is over).
    pub fn report(&self, report: TaskReport) {
        let _ = self.reports.send(report);
    }

    /// Declines checkpoint `id`: the task's snapshot failed (counted
    /// against the tolerable failures).
    pub fn decline(&self, id: u64, message: impl Into<String>) {
        self.report(TaskReport::Decline {
            id,
            reason: FailureReason::Declined {
                task: self.id.to_string(),
                message: message.into(),
            },
        });
    }

    /// Declines checkpoint `id` because a newer barrier or a cancellation
    /// overtook it (not counted).
    pub fn decline_subsumed(&self, id: u64) {
        self.report(TaskReport::Decline {
            id,
            reason: FailureReason::DeclinedSubsumed,
        });
    }
}

/// Wakes a task blocked on its input gate, so it reads its mailbox.
pub type Waker = Box<dyn Fn() + Send>;

/// One task's mailbox as the driver sees it.
pub struct MailboxAddress {
    /// Into the mailbox.
    pub sender: Sender<Control>,
    /// Wakes the task (a source never blocks on a gate: `None`).
    pub waker: Option<Waker>,
}

impl MailboxAddress {
    /// Puts `control` in the mailbox and wakes the task; a task that
    /// returned no longer reads it.
    pub fn send(&self, control: Control) {
        if self.sender.send(control).is_ok()
            && let Some(wake) = &self.waker
        {
            wake();
        }
    }
}

/// The coordinator's way to the job's tasks: their mailboxes.
#[derive(Clone, Default)]
pub struct MailboxGateway {
    tasks: Arc<parking_lot::Mutex<BTreeMap<TaskId, MailboxAddress>>>,
}

impl MailboxGateway {
    /// Registers a task's mailbox.
    pub fn register(&self, task: TaskId, address: MailboxAddress) {
        self.tasks.lock().insert(task, address);
    }

    /// Sends `control` to every task.
    pub fn broadcast(&self, control: impl Fn() -> Control) {
        for address in self.tasks.lock().values() {
            address.send(control());
        }
    }

    /// Wakes every task (to see the cancellation flag).
    pub fn wake_all(&self) {
        for address in self.tasks.lock().values() {
            if let Some(wake) = &address.waker {
                wake();
            }
        }
    }
}

impl TaskGateway for MailboxGateway {
    fn trigger(&mut self, task: &TaskId, barrier: CheckpointBarrier) {
        if let Some(address) = self.tasks.lock().get(task) {
            address.send(Control::Trigger(barrier));
        }
    }

    fn notify(&mut self, task: &TaskId, notification: Notification) {
        if let Some(address) = self.tasks.lock().get(task) {
            address.send(Control::Notify(notification));
        }
    }
}

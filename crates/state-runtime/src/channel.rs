//! In-process channels between task threads: bounded queues of records
//! with in-band barriers, whose barriers can overtake queued records.
//!
//! An [`InputGate`] is the consuming task's end of all its input channels;
//! each producer holds a [`ChannelSender`] for one channel. Records
//! back-pressure the producer when a channel holds `capacity` records;
//! events (barriers, cancellation markers, the end) never block.
//!
//! # Who persists in-flight records
//! A barrier that overtakes queued records (an unaligned barrier, or an
//! aligned one [prioritized](InputGate::prioritize) when its alignment
//! timed out) carries copies of the records it overtook to the consumer,
//! which persists them as channel state of its checkpoint. The records stay
//! queued and are processed after the snapshot as usual. Because the queue
//! is the producer's output and the consumer's input at once, persisting
//! them on the consumer's side covers Flink's output and input channel
//! state together, each record once.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::{Condvar, Mutex};

use crate::barrier::{AlignmentType, CheckpointBarrier};

/// What the consumer reads from a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Received<R> {
    /// A record.
    Record(R),
    /// A barrier. `overtaken` holds copies of the records it jumped over
    /// (empty unless it was a priority barrier); they are still queued
    /// behind it.
    Barrier {
        /// The barrier.
        barrier: CheckpointBarrier,
        /// Records it overtook, oldest first: channel state of its
        /// checkpoint.
        overtaken: Vec<R>,
    },
    /// A cancellation marker of checkpoint `id`.
    Cancel(u64),
    /// The producer finished: nothing more comes on this channel.
    EndOfInput,
    /// The producer went away without finishing (it failed).
    Disconnected,
}

/// Why a send failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateClosed;

impl std::fmt::Display for GateClosed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the consuming task's input gate is closed")
    }
}

impl std::error::Error for GateClosed {}

enum Item<R> {
    Record(R),
    Barrier(CheckpointBarrier),
    End,
}

struct Queue<R> {
    items: VecDeque<Item<R>>,
    /// Events delivered before any queued item, from blocked channels too.
    priority: VecDeque<Received<R>>,
    records: usize,
    /// A barrier to put ahead of the queue as soon as it is sent (its
    /// alignment timed out before it arrived).
    promote: Option<u64>,
    sender_gone: bool,
    end_delivered: bool,
}

impl<R> Queue<R> {
    fn new() -> Self {
        Self {
            items: VecDeque::new(),
            priority: VecDeque::new(),
            records: 0,
            promote: None,
            sender_gone: false,
            end_delivered: false,
        }
    }
}

struct Shared<R> {
    state: Mutex<GateState<R>>,
    readable: Condvar,
    writable: Condvar,
    capacity: usize,
}

struct GateState<R> {
    queues: Vec<Queue<R>>,
    closed: bool,
    woken: bool,
    next: usize,
}

/// The consuming end of a task's input channels. See the
/// [module docs](self).
///
/// ```
/// use state_runtime::channel::{InputGate, Received};
///
/// let (gate, senders) = InputGate::<u32>::new(2, 16);
/// let [first, second] = <[_; 2]>::try_from(senders).ok().unwrap();
/// second.send(7).unwrap();
/// first.end();
/// let (channel, item) = gate.recv(|_| true, None).unwrap();
/// assert_eq!((channel, item), (0, Received::EndOfInput));
/// assert_eq!(gate.recv(|_| true, None), Some((1, Received::Record(7))));
/// ```
pub struct InputGate<R> {
    shared: Arc<Shared<R>>,
}

/// The producing end of one channel.
pub struct ChannelSender<R> {
    shared: Arc<Shared<R>>,
    channel: usize,
}

/// Wakes a task blocked in [`InputGate::recv`] (to read its mailbox).
#[derive(Clone)]
pub struct GateWaker<R> {
    shared: Arc<Shared<R>>,
}

impl<R: Clone> InputGate<R> {
    /// A gate of `channels` channels holding at most `capacity` records
    /// each, and the senders of its channels.
    pub fn new(channels: usize, capacity: usize) -> (Self, Vec<ChannelSender<R>>) {
        let shared = Arc::new(Shared {
            state: Mutex::new(GateState {
                queues: (0..channels).map(|_| Queue::new()).collect(),
                closed: false,
                woken: false,
                next: 0,
            }),
            readable: Condvar::new(),
            writable: Condvar::new(),
            capacity: capacity.max(1),
        });
        let senders = (0..channels)
            .map(|channel| ChannelSender {
                shared: Arc::clone(&shared),
                channel,
            })
            .collect();
        (Self { shared }, senders)
    }

    /// Number of channels.
    pub fn channels(&self) -> usize {
        self.shared.state.lock().queues.len()
    }

    /// A handle that interrupts [`recv`](Self::recv).
    pub fn waker(&self) -> GateWaker<R> {
        GateWaker {
            shared: Arc::clone(&self.shared),
        }
    }

    /// The next item: priority events of any channel first, then the oldest
    /// item of a channel `readable` allows, taking channels in turn. Blocks
    /// until there is one; returns `None` at `deadline`, when woken, or
    /// when every channel delivered its end.
    pub fn recv(
        &self,
        readable: impl Fn(usize) -> bool,
        deadline: Option<Instant>,
    ) -> Option<(usize, Received<R>)> {
        let mut state = self.shared.state.lock();
        loop {
            if let Some(found) = take_next(&mut state, &readable) {
                if matches!(found.1, Received::Record(_)) {
                    self.shared.writable.notify_all();
                }
                return Some(found);
            }
            if state.woken {
                state.woken = false;
                return None;
            }
            if state.queues.iter().all(|queue| queue.end_delivered) {
                return None;
            }
            match deadline {
                Some(deadline) => {
                    if self
                        .shared
                        .readable
                        .wait_until(&mut state, deadline)
                        .timed_out()
                    {
                        return take_next(&mut state, &readable);
                    }
                }
                None => self.shared.readable.wait(&mut state),
            }
        }
    }

    /// Moves the queued barrier of checkpoint `id` on `channel` ahead of the
    /// records before it, which it carries as overtaken (its alignment
    /// timed out). If it has not been sent yet, it will go ahead of the
    /// queue when it is. Returns whether it was queued.
    pub fn prioritize(&self, channel: usize, id: u64) -> bool {
        let mut state = self.shared.state.lock();
        let queue = &mut state.queues[channel];
        let position = queue
            .items
            .iter()
            .position(|item| matches!(item, Item::Barrier(b) if b.id == id));
        match position {
            Some(position) => {
                let Some(Item::Barrier(barrier)) = queue.items.remove(position) else {
                    unreachable!("position found a barrier");
                };
                let overtaken = records_in(queue.items.iter().take(position));
                queue.priority.push_back(Received::Barrier {
                    barrier: barrier.to_unaligned(),
                    overtaken,
                });
                drop(state);
                self.shared.readable.notify_all();
                true
            }
            None => {
                queue.promote = Some(id);
                false
            }
        }
    }

    /// Puts records recovered from channel state at the head of `channel`,
    /// before anything the producer sends (at restore, before the producers
    /// start). They do not count against the capacity.
    pub fn recover(&self, channel: usize, records: impl IntoIterator<Item = R>) {
        let mut state = self.shared.state.lock();
        let queue = &mut state.queues[channel];
        let recovered: Vec<R> = records.into_iter().collect();
        for record in recovered.into_iter().rev() {
            queue.items.push_front(Item::Record(record));
        }
        drop(state);
        self.shared.readable.notify_all();
    }

    /// Records queued on `channel` now.
    pub fn queued_records(&self, channel: usize) -> usize {
        self.shared.state.lock().queues[channel].records
    }
}

impl<R> Drop for InputGate<R> {
    fn drop(&mut self) {
        self.shared.state.lock().closed = true;
        self.shared.writable.notify_all();
    }
}

/// Copies of the records among `items` (what a barrier jumping ahead of
/// them carries as channel state).
fn records_in<'a, R: Clone + 'a>(items: impl Iterator<Item = &'a Item<R>>) -> Vec<R> {
    items
        .filter_map(|item| match item {
            Item::Record(record) => Some(record.clone()),
            _ => None,
        })
        .collect()
}

fn take_next<R>(
    state: &mut GateState<R>,
    readable: &impl Fn(usize) -> bool,
) -> Option<(usize, Received<R>)> {
    let channels = state.queues.len();
    for channel in 0..channels {
        if let Some(event) = state.queues[channel].priority.pop_front() {
            return Some((channel, event));
        }
    }
    for turn in 0..channels {
        let channel = (state.next + turn) % channels;
        if !readable(channel) {
            continue;
        }
        let queue = &mut state.queues[channel];
        let received = match queue.items.pop_front() {
            Some(Item::Record(record)) => {
                queue.records = queue.records.saturating_sub(1);
                Received::Record(record)
            }
            Some(Item::Barrier(barrier)) => Received::Barrier {
                barrier,
                overtaken: Vec::new(),
            },
            Some(Item::End) => {
                queue.end_delivered = true;
                Received::EndOfInput
            }
            None if queue.sender_gone && !queue.end_delivered => {
                queue.end_delivered = true;
                Received::Disconnected
            }
            None => continue,
        };
        state.next = (channel + 1) % channels;
        return Some((channel, received));
    }
    None
}

impl<R: Clone> ChannelSender<R> {
    /// The channel this sender feeds.
    pub fn channel(&self) -> usize {
        self.channel
    }

    /// Queues a record, waiting while the channel is full (back-pressure).
    pub fn send(&self, record: R) -> Result<(), GateClosed> {
        let mut state = self.shared.state.lock();
        while !state.closed && state.queues[self.channel].records >= self.shared.capacity {
            self.shared.writable.wait(&mut state);
        }
        if state.closed {
            return Err(GateClosed);
        }
        let queue = &mut state.queues[self.channel];
        queue.items.push_back(Item::Record(record));
        queue.records += 1;
        drop(state);
        self.shared.readable.notify_all();
        Ok(())
    }

    /// Queues a barrier: behind the queued records, or ahead of them (with
    /// copies of the records it overtakes) if it is unaligned or its
    /// alignment already timed out at the consumer. Never blocks.
    pub fn send_barrier(&self, barrier: CheckpointBarrier) -> Result<(), GateClosed> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(GateClosed);
        }
        let queue = &mut state.queues[self.channel];
        // A promotion of a checkpoint whose barrier never came (cancelled
        // upstream) ends with the next barrier.
        let promoted = matches!(
            queue.promote.take_if(|id| *id <= barrier.id),
            Some(id) if id == barrier.id
        );
        if barrier.options.alignment == AlignmentType::Unaligned || promoted {
            let overtaken = records_in(queue.items.iter());
            queue.priority.push_back(Received::Barrier {
                barrier: barrier.to_unaligned(),
                overtaken,
            });
        } else {
            queue.items.push_back(Item::Barrier(barrier));
        }
        drop(state);
        self.shared.readable.notify_all();
        Ok(())
    }

    /// Sends a cancellation marker of checkpoint `id` ahead of the queue.
    pub fn send_cancel(&self, id: u64) -> Result<(), GateClosed> {
        let mut state = self.shared.state.lock();
        if state.closed {
            return Err(GateClosed);
        }
        state.queues[self.channel]
            .priority
            .push_back(Received::Cancel(id));
        drop(state);
        self.shared.readable.notify_all();
        Ok(())
    }

    /// Ends the channel: the consumer reads [`Received::EndOfInput`] after
    /// the queued items.
    pub fn end(self) {
        let mut state = self.shared.state.lock();
        state.queues[self.channel].items.push_back(Item::End);
        drop(state);
        self.shared.readable.notify_all();
        // Drop runs next and finds the end queued.
    }
}

impl<R> Drop for ChannelSender<R> {
    fn drop(&mut self) {
        let mut state = self.shared.state.lock();
        let queue = &mut state.queues[self.channel];
        queue.sender_gone = true;
        drop(state);
        self.shared.readable.notify_all();
    }
}

impl<R> GateWaker<R> {
    /// Makes the gate's current or next [`recv`](InputGate::recv) return
    /// `None`.
    pub fn wake(&self) {
        self.shared.state.lock().woken = true;
        self.shared.readable.notify_all();
    }
}

#[cfg(test)]
mod tests;

//! One backend's log writer: records go into a buffer, the buffer becomes a
//! segment when it grows past the pre-emptive threshold or a checkpoint asks
//! for it, and segments stay listed (by sequence number) until truncation.

use std::collections::VecDeque;
use std::sync::Arc;

use bytes::Bytes;
use state_api::{CheckpointStorageAccess, KeyGroupRange, StateMeta};

use crate::record::{self, Op, Target};
use crate::segment::{self, SegmentHeader};
use crate::upload::{ChangelogUploader, SegmentSlot};

/// A segment handed to the uploader.
struct Segment {
    first_sqn: u64,
    end_sqn: u64,
    /// Kept until the upload succeeds, to submit again after a failure.
    data: Option<Bytes>,
    /// Bytes the segment takes in its log file.
    stored_len: u64,
    slot: Arc<SegmentSlot>,
    /// Already counted in a checkpoint's uploaded bytes.
    reported: bool,
}

/// A segment a checkpoint refers to.
pub(crate) struct PersistedSegment {
    /// Where the upload outcome appears.
    pub(crate) slot: Arc<SegmentSlot>,
    /// Bytes of the segment.
    pub(crate) bytes: u64,
    /// Bytes first reported by this checkpoint (0 if an earlier one did).
    pub(crate) new_bytes: u64,
}

/// The log of one backend.
pub(crate) struct LogWriter {
    uploader: Arc<ChangelogUploader>,
    storage: Arc<dyn CheckpointStorageAccess>,
    range: KeyGroupRange,
    /// The state table records refer to (the wrapper's state order).
    states: Vec<StateMeta>,
    buffer: Vec<u8>,
    buffer_first_sqn: u64,
    next_sqn: u64,
    segments: VecDeque<Segment>,
}

impl LogWriter {
    pub(crate) fn new(
        uploader: Arc<ChangelogUploader>,
        storage: Arc<dyn CheckpointStorageAccess>,
        range: KeyGroupRange,
    ) -> Self {
        Self {
            uploader,
            storage,
            range,
            states: Vec::new(),
            buffer: new_buffer(0),
            buffer_first_sqn: 0,
            next_sqn: 0,
            segments: VecDeque::new(),
        }
    }

    /// Sequence number of the next record (the number of records so far).
    pub(crate) fn next_sqn(&self) -> u64 {
        self.next_sqn
    }

    /// Adds a state known from restore to the table, without a record.
    pub(crate) fn set_state_table_entry(&mut self, meta: StateMeta) {
        self.states.push(meta);
    }

    /// Adds a state to the table and logs its registration.
    pub(crate) fn add_state(&mut self, meta: StateMeta) {
        let index = self.states.len() as u32;
        record::write_metadata(&mut self.buffer, index, &meta);
        self.states.push(meta);
        self.appended();
    }

    /// Logs a keyed mutation.
    #[inline]
    pub(crate) fn keyed(&mut self, op: Op, target: &Target<'_>, payload: &[&[u8]]) {
        record::write_keyed(&mut self.buffer, op, target, payload);
        self.appended();
    }

    /// Logs a namespace merge with its result.
    pub(crate) fn merge(&mut self, target: &Target<'_>, merged: Option<&[u8]>, sources: &[&[u8]]) {
        record::write_merge(&mut self.buffer, target, merged, sources);
        self.appended();
    }

    #[inline]
    fn appended(&mut self) {
        self.next_sqn += 1;
        if self.buffer.len() >= self.uploader.config().preemptive_persist_threshold {
            self.flush();
        }
    }

    /// Turns the buffered records into a segment and submits it, without
    /// copying them.
    fn flush(&mut self) {
        if self.next_sqn == self.buffer_first_sqn {
            return;
        }
        self.drop_uploaded_data();
        let header = SegmentHeader {
            first_sqn: self.buffer_first_sqn,
            record_count: self.next_sqn - self.buffer_first_sqn,
            key_group_range: self.range,
            states: self.states.clone(),
        };
        let capacity = self.buffer.len();
        let mut full = std::mem::replace(&mut self.buffer, new_buffer(capacity));
        segment::finish(&mut full, &header);
        let data = Bytes::from(full);
        let slot = self.uploader.submit(
            Arc::clone(&self.storage),
            data.clone(),
            self.buffer_first_sqn,
            self.next_sqn,
        );
        self.segments.push_back(Segment {
            first_sqn: self.buffer_first_sqn,
            end_sqn: self.next_sqn,
            // The upload thread appends a 4-byte CRC.
            stored_len: data.len() as u64 + 4,
            data: Some(data),
            slot,
            reported: false,
        });
        self.buffer_first_sqn = self.next_sqn;
    }

    /// Frees the bytes of segments already uploaded: only failed ones are
    /// needed again, so memory follows what is in flight, not the
    /// checkpoint interval.
    fn drop_uploaded_data(&mut self) {
        for segment in &mut self.segments {
            if segment.data.is_some() && segment.slot.finished() == Some(true) {
                segment.data = None;
            }
        }
    }

    /// Persists everything logged so far and returns the segments holding
    /// records from `from_sqn` on. Segments whose upload failed are
    /// submitted again.
    pub(crate) fn persist(&mut self, from_sqn: u64) -> Vec<PersistedSegment> {
        self.flush();
        let mut persisted = Vec::new();
        for segment in &mut self.segments {
            match segment.slot.finished() {
                Some(true) => segment.data = None,
                Some(false) => {
                    if let Some(data) = &segment.data {
                        segment.slot = self.uploader.submit(
                            Arc::clone(&self.storage),
                            data.clone(),
                            segment.first_sqn,
                            segment.end_sqn,
                        );
                    }
                }
                None => {}
            }
            if segment.end_sqn > from_sqn {
                let new_bytes = if segment.reported {
                    0
                } else {
                    segment.reported = true;
                    segment.stored_len
                };
                persisted.push(PersistedSegment {
                    slot: Arc::clone(&segment.slot),
                    bytes: segment.stored_len,
                    new_bytes,
                });
            }
        }
        persisted
    }

    /// Forgets the segments that hold only records before `sqn`; their
    /// files are deleted unless a completed checkpoint referenced them.
    pub(crate) fn truncate(&mut self, sqn: u64) {
        while let Some(first) = self.segments.front() {
            if first.end_sqn > sqn {
                break;
            }
            if let Some(segment) = self.segments.pop_front() {
                self.uploader.release(&segment.slot, false);
            }
        }
    }

    /// A completed checkpoint referenced the uploaded `segments`.
    pub(crate) fn confirm(&self, slots: &[Arc<SegmentSlot>]) {
        for slot in slots {
            if let Some(segment) = slot.uploaded() {
                self.uploader.confirm(&segment.file.path);
            }
        }
    }

    /// Bytes buffered and not yet handed to the uploader.
    pub(crate) fn buffered_bytes(&self) -> usize {
        if segment::is_empty(&self.buffer) {
            0
        } else {
            self.buffer.len()
        }
    }

    /// Bytes of segments kept in memory for a possible re-upload.
    pub(crate) fn retained_bytes(&self) -> usize {
        self.segments
            .iter()
            .filter_map(|s| s.data.as_ref())
            .map(Bytes::len)
            .sum()
    }

    /// Bytes of segments whose upload failed, kept in memory to be
    /// submitted again by the next checkpoint.
    pub(crate) fn failed_bytes(&self) -> usize {
        self.segments
            .iter()
            .filter(|s| s.slot.finished() == Some(false))
            .filter_map(|s| s.data.as_ref())
            .map(Bytes::len)
            .sum()
    }

    /// How many bytes of failed segments a backend may hold before it
    /// fails (the uploader's in-flight limit).
    pub(crate) fn max_failed_bytes(&self) -> usize {
        self.uploader.config().max_in_flight
    }

    /// Number of segments not truncated yet.
    pub(crate) fn segment_count(&self) -> usize {
        self.segments.len()
    }
}

/// A buffer with a started segment.
fn new_buffer(capacity: usize) -> Vec<u8> {
    let mut buffer = Vec::with_capacity(capacity);
    segment::start(&mut buffer);
    buffer
}

impl LogWriter {
    /// The backend is going away, knowing which checkpoints may still be
    /// committed (a failure between commit and notice): keeps the files of
    /// the segments in `unknown` (their slots), and releases the others to
    /// be deleted unless a completed checkpoint confirmed them. A segment
    /// only aborted checkpoints included goes.
    pub(crate) fn close(&mut self, unknown: &[Arc<SegmentSlot>]) {
        for segment in self.segments.drain(..) {
            let keep = unknown.iter().any(|slot| Arc::ptr_eq(slot, &segment.slot));
            self.uploader.release(&segment.slot, keep);
        }
    }
}

impl Drop for LogWriter {
    fn drop(&mut self) {
        // Without `close` (the backend did not say which checkpoints are
        // open), every segment a checkpoint has seen may still be committed:
        // leave those files to the checkpoint store, and delete only
        // segments no checkpoint has seen.
        for segment in self.segments.drain(..) {
            self.uploader.release(&segment.slot, segment.reported);
        }
    }
}

//! The records of the change log: one per state mutation.
//!
//! A record is `[op: u8][state: varint]` followed by what the op needs:
//!
//! | op | after the state index |
//! |---|---|
//! | `SET` | key group, key, namespace, value |
//! | `CLEAR` | key group, key, namespace |
//! | `ADD` (list append) | key group, key, namespace, encoded elements |
//! | `ADD_OR_UPDATE_ELEMENT` (map put) | key group, key, namespace, user key, value |
//! | `REMOVE_ELEMENT` (map remove) | key group, key, namespace, user key |
//! | `MERGE_NS` | key group, key, target namespace, merged value (empty: none), source namespaces |
//! | `METADATA` | the registered state's [`StateMeta`] (CBOR; postcard in version-1 segments) |
//!
//! Key groups and counts are varints, byte strings are varint-length
//! prefixed. A record's sequence number is implicit: the segment's first
//! sequence number plus the record's position in it.
//!
//! Reducing and aggregating inputs are logged as the folded value (`SET`)
//! and merges as their result, so replay never needs the user's functions,
//! which do not exist yet when a backend restores.

use state_api::codec::{read_len_prefixed, read_varint, write_len_prefixed, write_varint};
use state_api::format::evolving;
use state_api::format::v1::{self, Upgrade as _};
use state_api::{KeyGroup, StateMeta};

/// What a record does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum Op {
    /// Replace the value (or whole list).
    Set = 1,
    /// Remove the (key, namespace) entry.
    Clear = 2,
    /// Append list elements.
    Add = 3,
    /// Insert or replace a map entry.
    AddOrUpdateElement = 4,
    /// Remove a map entry.
    RemoveElement = 5,
    /// Merge namespaces into a target (the merged result is logged).
    MergeNamespaces = 6,
    /// A state was registered.
    Metadata = 7,
}

impl Op {
    fn from_byte(byte: u8) -> Option<Self> {
        Some(match byte {
            1 => Op::Set,
            2 => Op::Clear,
            3 => Op::Add,
            4 => Op::AddOrUpdateElement,
            5 => Op::RemoveElement,
            6 => Op::MergeNamespaces,
            7 => Op::Metadata,
            _ => return None,
        })
    }
}

/// Where a keyed record applies.
#[derive(Clone, Copy, Debug)]
pub struct Target<'a> {
    /// Index of the state in the segment's state table.
    pub state: u32,
    /// Key group of the key.
    pub key_group: KeyGroup,
    /// Encoded key.
    pub key: &'a [u8],
    /// Encoded namespace.
    pub namespace: &'a [u8],
}

/// Appends records to a buffer.
pub(crate) fn write_keyed(out: &mut Vec<u8>, op: Op, target: &Target<'_>, payload: &[&[u8]]) {
    out.push(op as u8);
    write_varint(out, u64::from(target.state));
    write_varint(out, u64::from(target.key_group));
    write_len_prefixed(out, target.key);
    write_len_prefixed(out, target.namespace);
    for part in payload {
        write_len_prefixed(out, part);
    }
}

/// Appends a merge record: the merged value (`None`: the target ends up
/// empty) and the merged source namespaces.
pub(crate) fn write_merge(
    out: &mut Vec<u8>,
    target: &Target<'_>,
    merged: Option<&[u8]>,
    sources: &[&[u8]],
) {
    write_keyed(out, Op::MergeNamespaces, target, &[]);
    match merged {
        Some(value) => {
            out.push(1);
            write_len_prefixed(out, value);
        }
        None => out.push(0),
    }
    write_varint(out, sources.len() as u64);
    for source in sources {
        write_len_prefixed(out, source);
    }
}

/// Appends a metadata record for state `state`.
pub(crate) fn write_metadata(out: &mut Vec<u8>, state: u32, meta: &StateMeta) {
    out.push(Op::Metadata as u8);
    write_varint(out, u64::from(state));
    write_len_prefixed(out, &evolving::encode(meta));
}

/// A decoded record.
#[derive(Debug)]
pub enum Record<'a> {
    /// A keyed mutation.
    Keyed {
        /// What it does.
        op: KeyedOp<'a>,
        /// Where.
        target: Target<'a>,
    },
    /// A state registration.
    Metadata {
        /// State index in the segment's table.
        state: u32,
        /// The state.
        meta: StateMeta,
    },
}

/// The payload of a keyed record.
#[derive(Debug)]
pub enum KeyedOp<'a> {
    /// Replace the value.
    Set(&'a [u8]),
    /// Remove the entry.
    Clear,
    /// Append list elements.
    Add(&'a [u8]),
    /// Put a map entry: (user key, value).
    PutElement(&'a [u8], &'a [u8]),
    /// Remove a map entry.
    RemoveElement(&'a [u8]),
    /// Merge: the merged value (if any) and the sources.
    Merge(Option<&'a [u8]>, Vec<&'a [u8]>),
}

/// Reads the records of a segment body one by one.
#[derive(Debug)]
pub struct RecordReader<'a> {
    input: &'a [u8],
    version: u8,
}

impl<'a> RecordReader<'a> {
    /// Reads records written by this build from `input`.
    pub fn new(input: &'a [u8]) -> Self {
        Self::of_version(input, crate::segment::VERSION)
    }

    /// Reads records of a segment of format `version` (which decides how
    /// metadata records are encoded: postcard in version 1, CBOR since).
    pub fn of_version(input: &'a [u8], version: u8) -> Self {
        Self { input, version }
    }

    /// The bytes not read yet.
    pub fn remaining(&self) -> &'a [u8] {
        self.input
    }

    /// The next record, `Ok(None)` at the end; `Err` describes malformed
    /// bytes.
    pub fn next_record(&mut self) -> Result<Option<Record<'a>>, String> {
        let Some((&op_byte, rest)) = self.input.split_first() else {
            return Ok(None);
        };
        self.input = rest;
        let op = Op::from_byte(op_byte).ok_or_else(|| format!("unknown op code {op_byte}"))?;
        let state = self.varint_u32("state index")?;
        if op == Op::Metadata {
            let bytes = self.bytes("metadata")?;
            let meta = match self.version {
                1 => v1::decode::<v1::StateMetaV1>(bytes)
                    .and_then(|old| old.upgrade().map_err(|e| e.to_string())),
                _ => evolving::decode(bytes),
            }
            .map_err(|e| format!("metadata record does not decode: {e}"))?;
            return Ok(Some(Record::Metadata { state, meta }));
        }
        let key_group = self.varint_u32("key group")?;
        let key = self.bytes("key")?;
        let namespace = self.bytes("namespace")?;
        let op = match op {
            Op::Set => KeyedOp::Set(self.bytes("value")?),
            Op::Clear => KeyedOp::Clear,
            Op::Add => KeyedOp::Add(self.bytes("list elements")?),
            Op::AddOrUpdateElement => {
                KeyedOp::PutElement(self.bytes("user key")?, self.bytes("value")?)
            }
            Op::RemoveElement => KeyedOp::RemoveElement(self.bytes("user key")?),
            Op::MergeNamespaces => {
                let merged = match self.input.split_first() {
                    Some((0, rest)) => {
                        self.input = rest;
                        None
                    }
                    Some((1, rest)) => {
                        self.input = rest;
                        Some(self.bytes("merged value")?)
                    }
                    _ => return Err("malformed merge record".into()),
                };
                let count = self.varint_u32("source count")?;
                let mut sources = Vec::with_capacity(count.min(1024) as usize);
                for _ in 0..count {
                    sources.push(self.bytes("source namespace")?);
                }
                KeyedOp::Merge(merged, sources)
            }
            Op::Metadata => unreachable!("handled above"),
        };
        Ok(Some(Record::Keyed {
            op,
            target: Target {
                state,
                key_group,
                key,
                namespace,
            },
        }))
    }

    fn varint_u32(&mut self, what: &str) -> Result<u32, String> {
        let (value, rest) = read_varint(self.input).ok_or_else(|| format!("truncated {what}"))?;
        self.input = rest;
        u32::try_from(value).map_err(|_| format!("{what} {value} is out of range"))
    }

    fn bytes(&mut self, what: &str) -> Result<&'a [u8], String> {
        let (bytes, rest) =
            read_len_prefixed(self.input).ok_or_else(|| format!("truncated {what}"))?;
        self.input = rest;
        Ok(bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_api::ValueStateDescriptor;

    #[test]
    fn records_round_trip() {
        let target = Target {
            state: 3,
            key_group: 300,
            key: b"key",
            namespace: b"ns",
        };
        let meta = ValueStateDescriptor::<u64>::new("v").meta().clone();
        let mut out = Vec::new();
        write_keyed(&mut out, Op::Set, &target, &[b"value"]);
        write_keyed(&mut out, Op::Clear, &target, &[]);
        write_keyed(&mut out, Op::AddOrUpdateElement, &target, &[b"uk", b"uv"]);
        write_merge(&mut out, &target, Some(b"merged"), &[b"a", b"b"]);
        write_merge(&mut out, &target, None, &[]);
        write_metadata(&mut out, 9, &meta);

        let mut reader = RecordReader::new(&out);
        let mut ops = Vec::new();
        while let Some(record) = reader.next_record().unwrap() {
            match record {
                Record::Keyed { op, target } => {
                    assert_eq!((target.state, target.key_group), (3, 300));
                    assert_eq!((target.key, target.namespace), (&b"key"[..], &b"ns"[..]));
                    ops.push(format!("{op:?}"));
                }
                Record::Metadata { state, meta: m } => {
                    assert_eq!((state, &m), (9, &meta));
                    ops.push("meta".into());
                }
            }
        }
        assert_eq!(ops.len(), 6, "{ops:?}");
        assert!(ops[0].starts_with("Set"));
        assert!(ops[3].contains("Some"));
    }

    #[test]
    fn malformed_records_are_errors() {
        let target = Target {
            state: 1,
            key_group: 2,
            key: b"k",
            namespace: b"",
        };
        let mut out = Vec::new();
        write_keyed(&mut out, Op::Set, &target, &[b"value"]);
        for cut in 1..out.len() {
            let mut reader = RecordReader::new(&out[..cut]);
            assert!(reader.next_record().is_err(), "cut at {cut}");
        }
        assert!(RecordReader::new(&[99]).next_record().is_err());
    }
}

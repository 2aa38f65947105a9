//! The segment format: the unit a log writer hands to the uploader.
//!
//! ```text
//! "KSCS" | version u8 | records | trailer | trailer length u32 LE | CRC-32C u32 LE
//! ```
//!
//! The trailer is a [`SegmentHeader`] in CBOR
//! ([`state_api::format::evolving`]); version 1 used postcard for it and
//! for the metadata records, and stays readable.
//!
//! The writer appends records right after the magic and closes the segment
//! with the trailer, so handing a segment over copies nothing; the upload
//! thread appends the CRC (over every byte before it). The trailer names
//! the first sequence number, the record count, the writer's key groups and
//! the state table that record state indices refer to, so a segment can be
//! replayed on its own. A log file is a concatenation of segments (of one
//! or several writers); the storage adds its own checksum over the file.

use serde::{Deserialize, Serialize};
use state_api::format::evolving;
use state_api::format::v1::{self, KeyGroupRangeV1, StateMetaV1, Upgrade};
use state_api::{ChangelogSegment, KeyGroupRange, Result, StateError, StateMeta};

use crate::record::RecordReader;

const MAGIC: &[u8; 4] = b"KSCS";
/// The segment format version this build writes; it reads every version
/// from 1 on. Version 3 added timer states and the time to live in the
/// state metadata records.
pub(crate) const VERSION: u8 = 3;
const PREFIX_LEN: usize = MAGIC.len() + 1;
const CRC_LEN: usize = 4;
const TRAILER_LEN_LEN: usize = 4;

/// What a segment says about itself.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SegmentHeader {
    /// Sequence number of the first record.
    pub first_sqn: u64,
    /// Number of records.
    pub record_count: u64,
    /// Key groups of the writer.
    pub key_group_range: KeyGroupRange,
    /// The writer's states; record state indices point here.
    pub states: Vec<StateMeta>,
}

/// Starts a segment in an empty buffer; records follow.
pub(crate) fn start(buffer: &mut Vec<u8>) {
    buffer.extend_from_slice(MAGIC);
    buffer.push(VERSION);
}

/// Whether `buffer` holds no record yet.
pub(crate) fn is_empty(buffer: &[u8]) -> bool {
    buffer.len() <= PREFIX_LEN
}

/// Closes the segment in `buffer` with its trailer (the CRC comes from
/// [`checksum`] on the upload thread).
pub(crate) fn finish(buffer: &mut Vec<u8>, header: &SegmentHeader) {
    let trailer = evolving::encode(header);
    buffer.extend_from_slice(&trailer);
    buffer.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
}

/// The CRC to append to a finished segment.
pub(crate) fn checksum(segment: &[u8]) -> [u8; CRC_LEN] {
    crc32c::crc32c(segment).to_le_bytes()
}

/// A whole segment (with CRC) from a header and records, for tests.
#[cfg(test)]
pub(crate) fn encode(header: &SegmentHeader, records: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    start(&mut out);
    out.extend_from_slice(records);
    finish(&mut out, header);
    let crc = checksum(&out);
    out.extend_from_slice(&crc);
    out
}

/// Checks a segment read from its file against the handle that points to
/// it and returns its header and a reader of its records.
///
/// # Errors
/// [`StateError::Corrupt`] naming the file for a checksum mismatch, a bad
/// magic or version, or a header that disagrees with the handle.
pub fn decode<'a>(
    bytes: &'a [u8],
    expected: &ChangelogSegment,
) -> Result<(SegmentHeader, RecordReader<'a>)> {
    let path = expected.file.path.as_str();
    let corrupt = |reason: String| {
        StateError::corrupt(
            path,
            format!("log segment at offset {}: {reason}", expected.offset),
        )
    };
    if bytes.len() < PREFIX_LEN + TRAILER_LEN_LEN + CRC_LEN {
        return Err(corrupt(format!("{} bytes is too short", bytes.len())));
    }
    let (content, crc_bytes) = bytes.split_at(bytes.len() - CRC_LEN);
    let stored = u32::from_le_bytes(crc_bytes.try_into().expect("4 bytes"));
    let actual = crc32c::crc32c(content);
    if stored != actual {
        return Err(corrupt(format!(
            "checksum mismatch (stored {stored:08x}, computed {actual:08x})"
        )));
    }
    if &content[..MAGIC.len()] != MAGIC {
        return Err(corrupt("not a log segment (bad magic)".into()));
    }
    let version = content[MAGIC.len()];
    if version > VERSION {
        return Err(StateError::UnsupportedVersion {
            path: expected.file.path.clone(),
            format: "change log segment",
            found: u32::from(version),
            supported: u32::from(VERSION),
        });
    }
    if version == 0 {
        return Err(corrupt(format!("segment version {version} does not exist")));
    }
    let (rest, len_bytes) = content.split_at(content.len() - TRAILER_LEN_LEN);
    let trailer_len = u32::from_le_bytes(len_bytes.try_into().expect("4 bytes")) as usize;
    if trailer_len > rest.len() - PREFIX_LEN {
        return Err(corrupt(format!(
            "trailer length {trailer_len} exceeds the segment"
        )));
    }
    let (records, trailer) = rest[PREFIX_LEN..].split_at(rest.len() - PREFIX_LEN - trailer_len);
    let header = match version {
        1 => v1::decode::<SegmentHeaderV1>(trailer)
            .and_then(|old| old.upgrade().map_err(|e| e.to_string())),
        _ => evolving::decode(trailer),
    }
    .map_err(|e| corrupt(format!("trailer does not decode: {e}")))?;
    let end = header.first_sqn.checked_add(header.record_count);
    if header.first_sqn != expected.first_sqn || end != Some(expected.end_sqn) {
        return Err(corrupt(format!(
            "holds records {}..{:?}, the handle says {}..{}",
            header.first_sqn, end, expected.first_sqn, expected.end_sqn
        )));
    }
    Ok((header, RecordReader::of_version(records, version)))
}

/// [`SegmentHeader`] in version 1, frozen (see [`state_api::format::v1`]).
#[derive(Deserialize)]
struct SegmentHeaderV1 {
    first_sqn: u64,
    record_count: u64,
    key_group_range: KeyGroupRangeV1,
    states: Vec<StateMetaV1>,
}

impl Upgrade for SegmentHeaderV1 {
    type Current = SegmentHeader;

    fn upgrade(self) -> Result<SegmentHeader> {
        Ok(SegmentHeader {
            first_sqn: self.first_sqn,
            record_count: self.record_count,
            key_group_range: self.key_group_range.upgrade()?,
            states: self
                .states
                .into_iter()
                .map(Upgrade::upgrade)
                .collect::<Result<_>>()?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use state_api::{FileHandle, StateScope, ValueStateDescriptor};

    fn handle(first: u64, end: u64, len: usize) -> ChangelogSegment {
        ChangelogSegment {
            file: FileHandle {
                path: "shared/log".into(),
                scope: StateScope::Shared,
                size: len as u64,
                crc32c: 0,
            },
            offset: 0,
            length: len as u64,
            first_sqn: first,
            end_sqn: end,
        }
    }

    fn header() -> SegmentHeader {
        SegmentHeader {
            first_sqn: 10,
            record_count: 2,
            key_group_range: KeyGroupRange::new(0, 64).unwrap(),
            states: vec![ValueStateDescriptor::<u64>::new("v").meta().clone()],
        }
    }

    #[test]
    fn segments_round_trip() {
        let bytes = encode(&header(), b"records");
        let (decoded, records) = decode(&bytes, &handle(10, 12, bytes.len())).unwrap();
        assert_eq!(decoded, header());
        assert_eq!(records.remaining(), b"records");
    }

    /// Version-1 segments (postcard trailer and metadata records) stay
    /// readable. Today's types still encode in postcard as version 1 did;
    /// the checked-in version-1 fixtures pin it for good.
    #[test]
    fn version_1_segments_are_read() {
        let meta = header().states[0].clone();
        let mut records = vec![crate::record::Op::Metadata as u8, 0];
        state_api::codec::write_len_prefixed(&mut records, &postcard::to_allocvec(&meta).unwrap());
        let mut bytes = MAGIC.to_vec();
        bytes.push(1);
        bytes.extend_from_slice(&records);
        let trailer = postcard::to_allocvec(&header()).unwrap();
        bytes.extend_from_slice(&trailer);
        bytes.extend_from_slice(&(trailer.len() as u32).to_le_bytes());
        let crc = checksum(&bytes);
        bytes.extend_from_slice(&crc);
        let (decoded, mut reader) = decode(&bytes, &handle(10, 12, bytes.len())).unwrap();
        assert_eq!(decoded, header());
        match reader.next_record().unwrap() {
            Some(crate::record::Record::Metadata {
                state: 0,
                meta: read,
            }) => assert_eq!(read, meta),
            other => panic!("expected the metadata record, got {other:?}"),
        }
        assert!(reader.next_record().unwrap().is_none());
    }

    /// A segment of a later release (a higher version, its checksum
    /// intact) is a clear error naming the version.
    #[test]
    fn newer_versions_are_named() {
        let mut bytes = encode(&header(), b"records");
        bytes[MAGIC.len()] = VERSION + 1;
        let crc_at = bytes.len() - CRC_LEN;
        let crc = crc32c::crc32c(&bytes[..crc_at]);
        bytes[crc_at..].copy_from_slice(&crc.to_le_bytes());
        let err = decode(&bytes, &handle(10, 12, bytes.len())).unwrap_err();
        assert!(
            matches!(
                err,
                StateError::UnsupportedVersion {
                    found,
                    supported,
                    ..
                } if found == u32::from(VERSION) + 1 && supported == u32::from(VERSION)
            ),
            "{err}"
        );
    }

    #[test]
    fn damage_and_mismatches_are_corruption() {
        let bytes = encode(&header(), b"records");
        for index in 0..bytes.len() {
            let mut damaged = bytes.clone();
            damaged[index] ^= 0x40;
            let err = decode(&damaged, &handle(10, 12, bytes.len())).unwrap_err();
            assert!(matches!(err, StateError::Corrupt { .. }), "{err}");
        }
        assert!(decode(&bytes[..3], &handle(10, 12, 3)).is_err());
        let err = decode(&bytes, &handle(11, 12, bytes.len())).unwrap_err();
        assert!(err.to_string().contains("the handle says"), "{err}");
    }
}

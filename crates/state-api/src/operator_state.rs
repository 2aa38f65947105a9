//! Operator (non-keyed) state: the handles that describe it in a checkpoint
//! and the file format it is written in. The backend that holds it lives in
//! the runtime crate; every piece that reads checkpoints needs these types.
//!
//! Operator state is a set of named lists of opaque elements per parallel
//! instance (a source's split offsets, a sink's pending transactions), and
//! named maps that every instance holds in full (broadcast state). How a
//! list is redistributed when the parallelism changes is part of its
//! registration: [`OperatorStateMode`].
//!
//! # File format (version 1)
//! ```text
//! file    = b"KSOS" | version u8 | section*
//! section = element*            one per state, at the offset in its handle
//! element = len u32 LE | bytes  a list element, or a broadcast entry:
//!                               key and value, each len u32 LE | bytes
//! ```
//! The storage's footer checksums the whole file. The handle records each
//! state's section offset and element count (not one offset per element, so
//! union state with many elements does not bloat `_metadata`).

use serde::{Deserialize, Serialize};

use crate::error::{Result, StateError};
use crate::format::elements::{self, ElementsWriter};
use crate::snapshot::FileHandle;

/// First bytes of every operator state file.
pub const OPERATOR_STATE_MAGIC: [u8; 4] = *b"KSOS";

/// Version of the operator state file format this build writes and reads.
pub const OPERATOR_STATE_VERSION: u8 = 1;

/// How a named operator state is redistributed when the parallelism changes
/// (Flink's `OperatorStateHandle.Mode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum OperatorStateMode {
    /// List state split evenly: the elements of all old instances are
    /// concatenated and cut into contiguous ranges, one per new instance
    /// (Flink's `getListState`).
    SplitDistribute,
    /// Union list state: every new instance gets every element
    /// (`getUnionListState`).
    Union,
    /// Broadcast state: a map every instance holds in full; new instance `i`
    /// reads old instance `i mod old parallelism`'s copy.
    Broadcast,
}

/// One named state in an operator state file.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorStateSection {
    /// The state's name.
    pub name: String,
    /// How it is redistributed.
    pub mode: OperatorStateMode,
    /// Where its elements start in the file.
    pub offset: u64,
    /// How many elements (list elements or map entries) it holds.
    pub elements: u64,
}

/// The operator state of one parallel instance in one checkpoint.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorStateHandle {
    /// The instance that wrote it (0-based).
    pub subtask: u32,
    /// The job's parallelism of the operator when it was written.
    pub parallelism: u32,
    /// The file.
    pub file: FileHandle,
    /// Its states, in file order.
    pub sections: Vec<OperatorStateSection>,
}

impl OperatorStateHandle {
    /// Bytes of state it references.
    pub fn state_size(&self) -> u64 {
        self.file.size
    }
}

/// The content of one state in a file: list elements, or broadcast entries.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SectionContent {
    /// List elements in order.
    List(Vec<Vec<u8>>),
    /// Broadcast map entries in key order.
    Map(Vec<(Vec<u8>, Vec<u8>)>),
}

/// Writes operator state files.
#[derive(Debug)]
pub struct OperatorStateWriter {
    file: ElementsWriter,
    sections: Vec<OperatorStateSection>,
}

impl Default for OperatorStateWriter {
    fn default() -> Self {
        Self {
            file: ElementsWriter::new(OPERATOR_STATE_MAGIC, OPERATOR_STATE_VERSION),
            sections: Vec::new(),
        }
    }
}

impl OperatorStateWriter {
    /// An empty file.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends list state `name`.
    ///
    /// # Errors
    /// [`StateError::NotSupported`] for an element of 4 GiB or more.
    pub fn list<'a>(
        &mut self,
        name: &str,
        mode: OperatorStateMode,
        elements: impl IntoIterator<Item = &'a [u8]>,
    ) -> Result<()> {
        let offset = self.file.offset();
        let mut count = 0;
        for element in elements {
            self.file.put(element)?;
            count += 1;
        }
        self.sections.push(OperatorStateSection {
            name: name.to_string(),
            mode,
            offset,
            elements: count,
        });
        Ok(())
    }

    /// Appends broadcast state `name`: each entry is two elements, key and
    /// value.
    ///
    /// # Errors
    /// [`StateError::NotSupported`] for a key or value of 4 GiB or more.
    pub fn map<'a>(
        &mut self,
        name: &str,
        entries: impl IntoIterator<Item = (&'a [u8], &'a [u8])>,
    ) -> Result<()> {
        let offset = self.file.offset();
        let mut count = 0;
        for (key, value) in entries {
            self.file.put(key)?;
            self.file.put(value)?;
            count += 1;
        }
        self.sections.push(OperatorStateSection {
            name: name.to_string(),
            mode: OperatorStateMode::Broadcast,
            offset,
            elements: count,
        });
        Ok(())
    }

    /// The file's bytes and the sections for its handle.
    pub fn finish(self) -> (Vec<u8>, Vec<OperatorStateSection>) {
        (self.file.finish(), self.sections)
    }
}

/// Reads the section `section` of the operator state file `bytes` (read
/// from `path`, named in errors).
///
/// # Errors
/// [`StateError::UnsupportedVersion`] for a newer file version;
/// [`StateError::Corrupt`] for a bad magic, a section outside the file, an
/// element past its end, or a count the file cannot hold.
pub fn read_section(
    path: &str,
    bytes: &[u8],
    section: &OperatorStateSection,
) -> Result<SectionContent> {
    elements::check_header(
        path,
        bytes,
        OPERATOR_STATE_MAGIC,
        OPERATOR_STATE_VERSION,
        "operator state",
    )?;
    let what = format!("state '{}'", section.name);
    if section.mode == OperatorStateMode::Broadcast {
        let count = section.elements.checked_mul(2).ok_or_else(|| {
            StateError::corrupt(path, format!("{what} claims {} entries", section.elements))
        })?;
        let mut flat =
            elements::read_elements(path, bytes, section.offset, count, &what)?.into_iter();
        let mut entries = Vec::with_capacity(section.elements as usize);
        while let (Some(key), Some(value)) = (flat.next(), flat.next()) {
            entries.push((key, value));
        }
        Ok(SectionContent::Map(entries))
    } else {
        elements::read_elements(path, bytes, section.offset, section.elements, &what)
            .map(SectionContent::List)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn section(sections: &[OperatorStateSection], name: &str) -> OperatorStateSection {
        sections
            .iter()
            .find(|s| s.name == name)
            .cloned()
            .unwrap_or_else(|| panic!("{name}"))
    }

    #[test]
    fn lists_and_maps_round_trip() {
        let mut writer = OperatorStateWriter::new();
        writer
            .list(
                "offsets",
                OperatorStateMode::SplitDistribute,
                [&b"a"[..], b"", b"ccc"],
            )
            .unwrap();
        writer.map("rules", [(&b"k"[..], &b"v"[..])]).unwrap();
        writer.list("empty", OperatorStateMode::Union, []).unwrap();
        let (bytes, sections) = writer.finish();
        assert_eq!(
            read_section("f", &bytes, &section(&sections, "offsets")).unwrap(),
            SectionContent::List(vec![b"a".to_vec(), Vec::new(), b"ccc".to_vec()])
        );
        assert_eq!(
            read_section("f", &bytes, &section(&sections, "rules")).unwrap(),
            SectionContent::Map(vec![(b"k".to_vec(), b"v".to_vec())])
        );
        assert_eq!(
            read_section("f", &bytes, &section(&sections, "empty")).unwrap(),
            SectionContent::List(Vec::new())
        );
    }

    #[test]
    fn damaged_files_and_handles_are_clear_errors() {
        let mut writer = OperatorStateWriter::new();
        writer
            .list("offsets", OperatorStateMode::SplitDistribute, [&b"abc"[..]])
            .unwrap();
        let (bytes, sections) = writer.finish();
        let good = section(&sections, "offsets");
        let error = |bytes: &[u8], section: &OperatorStateSection| {
            read_section("f", bytes, section).unwrap_err().to_string()
        };
        assert!(error(b"XXXX\x01", &good).contains("bad magic"));
        let mut newer = bytes.clone();
        newer[4] = 9;
        assert!(matches!(
            read_section("f", &newer, &good),
            Err(StateError::UnsupportedVersion { found: 9, .. })
        ));
        let far = OperatorStateSection {
            offset: 1 << 40,
            ..good.clone()
        };
        assert!(error(&bytes, &far).contains("outside"));
        let many = OperatorStateSection {
            elements: u64::MAX,
            ..good.clone()
        };
        assert!(error(&bytes, &many).contains("more than"));
        let truncated = &bytes[..bytes.len() - 1];
        assert!(error(truncated, &good).contains("past the end"));
    }
}

//! Files of length-prefixed elements: what operator state and channel
//! state files are made of.
//!
//! ```text
//! file    = magic [u8; 4] | version u8 | element*
//! element = len u32 LE | bytes
//! ```
//! Handles point at runs of elements by offset and count; the storage's
//! footer checksums the whole file.

use crate::error::{Result, StateError};

/// Bytes before the first element: magic and version.
pub const HEADER_LEN: usize = 5;

/// A file being built: header first, elements appended.
#[derive(Debug)]
pub struct ElementsWriter {
    bytes: Vec<u8>,
}

impl ElementsWriter {
    /// A file of `magic` and `version`.
    pub fn new(magic: [u8; 4], version: u8) -> Self {
        let mut bytes = magic.to_vec();
        bytes.push(version);
        Self { bytes }
    }

    /// Where the next element starts.
    pub fn offset(&self) -> u64 {
        self.bytes.len() as u64
    }

    /// Appends one element. Elements of 4 GiB or more are refused.
    ///
    /// # Errors
    /// [`StateError::NotSupported`] for an element too large for its length
    /// field.
    pub fn put(&mut self, element: &[u8]) -> Result<()> {
        let len = u32::try_from(element.len()).map_err(|_| StateError::NotSupported {
            operation: "an operator or channel state element of 4 GiB or more",
            backend: "runtime",
        })?;
        self.bytes.extend_from_slice(&len.to_le_bytes());
        self.bytes.extend_from_slice(element);
        Ok(())
    }

    /// The file's bytes.
    pub fn finish(self) -> Vec<u8> {
        self.bytes
    }
}

/// Checks the header of `bytes` (read from `path`): the magic, and a
/// version this build reads (`1..=version`).
///
/// # Errors
/// [`StateError::Corrupt`] for a bad magic or version 0;
/// [`StateError::UnsupportedVersion`] for a newer version.
pub fn check_header(
    path: &str,
    bytes: &[u8],
    magic: [u8; 4],
    version: u8,
    format: &'static str,
) -> Result<()> {
    if bytes.get(..magic.len()) != Some(&magic[..]) {
        return Err(StateError::corrupt(
            path,
            format!("not a {format} file (bad magic)"),
        ));
    }
    match bytes.get(magic.len()).copied() {
        Some(found) if (1..=version).contains(&found) => Ok(()),
        Some(found) if found > version => Err(StateError::UnsupportedVersion {
            path: path.to_string(),
            format,
            found: u32::from(found),
            supported: u32::from(version),
        }),
        other => Err(StateError::corrupt(
            path,
            format!("{format} version {other:?} does not exist"),
        )),
    }
}

/// Reads `count` elements starting at `offset` of `bytes` (read from
/// `path`); `what` names the run in errors.
///
/// # Errors
/// [`StateError::Corrupt`] for a run outside the file, a count the bytes
/// cannot hold, or an element past the end.
pub fn read_elements(
    path: &str,
    bytes: &[u8],
    offset: u64,
    count: u64,
    what: &str,
) -> Result<Vec<Vec<u8>>> {
    let corrupt = |reason: String| StateError::corrupt(path, reason);
    let start = usize::try_from(offset)
        .ok()
        .filter(|start| *start >= HEADER_LEN && *start <= bytes.len())
        .ok_or_else(|| {
            corrupt(format!(
                "{what} starts at {offset}, outside the {}-byte file",
                bytes.len()
            ))
        })?;
    let mut cursor = &bytes[start..];
    if count > (cursor.len() / 4) as u64 {
        return Err(corrupt(format!(
            "{what} claims {count} elements, more than its {} bytes can hold",
            cursor.len()
        )));
    }
    let mut elements = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let (len, rest) = cursor
            .split_first_chunk::<4>()
            .ok_or_else(|| corrupt(format!("{what}: element length truncated")))?;
        let len = u32::from_le_bytes(*len) as usize;
        if len > rest.len() {
            return Err(corrupt(format!(
                "{what}: an element of {len} bytes runs past the end of the file"
            )));
        }
        let (element, rest) = rest.split_at(len);
        elements.push(element.to_vec());
        cursor = rest;
    }
    Ok(elements)
}

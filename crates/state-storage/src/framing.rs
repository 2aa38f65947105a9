//! The checksum footer every stored state file carries (everything a
//! [`FileHandle`] names; `_metadata` has its own checksummed format, see
//! [`crate::metadata`]).
//!
//! ```text
//! stored object = payload ++ footer
//! footer (16 B) = crc32c(payload) u32 LE | payload length u64 LE | b"KSF1"
//! ```
//!
//! The footer makes a stored object self-describing: a whole-file read
//! verifies it against both the bytes and the [`FileHandle`], so a flipped
//! byte, a truncated upload or a handle pointing at another file is caught.
//! It sits at the end so it can be computed while streaming.

use state_api::{FileHandle, Result, StateError};

/// Magic at the very end of every stored object.
pub const FOOTER_MAGIC: [u8; 4] = *b"KSF1";

/// Length of the footer in bytes.
pub const FOOTER_LEN: usize = 4 + 8 + FOOTER_MAGIC.len();

/// The footer fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Footer {
    /// CRC-32C of the payload.
    pub crc32c: u32,
    /// Payload length in bytes.
    pub payload_len: u64,
}

impl Footer {
    /// The 16 footer bytes.
    pub fn encode(&self) -> [u8; FOOTER_LEN] {
        let mut out = [0u8; FOOTER_LEN];
        out[..4].copy_from_slice(&self.crc32c.to_le_bytes());
        out[4..12].copy_from_slice(&self.payload_len.to_le_bytes());
        out[12..].copy_from_slice(&FOOTER_MAGIC);
        out
    }

    /// Parses the last [`FOOTER_LEN`] bytes of `stored`. Returns the reason
    /// when they are not a footer.
    pub fn decode(stored: &[u8]) -> std::result::Result<Self, String> {
        let Some(start) = stored.len().checked_sub(FOOTER_LEN) else {
            return Err(format!(
                "truncated: {} bytes stored, shorter than the {FOOTER_LEN}-byte footer",
                stored.len()
            ));
        };
        let footer = stored.get(start..).unwrap_or_default();
        let (crc, rest) = footer.split_at(4);
        let (len, magic) = rest.split_at(8);
        if magic != FOOTER_MAGIC {
            return Err("bad footer magic (not a checkpoint file, or truncated)".into());
        }
        let crc32c = u32::from_le_bytes(crc.try_into().map_err(|_| "bad footer".to_string())?);
        let payload_len = u64::from_le_bytes(len.try_into().map_err(|_| "bad footer".to_string())?);
        Ok(Self {
            crc32c,
            payload_len,
        })
    }
}

/// Appends the footer of `payload` to it.
pub fn frame(mut payload: Vec<u8>) -> Vec<u8> {
    let footer = Footer {
        crc32c: crc32c::crc32c(&payload),
        payload_len: payload.len() as u64,
    };
    payload.extend_from_slice(&footer.encode());
    payload
}

/// Checks a whole stored object against its footer and `file`, returning
/// the payload's range within it.
///
/// # Errors
/// [`StateError::Corrupt`] naming `file.path` and the first mismatch found.
pub fn verify(file: &FileHandle, stored: &[u8]) -> Result<std::ops::Range<usize>> {
    let corrupt = |reason: String| StateError::corrupt(file.path.clone(), reason);
    check_stored_len(file, stored.len() as u64)?;
    let footer = Footer::decode(stored).map_err(corrupt)?;
    let payload_end = stored.len() - FOOTER_LEN;
    let payload = stored.get(..payload_end).unwrap_or_default();
    check(file, &footer, payload_end as u64, crc32c::crc32c(payload))?;
    Ok(0..payload_end)
}

/// Checks that an object of `stored_len` bytes can hold `file`'s payload
/// and a footer.
///
/// # Errors
/// [`StateError::Corrupt`] naming the file when it is too short.
pub fn check_stored_len(file: &FileHandle, stored_len: u64) -> Result<()> {
    let corrupt = |reason: String| StateError::corrupt(file.path.clone(), reason);
    let expected_len = file
        .size
        .checked_add(FOOTER_LEN as u64)
        .ok_or_else(|| corrupt(format!("handle size {} is too large", file.size)))?;
    if stored_len < expected_len {
        return Err(corrupt(format!(
            "truncated: {stored_len} bytes stored, handle says {} payload bytes plus a \
             {FOOTER_LEN}-byte footer",
            file.size
        )));
    }
    Ok(())
}

/// Checks a stored object of `file` whose `footer` was read, whose payload
/// (everything before the footer) is `payload_len` bytes with CRC-32C
/// `payload_crc`: the footer, the handle and the bytes must agree.
///
/// # Errors
/// [`StateError::Corrupt`] naming the file and the mismatch.
pub fn check(file: &FileHandle, footer: &Footer, payload_len: u64, payload_crc: u32) -> Result<()> {
    let corrupt = |reason: String| StateError::corrupt(file.path.clone(), reason);
    if footer.payload_len != payload_len {
        return Err(corrupt(format!(
            "footer says {} payload bytes, object holds {payload_len}",
            footer.payload_len
        )));
    }
    if footer.payload_len != file.size {
        return Err(corrupt(format!(
            "size mismatch: handle says {} bytes, file holds {}",
            file.size, footer.payload_len
        )));
    }
    if payload_crc != footer.crc32c {
        return Err(corrupt(format!(
            "checksum mismatch: payload crc32c {payload_crc:08x}, footer says {:08x}",
            footer.crc32c
        )));
    }
    if payload_crc != file.crc32c {
        return Err(corrupt(format!(
            "checksum mismatch: payload crc32c {payload_crc:08x}, handle says {:08x}",
            file.crc32c
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use state_api::StateScope;

    use super::*;

    fn handle_of(payload: &[u8]) -> FileHandle {
        FileHandle {
            path: "chk-1/f".into(),
            scope: StateScope::Exclusive,
            size: payload.len() as u64,
            crc32c: crc32c::crc32c(payload),
        }
    }

    fn reason(err: StateError) -> String {
        match err {
            StateError::Corrupt { path, reason } => {
                assert_eq!(path, "chk-1/f");
                reason
            }
            other => panic!("expected Corrupt, got {other:?}"),
        }
    }

    #[test]
    fn round_trip() {
        for payload in [&b""[..], b"x", b"hello world"] {
            let stored = frame(payload.to_vec());
            assert_eq!(stored.len(), payload.len() + FOOTER_LEN);
            let range = verify(&handle_of(payload), &stored).unwrap();
            assert_eq!(&stored[range], payload);
        }
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let payload = b"some checkpoint bytes";
        let stored = frame(payload.to_vec());
        for i in 0..stored.len() {
            let mut bad = stored.clone();
            bad[i] ^= 0xff;
            assert!(verify(&handle_of(payload), &bad).is_err(), "byte {i}");
        }
    }

    #[test]
    fn every_truncation_is_detected() {
        let payload = b"some checkpoint bytes";
        let stored = frame(payload.to_vec());
        for keep in 0..stored.len() {
            let r = reason(verify(&handle_of(payload), &stored[..keep]).unwrap_err());
            assert!(r.contains("truncated"), "{keep}: {r}");
        }
    }

    #[test]
    fn handle_mismatches_are_named() {
        let payload = b"abc";
        let stored = frame(payload.to_vec());
        let mut wrong_crc = handle_of(payload);
        wrong_crc.crc32c ^= 1;
        assert!(reason(verify(&wrong_crc, &stored).unwrap_err()).contains("handle says"));
        let mut wrong_size = handle_of(payload);
        wrong_size.size = 2;
        assert!(reason(verify(&wrong_size, &stored).unwrap_err()).contains("size mismatch"));
        wrong_size.size = u64::MAX;
        assert!(reason(verify(&wrong_size, &stored).unwrap_err()).contains("too large"));
    }

    #[test]
    fn footer_decode_rejects_garbage() {
        assert!(Footer::decode(b"short").is_err());
        assert!(
            Footer::decode(&[0u8; FOOTER_LEN])
                .unwrap_err()
                .contains("magic")
        );
    }
}

//! The encoding of stored structures that must stay readable as they grow:
//! checkpoint `_metadata`, the state handles in it, the metadata block of
//! key-group files and the trailer and state records of change-log
//! segments.
//!
//! Version 2 of every format encodes them as CBOR (RFC 8949) maps with
//! fields by name, so a field added later is simply absent from older
//! files. Version 1 used postcard, which stores fields by position and
//! cannot gain one; its decoders are frozen in [`super::v1`].
//!
//! # Format evolution policy
//!
//! 1. Every stored file starts with a magic and a format version. A reader
//!    refuses a version newer than its own with
//!    [`StateError::UnsupportedVersion`](crate::StateError::UnsupportedVersion),
//!    naming the file, the format and both versions.
//! 2. Any change to a stored structure bumps its format's version, so older
//!    code refuses newer files instead of misreading them. As a second
//!    guard, stored structures deny unknown fields.
//! 3. A field is added with a default (`#[serde(default)]` or an `Option`),
//!    so the same Rust type decodes every version since 2; enum variants
//!    may be added. Fields are never renamed, retyped or removed: a change
//!    that needs it gets a frozen copy of the old structures, as version 1
//!    has.
//! 4. Every version has checked-in fixtures (`crates/state-testkit/fixtures/
//!    v<N>`) that the tests restore to the exact state; old versions'
//!    fixtures are never regenerated.
//! 5. User data (keys, values, the list encoding) is the serializers'
//!    business, versioned by [`crate::codec::CODEC_VERSION`].
//!
//! ```
//! use state_api::format::evolving;
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct Old { a: u32 }
//! #[derive(serde::Serialize, serde::Deserialize, PartialEq, Debug)]
//! struct New { a: u32, #[serde(default)] b: Option<String> }
//!
//! let old = evolving::encode(&Old { a: 7 });
//! assert_eq!(evolving::decode::<New>(&old).unwrap(), New { a: 7, b: None });
//! ```

use serde::Serialize;
use serde::de::DeserializeOwned;

/// Encodes `value` (a stored structure) as CBOR.
///
/// # Panics
/// Only if `value`'s `Serialize` implementation fails; the stored
/// structures are plain data (integers, strings, sequences, maps, enums),
/// which always encode.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Vec<u8> {
    let mut out = Vec::new();
    encode_into(value, &mut out);
    out
}

/// Appends the CBOR encoding of `value` to `out` (see [`encode`]).
///
/// # Panics
/// As [`encode`].
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) {
    ciborium::ser::into_writer(value, out)
        .expect("stored structures are plain data, which CBOR always encodes");
}

/// Decodes a stored structure that must fill `bytes` exactly.
///
/// # Errors
/// A description of what is wrong: malformed CBOR, a missing or unknown
/// field, a value out of range, nesting deeper than 128 levels or bytes
/// after the structure.
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, String> {
    let mut rest = bytes;
    let value =
        ciborium::de::from_reader_with_recursion_limit(&mut rest, 128).map_err(|e| describe(&e))?;
    if !rest.is_empty() {
        return Err(format!(
            "{} bytes after the end of the structure",
            rest.len()
        ));
    }
    Ok(value)
}

fn describe<E: std::fmt::Debug>(error: &ciborium::de::Error<E>) -> String {
    match error {
        ciborium::de::Error::Io(e) => format!("truncated ({e:?})"),
        ciborium::de::Error::Syntax(offset) => format!("malformed CBOR at byte {offset}"),
        ciborium::de::Error::Semantic(offset, message) => match offset {
            Some(offset) => format!("{message} (at byte {offset})"),
            None => message.clone(),
        },
        ciborium::de::Error::RecursionLimitExceeded => "nested too deeply".to_string(),
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    #[serde(deny_unknown_fields)]
    struct V2 {
        name: String,
        size: u64,
    }

    #[derive(Serialize, Deserialize, PartialEq, Debug)]
    #[serde(deny_unknown_fields)]
    struct V3 {
        name: String,
        size: u64,
        #[serde(default)]
        added: Vec<u32>,
    }

    #[test]
    fn a_newer_structure_reads_an_older_one() {
        let old = encode(&V2 {
            name: "x".into(),
            size: 9,
        });
        let new: V3 = decode(&old).unwrap();
        assert_eq!(
            new,
            V3 {
                name: "x".into(),
                size: 9,
                added: Vec::new()
            }
        );
    }

    #[test]
    fn an_older_structure_refuses_unknown_fields() {
        let new = encode(&V3 {
            name: "x".into(),
            size: 9,
            added: vec![1],
        });
        let error = decode::<V2>(&new).unwrap_err();
        assert!(error.contains("added"), "{error}");
    }

    #[test]
    fn damage_is_an_error_not_a_panic() {
        let bytes = encode(&V2 {
            name: "name".into(),
            size: u64::MAX,
        });
        for cut in 0..bytes.len() {
            assert!(decode::<V2>(&bytes[..cut]).is_err(), "cut at {cut}");
        }
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(decode::<V2>(&longer).unwrap_err().contains("after the end"));
        // An array header claiming 2^63 elements.
        let huge = [0x9b, 0x80, 0, 0, 0, 0, 0, 0, 0];
        assert!(decode::<Vec<u64>>(&huge).is_err());
        // Deep nesting stops at the limit.
        let deep = vec![0x81; 10_000];
        assert!(decode::<ciborium::Value>(&deep).is_err());
    }
}

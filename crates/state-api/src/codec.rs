//! The one binary encoding of keys, namespaces, values and map keys.
//!
//! Everything a user hands to the typed state API is a serde type, encoded
//! with the `postcard` crate, 1.x. Postcard was chosen because
//! its wire format is specified and frozen for the whole 1.x line (so bytes
//! written today decode in every later 1.x release), it is compact (LEB128
//! varints, no field names, no padding), deterministic (the same value always
//! gives the same bytes, which the RocksDB backend relies on to find keys), and
//! it is allocation-free when encoding into a caller's buffer.
//!
//! Files record [`CODEC_VERSION`] in their headers, so a future encoding change
//! can be detected instead of misread.
//!
//! This module also defines the length-prefixed *list encoding* that every
//! backend uses for list state: each element is `varint(len) ++ bytes`, and a
//! list is the concatenation of its elements. Appending is concatenation, which
//! is what lets RocksDB append with a plain merge operator, and elements may
//! hold any bytes (no delimiter to escape).

use serde::Serialize;
use serde::de::DeserializeOwned;
use smallvec::SmallVec;

use crate::error::{Result, StateError};
use crate::stack_encoder::StackEncoder;

/// Version of the value encoding (postcard 1.x wire format), written into file
/// headers.
pub const CODEC_VERSION: u8 = 1;

/// A small inline byte buffer: encodings up to 64 bytes never touch the heap.
pub type InlineBytes = SmallVec<[u8; 64]>;

/// Encodes `value`, appending to `out`.
///
/// # Errors
/// [`StateError::Codec`] when serde refuses the value.
pub fn encode_into<T: Serialize + ?Sized>(value: &T, out: &mut Vec<u8>) -> Result<()> {
    let buf = std::mem::take(out);
    *out = postcard::to_extend(value, buf).map_err(|e| StateError::codec("encode", e))?;
    Ok(())
}

/// Encodes `value` into a fresh `Vec`.
///
/// # Errors
/// [`StateError::Codec`] when serde refuses the value.
pub fn encode<T: Serialize + ?Sized>(value: &T) -> Result<Vec<u8>> {
    postcard::to_stdvec(value).map_err(|e| StateError::codec("encode", e))
}

/// Encodes `value` into an inline buffer (no heap allocation up to 64 bytes).
///
/// # Errors
/// [`StateError::Codec`] when serde refuses the value.
#[inline]
pub fn encode_inline<T: Serialize + ?Sized>(value: &T) -> Result<InlineBytes> {
    postcard::to_extend(value, InlineBytes::new()).map_err(|e| StateError::codec("encode", e))
}

/// Encodes `value` into a buffer on the stack and hands the bytes to `f`;
/// encodings longer than 64 bytes fall back to a heap buffer. This is the
/// hot-path encoder of the typed handles: nothing is allocated or moved for
/// small keys and values.
///
/// ```
/// let len = state_api::codec::with_encoded(&300u64, |bytes| Ok(bytes.len())).unwrap();
/// assert_eq!(len, 2);
/// ```
///
/// # Errors
/// [`StateError::Codec`] when serde refuses the value; `f`'s errors.
#[inline]
pub fn with_encoded<T: Serialize + ?Sized, R>(
    value: &T,
    f: impl FnOnce(&[u8]) -> Result<R>,
) -> Result<R> {
    let mut encoder = StackEncoder::new();
    match encoder.encode(value) {
        Ok(bytes) => f(bytes),
        Err(postcard::Error::SerializeBufferFull) => f(&encode(value)?),
        Err(e) => Err(StateError::codec("encode", e)),
    }
}

/// Decodes a whole `T` from `bytes`; trailing bytes are an error, so a value
/// read with the wrong type is caught rather than half-read.
///
/// ```
/// let bytes = state_api::codec::encode(&(7u64, "seven")).unwrap();
/// let back: (u64, String) = state_api::codec::decode(&bytes).unwrap();
/// assert_eq!(back, (7, "seven".to_string()));
/// assert!(state_api::codec::decode::<u8>(&bytes).is_err());
/// ```
///
/// # Errors
/// [`StateError::Codec`] for malformed input or trailing bytes.
#[inline]
pub fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    let (value, rest) =
        postcard::take_from_bytes(bytes).map_err(|e| StateError::codec("decode", e))?;
    if !rest.is_empty() {
        return Err(StateError::codec(
            format!("decode: {} trailing bytes", rest.len()),
            postcard::Error::DeserializeBadEncoding,
        ));
    }
    Ok(value)
}

/// Appends `value` as an unsigned LEB128 varint.
#[inline]
pub fn write_varint(out: &mut impl Extend<u8>, mut value: u64) {
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            out.extend([byte]);
            return;
        }
        out.extend([byte | 0x80]);
    }
}

/// Reads an unsigned LEB128 varint from the front of `input`, returning it and
/// the rest; `None` when `input` ends inside the varint or it overflows u64.
#[inline]
pub fn read_varint(input: &[u8]) -> Option<(u64, &[u8])> {
    let mut value = 0u64;
    for (i, byte) in input.iter().enumerate().take(10) {
        let bits = u64::from(byte & 0x7f);
        if i == 9 && bits > 1 {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, input.get(i + 1..)?));
        }
    }
    None
}

/// Reads a `varint(len) ++ bytes` field from the front of `input`.
#[inline]
pub fn read_len_prefixed(input: &[u8]) -> Option<(&[u8], &[u8])> {
    let (len, rest) = read_varint(input)?;
    let len = usize::try_from(len).ok()?;
    if rest.len() < len {
        return None;
    }
    Some(rest.split_at(len))
}

/// Appends `bytes` as one `varint(len) ++ bytes` field (also: one list element).
#[inline]
pub fn write_len_prefixed(out: &mut impl Extend<u8>, bytes: &[u8]) {
    write_varint(out, bytes.len() as u64);
    out.extend(bytes.iter().copied());
}

/// Checks that `bytes` is a well-formed list encoding, so backends can keep
/// malformed lists out of state (and snapshots).
///
/// # Errors
/// [`StateError::Codec`] at the first malformed element.
pub fn check_list(bytes: &[u8]) -> Result<()> {
    ListElements::new(bytes).try_for_each(|element| element.map(|_| ()))
}

/// Iterator over the elements of an encoded list (see the module docs).
///
/// Yields `Err` once, at the first malformed element, then stops.
///
/// ```
/// use state_api::codec::{write_len_prefixed, ListElements};
/// let mut list = Vec::new();
/// write_len_prefixed(&mut list, b"a,b");
/// write_len_prefixed(&mut list, b"");
/// let elems: Vec<&[u8]> = ListElements::new(&list).collect::<Result<_, _>>().unwrap();
/// assert_eq!(elems, vec![&b"a,b"[..], &b""[..]]);
/// ```
#[derive(Clone, Debug)]
pub struct ListElements<'a> {
    rest: &'a [u8],
    failed: bool,
}

impl<'a> ListElements<'a> {
    /// Iterates over `encoded`.
    pub fn new(encoded: &'a [u8]) -> Self {
        Self {
            rest: encoded,
            failed: false,
        }
    }
}

impl<'a> Iterator for ListElements<'a> {
    type Item = Result<&'a [u8]>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.rest.is_empty() || self.failed {
            return None;
        }
        match read_len_prefixed(self.rest) {
            Some((element, rest)) => {
                self.rest = rest;
                Some(Ok(element))
            }
            None => {
                self.failed = true;
                Some(Err(StateError::codec(
                    "list element",
                    postcard::Error::DeserializeUnexpectedEnd,
                )))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The stack encoder writes postcard's bytes exactly, below, at and
    /// above its 64-byte buffer.
    #[test]
    fn with_encoded_equals_postcard() {
        fn check<T: Serialize + ?Sized + std::fmt::Debug>(value: &T) {
            let stack = with_encoded(value, |bytes| Ok(bytes.to_vec())).unwrap();
            assert_eq!(stack, postcard::to_stdvec(value).unwrap(), "{value:?}");
        }
        for v in [0u64, 1, 127, 128, 300, 1 << 35, u64::MAX] {
            check(&v);
            check(&(v as i64).wrapping_neg());
            check(&(v, "key", Some(v as u8)));
        }
        for len in [0, 1, 7, 8, 15, 16, 31, 32, 61, 62, 63, 64, 65, 200] {
            check(&"x".repeat(len));
            check(&vec![0xABu8; len]);
            check(&(u64::MAX, "y".repeat(len)));
            check(&RawBytes(vec![0xCD; len]));
        }
        // Every integer width the encoder writes directly, at the edges of
        // their varint lengths and signs.
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            -65,
            8191,
            -8192,
            i64::MAX,
            i64::MIN,
        ] {
            check(&v);
            check(&(v as i32));
            check(&(v as i16));
            check(&(v as u16));
            check(&(v as u32));
            check(&(v as i8));
            check(&(v as u8));
            check(&(v as i128));
            check(&(v as u128));
        }
        // What goes through postcard: other scalars, enums, options, maps,
        // and a type that serializes differently for human-readable formats.
        check(&true);
        check(&'é');
        check(&1.5f64);
        check(&-2.5f32);
        check(&());
        check(&None::<u64>);
        check(&Some("k"));
        check(&std::net::Ipv4Addr::new(10, 0, 0, 1));
        check(&std::time::Duration::from_millis(1_500));
        check(&Ok::<u8, String>(7));
        check(&Err::<u8, String>("e".into()));
        check(&std::collections::BTreeMap::from([(1u32, "a"), (2, "b")]));
        check(&((1u64, -2i32), [3u16; 3], vec![Some(4i64), None]));
        check(&Shapes::Unit);
        check(&Shapes::Tuple(7, -300));
        check(&Shapes::Struct { x: 70_000 });
        check(&UnitStruct);
        check(&TupleStruct(513, "t"));
    }

    /// Every serde shape postcard writes for user types.
    #[derive(Debug, Serialize)]
    enum Shapes {
        Unit,
        Tuple(u8, i64),
        Struct { x: u32 },
    }

    #[derive(Debug, Serialize)]
    struct UnitStruct;

    #[derive(Debug, Serialize)]
    struct TupleStruct(u16, &'static str);

    /// Serializes through `serialize_bytes` (a `Vec<u8>` is a sequence).
    #[derive(Debug)]
    struct RawBytes(Vec<u8>);

    impl Serialize for RawBytes {
        fn serialize<S: serde::Serializer>(
            &self,
            serializer: S,
        ) -> std::result::Result<S::Ok, S::Error> {
            serializer.serialize_bytes(&self.0)
        }
    }

    #[test]
    fn varint_round_trip_and_bounds() {
        for v in [0u64, 1, 127, 128, 300, u32::MAX as u64, u64::MAX] {
            let mut buf = Vec::new();
            write_varint(&mut buf, v);
            assert_eq!(read_varint(&buf), Some((v, &[][..])));
            assert_eq!(read_varint(&buf[..buf.len() - 1]), None);
        }
        assert_eq!(read_varint(&[0xff; 11]), None);
        // The stored formats pin these bytes.
        let mut buf = Vec::new();
        write_varint(&mut buf, 300);
        assert_eq!(buf, [0xac, 0x02]);
        buf.clear();
        write_varint(&mut buf, u64::MAX);
        assert_eq!(
            buf,
            [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01]
        );
    }

    #[test]
    fn postcard_encoding_is_pinned() {
        // The key encoding decides key groups, so it must never change.
        assert_eq!(encode(&42u64).unwrap(), vec![42]);
        assert_eq!(encode(&300u64).unwrap(), vec![0xac, 0x02]);
        assert_eq!(encode("ab").unwrap(), vec![2, b'a', b'b']);
        assert_eq!(encode(&()).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn truncated_list_is_an_error() {
        let mut list = Vec::new();
        write_len_prefixed(&mut list, b"hello");
        let cut = &list[..3];
        let items: Vec<_> = ListElements::new(cut).collect();
        assert_eq!(items.len(), 1);
        assert!(items[0].is_err());
    }
}

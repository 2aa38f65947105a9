//! The encoder behind [`with_encoded`](crate::codec::with_encoded): postcard's
//! bytes, written into a stack buffer, with the top-level integers and strings
//! of keys written directly.
//!
//! Every state access of the typed API encodes its key, mostly a single
//! integer or string. Postcard writes an integer as a varint into a temporary
//! array, then copies that into its output through the flavor; writing the
//! varint straight into the buffer takes about half the instructions. Every
//! other value (and everything nested in a struct, tuple, option or
//! sequence) goes through postcard's own serializer over the same buffer, so
//! the bytes are postcard's in every case (pinned by the codec's tests).

use serde::Serialize;
use serde::ser;

use crate::short_bytes::copy_bytes;

/// Encodings up to this many bytes stay on the stack.
pub(crate) const STACK_BYTES: usize = 64;

/// A postcard output flavor over a stack array; copies the few bytes of each
/// field without a `memcpy` call.
pub(crate) struct StackBuffer {
    bytes: [u8; STACK_BYTES],
    len: usize,
}

impl StackBuffer {
    /// The bytes written so far.
    pub(crate) fn as_slice(&self) -> &[u8] {
        self.bytes.get(..self.len).unwrap_or_default()
    }

    /// Appends `value` as a LEB128 varint (postcard's integer encoding).
    #[inline]
    fn push_varint(&mut self, mut value: u64) -> postcard::Result<()> {
        let mut at = self.len;
        loop {
            let slot = self
                .bytes
                .get_mut(at)
                .ok_or(postcard::Error::SerializeBufferFull)?;
            at += 1;
            if value < 0x80 {
                *slot = value as u8;
                self.len = at;
                return Ok(());
            }
            *slot = (value as u8) | 0x80;
            value >>= 7;
        }
    }
}

impl postcard::ser_flavors::Flavor for StackBuffer {
    type Output = ();

    #[inline]
    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        let end = self.len + data.len();
        let slot = self
            .bytes
            .get_mut(self.len..end)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        copy_bytes(slot, data);
        self.len = end;
        Ok(())
    }

    #[inline]
    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        let slot = self
            .bytes
            .get_mut(self.len)
            .ok_or(postcard::Error::SerializeBufferFull)?;
        *slot = data;
        self.len += 1;
        Ok(())
    }

    #[inline]
    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

/// Postcard's serializer over a [`StackBuffer`], with the direct paths.
pub(crate) struct StackEncoder {
    inner: postcard::Serializer<StackBuffer>,
}

impl StackEncoder {
    /// An empty encoder.
    #[inline]
    pub(crate) fn new() -> Self {
        Self {
            inner: postcard::Serializer {
                output: StackBuffer {
                    bytes: [0; STACK_BYTES],
                    len: 0,
                },
            },
        }
    }

    /// Encodes `value`; [`postcard::Error::SerializeBufferFull`] when it
    /// does not fit the buffer.
    #[inline]
    pub(crate) fn encode<T: Serialize + ?Sized>(&mut self, value: &T) -> postcard::Result<&[u8]> {
        value.serialize(&mut *self)?;
        Ok(self.inner.output.as_slice())
    }

    /// Appends `bytes` behind their varint length (postcard's strings and
    /// byte arrays).
    #[inline]
    fn push_len_prefixed(&mut self, bytes: &[u8]) -> postcard::Result<()> {
        use postcard::ser_flavors::Flavor as _;
        self.inner.output.push_varint(bytes.len() as u64)?;
        self.inner.output.try_extend(bytes)
    }
}

/// Postcard's serializer, through which everything without a direct path
/// goes.
type Postcard<'a> = &'a mut postcard::Serializer<StackBuffer>;

/// Serializer methods that hand their arguments to postcard's serializer.
macro_rules! delegate {
    ($(fn $method:ident($($arg:ident: $ty:ty),*) -> $out:ty;)*) => {
        $(
            fn $method(self, $($arg: $ty),*) -> postcard::Result<$out> {
                self.inner.$method($($arg),*)
            }
        )*
    };
}

impl<'a> ser::Serializer for &'a mut StackEncoder {
    type Ok = ();
    type Error = postcard::Error;
    type SerializeSeq = Postcard<'a>;
    type SerializeTuple = Postcard<'a>;
    type SerializeTupleStruct = Postcard<'a>;
    type SerializeTupleVariant = Postcard<'a>;
    type SerializeMap = Postcard<'a>;
    type SerializeStruct = Postcard<'a>;
    type SerializeStructVariant = Postcard<'a>;

    // Direct paths: postcard writes unsigned integers as varints and signed
    // ones zigzagged, then as varints; strings and bytes behind their length.
    #[inline]
    fn serialize_u16(self, v: u16) -> postcard::Result<()> {
        self.inner.output.push_varint(u64::from(v))
    }
    #[inline]
    fn serialize_u32(self, v: u32) -> postcard::Result<()> {
        self.inner.output.push_varint(u64::from(v))
    }
    #[inline]
    fn serialize_u64(self, v: u64) -> postcard::Result<()> {
        self.inner.output.push_varint(v)
    }
    #[inline]
    fn serialize_i16(self, v: i16) -> postcard::Result<()> {
        self.inner
            .output
            .push_varint(u64::from(((v << 1) ^ (v >> 15)) as u16))
    }
    #[inline]
    fn serialize_i32(self, v: i32) -> postcard::Result<()> {
        self.inner
            .output
            .push_varint(u64::from(((v << 1) ^ (v >> 31)) as u32))
    }
    #[inline]
    fn serialize_i64(self, v: i64) -> postcard::Result<()> {
        self.inner.output.push_varint(((v << 1) ^ (v >> 63)) as u64)
    }
    #[inline]
    fn serialize_str(self, v: &str) -> postcard::Result<()> {
        self.push_len_prefixed(v.as_bytes())
    }
    #[inline]
    fn serialize_bytes(self, v: &[u8]) -> postcard::Result<()> {
        self.push_len_prefixed(v)
    }

    // Everything else is postcard's.
    fn is_human_readable(&self) -> bool {
        // Postcard's answer (types such as addresses serialize compactly).
        false
    }
    delegate! {
        fn serialize_bool(v: bool) -> ();
        fn serialize_i8(v: i8) -> ();
        fn serialize_i128(v: i128) -> ();
        fn serialize_u8(v: u8) -> ();
        fn serialize_u128(v: u128) -> ();
        fn serialize_f32(v: f32) -> ();
        fn serialize_f64(v: f64) -> ();
        fn serialize_char(v: char) -> ();
        fn serialize_none() -> ();
        fn serialize_unit() -> ();
        fn serialize_unit_struct(name: &'static str) -> ();
        fn serialize_unit_variant(name: &'static str, index: u32, variant: &'static str) -> ();
        fn serialize_seq(len: Option<usize>) -> Postcard<'a>;
        fn serialize_tuple(len: usize) -> Postcard<'a>;
        fn serialize_tuple_struct(name: &'static str, len: usize) -> Postcard<'a>;
        fn serialize_tuple_variant(
            name: &'static str,
            index: u32,
            variant: &'static str,
            len: usize
        ) -> Postcard<'a>;
        fn serialize_map(len: Option<usize>) -> Postcard<'a>;
        fn serialize_struct(name: &'static str, len: usize) -> Postcard<'a>;
        fn serialize_struct_variant(
            name: &'static str,
            index: u32,
            variant: &'static str,
            len: usize
        ) -> Postcard<'a>;
    }
    fn serialize_some<T: ?Sized + Serialize>(self, value: &T) -> postcard::Result<()> {
        self.inner.serialize_some(value)
    }
    fn serialize_newtype_struct<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        value: &T,
    ) -> postcard::Result<()> {
        self.inner.serialize_newtype_struct(name, value)
    }
    fn serialize_newtype_variant<T: ?Sized + Serialize>(
        self,
        name: &'static str,
        index: u32,
        variant: &'static str,
        value: &T,
    ) -> postcard::Result<()> {
        self.inner
            .serialize_newtype_variant(name, index, variant, value)
    }
    fn collect_str<T: ?Sized + std::fmt::Display>(self, value: &T) -> postcard::Result<()> {
        self.inner.collect_str(value)
    }
}

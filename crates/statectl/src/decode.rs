//! Turning encoded keys, namespaces and values into JSON.
//!
//! State stores bytes in the one binary encoding (postcard). The type names
//! a snapshot records for namespaces and values are Rust's
//! `std::any::type_name`; for the primitive types and strings the bytes are
//! decoded, anything else is shown as hex. Keys carry no type name in
//! snapshots: `--key-type` says how to read them.

use serde_json::Value;
use state_api::codec::{self, ListElements};
use state_api::ttl::split_stamp;

/// How to show a key, namespace or value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Decoding {
    /// Hex digits of the encoded bytes.
    Hex,
    /// An unsigned integer.
    U64,
    /// A byte (postcard writes it raw, not as a varint).
    U8,
    /// A signed byte.
    I8,
    /// A signed integer.
    I64,
    /// A 32-bit unsigned integer.
    U32,
    /// A 32-bit signed integer.
    I32,
    /// A string.
    String,
    /// A boolean.
    Bool,
    /// A 64-bit float.
    F64,
    /// A 32-bit float.
    F32,
    /// The empty namespace of non-windowed state.
    Void,
}

impl Decoding {
    /// The decoding of a type name recorded in a snapshot; hex for types
    /// this tool does not know.
    pub fn of_type_name(type_name: &str) -> Self {
        match type_name {
            "u64" | "u16" | "usize" => Decoding::U64,
            "i64" | "i16" | "isize" => Decoding::I64,
            "u8" => Decoding::U8,
            "i8" => Decoding::I8,
            "u32" => Decoding::U32,
            "i32" => Decoding::I32,
            "alloc::string::String" | "&str" | "str" => Decoding::String,
            "bool" => Decoding::Bool,
            "f64" => Decoding::F64,
            "f32" => Decoding::F32,
            name if name.ends_with("VoidNamespace") || name == "()" => Decoding::Void,
            _ => Decoding::Hex,
        }
    }

    /// `bytes` as JSON; hex when they do not decode as this type.
    pub fn to_json(self, bytes: &[u8]) -> Value {
        let decoded = match self {
            Decoding::Hex => None,
            // Narrower integers share the varint encoding of the wider ones.
            Decoding::U64 | Decoding::U32 => codec::decode::<u64>(bytes).ok().map(Value::from),
            Decoding::I64 | Decoding::I32 => codec::decode::<i64>(bytes).ok().map(Value::from),
            Decoding::U8 => codec::decode::<u8>(bytes).ok().map(Value::from),
            Decoding::I8 => codec::decode::<i8>(bytes).ok().map(Value::from),
            Decoding::String => codec::decode::<String>(bytes).ok().map(Value::from),
            Decoding::Bool => codec::decode::<bool>(bytes).ok().map(Value::from),
            Decoding::F64 => codec::decode::<f64>(bytes).ok().map(Value::from),
            Decoding::F32 => codec::decode::<f32>(bytes).ok().map(Value::from),
            Decoding::Void => bytes.is_empty().then_some(Value::Null),
        };
        decoded.unwrap_or_else(|| Value::String(hex(bytes)))
    }

    /// The value and last-access stamp of a stored value of a state with
    /// a time to live (hex and no stamp when it has none).
    pub fn stamped_to_json(self, bytes: &[u8]) -> (Value, Option<i64>) {
        match split_stamp(bytes) {
            Some((stamp, value)) => (self.to_json(value), Some(stamp)),
            None => (Value::String(hex(bytes)), None),
        }
    }

    /// The elements and their last-access stamps of a list state with a
    /// time to live.
    pub fn stamped_list_to_json(self, bytes: &[u8]) -> (Value, Value) {
        let mut values = Vec::new();
        let mut stamps = Vec::new();
        for element in ListElements::new(bytes) {
            let Ok(element) = element else {
                return (Value::String(hex(bytes)), Value::Null);
            };
            let (value, stamp) = self.stamped_to_json(element);
            values.push(value);
            stamps.push(stamp.map_or(Value::Null, Value::from));
        }
        (Value::Array(values), Value::Array(stamps))
    }

    /// The elements of an encoded list as a JSON array (hex of the whole
    /// value when it is not a valid list).
    pub fn list_to_json(self, bytes: &[u8]) -> Value {
        let elements: Result<Vec<Value>, _> = ListElements::new(bytes)
            .map(|element| element.map(|e| self.to_json(e)))
            .collect();
        elements.map_or_else(|_| Value::String(hex(bytes)), Value::Array)
    }
}

/// Lower-case hex digits of `bytes`.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(out, "{b:02x}");
    }
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn primitive_types_decode_and_others_are_hex() {
        let n = codec::encode(&300u64).unwrap();
        assert_eq!(Decoding::of_type_name("u64").to_json(&n), Value::from(300));
        let s = codec::encode(&"hi".to_string()).unwrap();
        assert_eq!(
            Decoding::of_type_name("alloc::string::String").to_json(&s),
            Value::from("hi")
        );
        assert_eq!(
            Decoding::of_type_name("my::Type").to_json(&[1, 0xab]),
            Value::from("01ab")
        );
        assert_eq!(
            Decoding::of_type_name("state_api::descriptor::VoidNamespace").to_json(&[]),
            Value::Null
        );
        // Bytes are raw in postcard, not varints.
        let byte = codec::encode(&200u8).unwrap();
        assert_eq!(
            Decoding::of_type_name("u8").to_json(&byte),
            Value::from(200)
        );
        let signed = codec::encode(&-100i8).unwrap();
        assert_eq!(
            Decoding::of_type_name("i8").to_json(&signed),
            Value::from(-100)
        );
        // Bytes that do not decode as the type are shown as hex.
        assert_eq!(Decoding::U64.to_json(&[0xff]), Value::from("ff"));
    }
}

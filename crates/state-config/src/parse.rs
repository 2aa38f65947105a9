//! From documents to flat entries to typed values: the format-independent
//! raw value, flattening of nested maps into dotted keys, Flink's duration
//! and memory-size syntax, and the conversion of a raw value to an option's
//! type.

use std::fmt;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};

use crate::options::OptionType;

/// A value as a TOML, YAML or JSON document (or an environment variable)
/// holds it, before the option table gives it a type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Raw {
    /// YAML `~` / JSON `null`: the key is treated as unset.
    Null,
    Bool(bool),
    Int(i128),
    Float(f64),
    Str(String),
    Seq,
    Map(Vec<(String, Raw)>),
}

impl Raw {
    /// The value in words, for error messages.
    pub(crate) fn describe(&self) -> String {
        match self {
            Raw::Null => "null".into(),
            Raw::Bool(b) => format!("the boolean {b}"),
            Raw::Int(i) => format!("the number {i}"),
            Raw::Float(f) => format!("the number {f}"),
            Raw::Str(s) => format!("'{s}'"),
            Raw::Seq => "a list".into(),
            Raw::Map(_) => "a map".into(),
        }
    }
}

/// The marker key under which the `toml` crate hands out datetimes.
const TOML_DATETIME: &str = "$__toml_private_datetime";

impl<'de> serde::Deserialize<'de> for Raw {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer.deserialize_any(RawVisitor)
    }
}

struct RawVisitor;

impl<'de> Visitor<'de> for RawVisitor {
    type Value = Raw;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a configuration value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<Raw, E> {
        Ok(Raw::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Raw, E> {
        Ok(Raw::Int(v.into()))
    }
    fn visit_i128<E>(self, v: i128) -> Result<Raw, E> {
        Ok(Raw::Int(v))
    }
    fn visit_u128<E: de::Error>(self, v: u128) -> Result<Raw, E> {
        i128::try_from(v)
            .map(Raw::Int)
            .map_err(|_| E::custom(format!("the number {v} is too large")))
    }
    fn visit_f64<E>(self, v: f64) -> Result<Raw, E> {
        Ok(Raw::Float(v))
    }
    fn visit_str<E>(self, v: &str) -> Result<Raw, E> {
        Ok(Raw::Str(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Raw, E> {
        Ok(Raw::Str(v))
    }
    fn visit_none<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_unit<E>(self) -> Result<Raw, E> {
        Ok(Raw::Null)
    }
    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Raw, D::Error> {
        d.deserialize_any(RawVisitor)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Raw, A::Error> {
        while seq.next_element::<de::IgnoredAny>()?.is_some() {}
        Ok(Raw::Seq)
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Raw, A::Error> {
        let mut entries = Vec::new();
        while let Some(key) = map.next_key::<MapKey>()? {
            let value: Raw = map.next_value()?;
            entries.push((key.0, value));
        }
        // A TOML datetime: the string form is good enough for an error.
        if let [(key, Raw::Str(s))] = entries.as_slice()
            && key == TOML_DATETIME
        {
            return Ok(Raw::Str(s.clone()));
        }
        Ok(Raw::Map(entries))
    }
}

/// A map key: a string, or a scalar that YAML lets stand as a key.
struct MapKey(String);

impl<'de> serde::Deserialize<'de> for MapKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct KeyVisitor;
        impl Visitor<'_> for KeyVisitor {
            type Value = MapKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string key")
            }
            fn visit_str<E>(self, v: &str) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_string<E>(self, v: String) -> Result<MapKey, E> {
                Ok(MapKey(v))
            }
            fn visit_bool<E>(self, v: bool) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_i64<E>(self, v: i64) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_u64<E>(self, v: u64) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
            fn visit_f64<E>(self, v: f64) -> Result<MapKey, E> {
                Ok(MapKey(v.to_string()))
            }
        }
        deserializer.deserialize_any(KeyVisitor)
    }
}

/// Flattens nested maps into dotted keys, in document order:
/// `{state: {backend: {type: x}}}` and `{"state.backend.type": x}` both give
/// `("state.backend.type", x)`. Keys are trimmed, an empty map sets
/// nothing, and repeated keys stay repeated (the caller reports them).
pub(crate) fn flatten(entries: Vec<(String, Raw)>) -> Vec<(String, Raw)> {
    let mut out = Vec::new();
    flatten_into(None, entries, &mut out);
    out
}

fn flatten_into(prefix: Option<&str>, entries: Vec<(String, Raw)>, out: &mut Vec<(String, Raw)>) {
    for (key, value) in entries {
        let key = key.trim();
        let full = match prefix {
            Some(p) => format!("{p}.{key}"),
            None => key.to_string(),
        };
        match value {
            Raw::Map(inner) => flatten_into(Some(&full), inner, out),
            other => out.push((full, other)),
        }
    }
}

/// Parses Flink's duration syntax (`TimeUtils.parseDuration`): an integer,
/// optional whitespace and a unit; a plain number is milliseconds.
pub(crate) fn parse_duration(text: &str) -> Option<Duration> {
    let (number, unit) = split_number(text)?;
    let nanos_per_unit: u128 = match unit.to_ascii_lowercase().as_str() {
        "" | "ms" | "milli" | "millis" | "millisecond" | "milliseconds" => 1_000_000,
        "ns" | "nano" | "nanos" | "nanosecond" | "nanoseconds" => 1,
        "us" | "µs" | "micro" | "micros" | "microsecond" | "microseconds" => 1_000,
        "s" | "sec" | "secs" | "second" | "seconds" => 1_000_000_000,
        "m" | "min" | "mins" | "minute" | "minutes" => 60_000_000_000,
        "h" | "hour" | "hours" => 3_600_000_000_000,
        "d" | "day" | "days" => 86_400_000_000_000,
        _ => return None,
    };
    let nanos = u128::from(number).checked_mul(nanos_per_unit)?;
    let secs = u64::try_from(nanos / 1_000_000_000).ok()?;
    Some(Duration::new(secs, (nanos % 1_000_000_000) as u32))
}

/// Parses Flink's memory-size syntax (`MemorySize.parse`): an integer,
/// optional whitespace and a unit (powers of 1024); a plain number is bytes.
pub(crate) fn parse_memory_size(text: &str) -> Option<u64> {
    let (number, unit) = split_number(text)?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" | "bytes" => 0,
        "k" | "kb" | "kibibytes" => 10,
        "m" | "mb" | "mebibytes" => 20,
        "g" | "gb" | "gibibytes" => 30,
        "t" | "tb" | "tebibytes" => 40,
        _ => return None,
    };
    number.checked_mul(1u64 << shift)
}

/// `"10 min"` → `(10, "min")`; `None` without leading digits.
fn split_number(text: &str) -> Option<(u64, &str)> {
    let text = text.trim();
    let digits = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    if digits == 0 {
        return None;
    }
    let number = text[..digits].parse::<u64>().ok()?;
    Some((number, text[digits..].trim_start()))
}

/// `5 << 20` → `"5 mb"`: the largest unit that divides the size.
pub(crate) fn format_memory_size(bytes: u64) -> String {
    for (shift, unit) in [(40, "tb"), (30, "gb"), (20, "mb"), (10, "kb")] {
        if bytes != 0 && bytes.is_multiple_of(1u64 << shift) {
            return format!("{} {unit}", bytes >> shift);
        }
    }
    format!("{bytes} b")
}

/// A value converted to its option's type.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Typed {
    Bool(bool),
    Int(u64),
    Float(f64),
    Duration(Duration),
    Bytes(u64),
    /// Enum values are the canonical name from the option's list.
    Str(String),
}

/// Converts `raw` to `kind`; the error message says what was found and
/// which values are accepted.
pub(crate) fn convert(kind: &OptionType, raw: &Raw) -> Result<Typed, String> {
    let wrong = || format!("{} is not {}", raw.describe(), kind.accepted());
    match (kind, raw) {
        (OptionType::Enum(names), Raw::Str(s)) => names
            .iter()
            .find(|n| n.eq_ignore_ascii_case(s.trim()))
            .map(|n| Typed::Str((*n).to_string()))
            .ok_or_else(|| format!("'{s}' is not one of {}", names.join(", "))),
        (OptionType::Bool, Raw::Bool(b)) => Ok(Typed::Bool(*b)),
        (OptionType::Bool, Raw::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Ok(Typed::Bool(true)),
            "false" => Ok(Typed::Bool(false)),
            _ => Err(wrong()),
        },
        (OptionType::Integer { min, max }, Raw::Int(_) | Raw::Str(_)) => {
            let value = match raw {
                Raw::Int(i) => *i,
                Raw::Str(s) => s.trim().parse::<i128>().map_err(|_| wrong())?,
                _ => return Err(wrong()),
            };
            u64::try_from(value)
                .ok()
                .filter(|v| (*min..=*max).contains(v))
                .map(Typed::Int)
                .ok_or_else(wrong)
        }
        (OptionType::Ratio, Raw::Float(_) | Raw::Int(_) | Raw::Str(_)) => {
            let value = match raw {
                Raw::Float(f) => *f,
                Raw::Int(i) => *i as f64,
                Raw::Str(s) => s.trim().parse::<f64>().map_err(|_| wrong())?,
                _ => return Err(wrong()),
            };
            if value > 0.0 && value < 1.0 {
                Ok(Typed::Float(value))
            } else {
                Err(wrong())
            }
        }
        (OptionType::Duration { allow_zero }, Raw::Str(_) | Raw::Int(_)) => {
            let duration = match raw {
                Raw::Str(s) => parse_duration(s),
                Raw::Int(i) => u64::try_from(*i).ok().map(Duration::from_millis),
                _ => None,
            }
            .ok_or_else(wrong)?;
            if duration.is_zero() && !allow_zero {
                return Err(wrong());
            }
            Ok(Typed::Duration(duration))
        }
        (OptionType::MemorySize { min }, Raw::Str(_) | Raw::Int(_)) => {
            let bytes = match raw {
                Raw::Str(s) => parse_memory_size(s),
                Raw::Int(i) => u64::try_from(*i).ok(),
                _ => None,
            }
            .ok_or_else(wrong)?;
            // Sizes become `usize` in the backends' settings.
            if bytes < *min || usize::try_from(bytes).is_err() {
                return Err(wrong());
            }
            Ok(Typed::Bytes(bytes))
        }
        (OptionType::Location, Raw::Str(s)) => {
            check_location(s.trim()).map(|()| Typed::Str(s.trim().to_string()))
        }
        (OptionType::Path, Raw::Str(s)) => {
            let s = s.trim();
            if s.is_empty() || s.contains("://") {
                Err(wrong())
            } else {
                Ok(Typed::Str(s.to_string()))
            }
        }
        _ => Err(wrong()),
    }
}

/// URL schemes `ObjectStoreCheckpointStorage::from_url` accepts.
const SCHEMES: &[&str] = &[
    "file", "memory", "s3", "s3a", "gs", "az", "azure", "abfs", "abfss", "adl",
];

fn check_location(s: &str) -> Result<(), String> {
    let accepted = OptionType::Location.accepted();
    if s.is_empty() {
        return Err(format!("the empty string is not {accepted}"));
    }
    if let Some((scheme, _)) = s.split_once("://")
        && !SCHEMES.contains(&scheme.to_ascii_lowercase().as_str())
    {
        return Err(format!(
            "'{s}' has the unsupported scheme '{scheme}': use {accepted}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_follow_flink() {
        let min10 = Some(Duration::from_secs(600));
        assert_eq!(parse_duration("10 min"), min10);
        assert_eq!(parse_duration("10min"), min10);
        assert_eq!(parse_duration("600s"), min10);
        assert_eq!(parse_duration("600000"), min10);
        assert_eq!(parse_duration(" 10 MIN "), min10);
        assert_eq!(parse_duration("500 ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration("1h"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_duration("2 d"), Some(Duration::from_secs(172_800)));
        assert_eq!(parse_duration("10m"), min10);
        assert_eq!(parse_duration("250us"), Some(Duration::from_micros(250)));
        assert_eq!(parse_duration("7ns"), Some(Duration::from_nanos(7)));
        for bad in [
            "",
            "min",
            "10 parsecs",
            "1.5s",
            "-1s",
            "99999999999999999999d",
        ] {
            assert_eq!(parse_duration(bad), None, "{bad}");
        }
    }

    #[test]
    fn memory_sizes_follow_flink() {
        assert_eq!(parse_memory_size("64mb"), Some(64 << 20));
        assert_eq!(parse_memory_size("64 mb"), Some(64 << 20));
        assert_eq!(parse_memory_size("64 MB"), Some(64 << 20));
        assert_eq!(parse_memory_size("1gb"), Some(1 << 30));
        assert_eq!(parse_memory_size("512kb"), Some(512 << 10));
        assert_eq!(parse_memory_size("3 m"), Some(3 << 20));
        assert_eq!(parse_memory_size("1 tb"), Some(1 << 40));
        assert_eq!(parse_memory_size("1234"), Some(1234));
        assert_eq!(parse_memory_size("12 bytes"), Some(12));
        for bad in ["", "mb", "1.5gb", "-1", "64 parsecs", "99999999999 tb"] {
            assert_eq!(parse_memory_size(bad), None, "{bad}");
        }
        assert_eq!(format_memory_size(5 << 20), "5 mb");
        assert_eq!(format_memory_size(1 << 30), "1 gb");
        assert_eq!(format_memory_size(1000), "1000 b");
    }

    #[test]
    fn flattening_joins_nested_keys() {
        let nested = Raw::Map(vec![(
            "state".into(),
            Raw::Map(vec![(
                "backend".into(),
                Raw::Map(vec![
                    ("type".into(), Raw::Str("rocksdb".into())),
                    ("rocksdb.localdir".into(), Raw::Str("/x".into())),
                ]),
            )]),
        )]);
        let Raw::Map(entries) = nested else {
            unreachable!()
        };
        assert_eq!(
            flatten(entries),
            vec![
                ("state.backend.type".into(), Raw::Str("rocksdb".into())),
                (
                    "state.backend.rocksdb.localdir".into(),
                    Raw::Str("/x".into())
                ),
            ]
        );
    }
}

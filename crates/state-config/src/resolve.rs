//! Flat entries → one typed value per option, checking every entry before
//! anything is used: unknown keys (with a suggestion), a key set twice or
//! together with its deprecated alias, values of the wrong type or out of
//! range. All problems are collected; the error names the first and lists
//! the others.

use std::collections::BTreeMap;

use state_api::StateError;

use crate::options::{OPTIONS, OptionDef, lookup};
use crate::parse::{Raw, Typed, convert};

/// Where an entry came from, for error messages.
#[derive(Clone, Debug, PartialEq)]
pub(crate) enum Origin {
    /// A document (TOML, YAML, JSON, a serde deserializer) or key/value pairs.
    Document,
    /// The environment variable of that name.
    Env(String),
}

/// One key and value as a source gave it, flattened.
#[derive(Clone, Debug)]
pub(crate) struct Entry {
    pub(crate) key: String,
    pub(crate) value: Raw,
    pub(crate) origin: Origin,
}

/// An option's value after checking.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Resolved {
    pub(crate) typed: Typed,
    /// The key as the source wrote it: the option's key or an alias.
    pub(crate) written_as: String,
}

/// Problems found, each with the position of its entry in the source.
#[derive(Debug, Default)]
pub(crate) struct Problems(Vec<(usize, StateError)>);

impl Problems {
    /// A problem after every other so far.
    pub(crate) fn push(&mut self, key: impl Into<String>, message: impl Into<String>) {
        let position = self.0.last().map_or(0, |(p, _)| *p);
        self.push_at(position, key, message);
    }

    /// A problem of the entry at `position` in the source.
    pub(crate) fn push_at(
        &mut self,
        position: usize,
        key: impl Into<String>,
        message: impl Into<String>,
    ) {
        self.0.push((
            position,
            StateError::Config {
                key: key.into(),
                message: message.into(),
            },
        ));
    }

    /// `Ok(value)` without problems, else one `StateError::Config` naming
    /// the first problem's key, with the others appended to its message.
    pub(crate) fn into_result<T>(mut self, value: T) -> Result<T, StateError> {
        // In source order (the sort is stable).
        self.0.sort_by_key(|(position, _)| *position);
        let mut problems = self.0.into_iter().map(|(_, problem)| problem);
        let Some(first) = problems.next() else {
            return Ok(value);
        };
        let rest: Vec<String> = problems.map(|p| p.to_string()).collect();
        if rest.is_empty() {
            return Err(first);
        }
        match first {
            StateError::Config { key, message } => Err(StateError::Config {
                key,
                message: format!("{message} (and {} more: {})", rest.len(), rest.join("; ")),
            }),
            other => Err(other),
        }
    }
}

/// Unknown keys that get a "did you mean" hint; later ones are only named
/// (each hint compares the key with every option, so a document of
/// thousands of unknown keys would otherwise take seconds to refuse).
const HINTED_UNKNOWN_KEYS: usize = 16;

/// Checks `entries` and gives each option set its typed value.
pub(crate) fn resolve(entries: &[Entry]) -> Result<BTreeMap<&'static str, Resolved>, StateError> {
    let mut problems = Problems::default();
    let mut unknown_keys = 0;
    let mut by_option: BTreeMap<&'static str, Vec<(usize, &Entry)>> = BTreeMap::new();
    let mut order: Vec<&'static str> = Vec::new();
    for (position, entry) in entries.iter().enumerate() {
        match lookup(&entry.key) {
            Some((option, _)) => {
                let list = by_option.entry(option.key).or_default();
                if list.is_empty() {
                    order.push(option.key);
                }
                list.push((position, entry));
            }
            None if unknown_keys < HINTED_UNKNOWN_KEYS => {
                unknown_keys += 1;
                let (key, message) = unknown_key(&entry.key, &entry.value);
                problems.push_at(position, key, message);
            }
            None => problems.push_at(position, entry.key.clone(), "unknown key"),
        }
    }
    let mut resolved = BTreeMap::new();
    for key in order {
        let Some((option, _)) = lookup(key) else {
            continue;
        };
        match by_option.get(key).map(Vec::as_slice) {
            Some([(position, first), (_, second), ..]) => {
                problems.push_at(*position, key, set_twice(option, &first.key, &second.key));
            }
            // A null value (YAML `~`, JSON `null`) leaves the option unset;
            // it still counts when the option is set twice.
            Some([(_, entry)]) if entry.value == Raw::Null => {}
            Some([(position, entry)]) => match convert(&option.kind, &entry.value) {
                Ok(typed) => {
                    resolved.insert(
                        option.key,
                        Resolved {
                            typed,
                            written_as: entry.key.clone(),
                        },
                    );
                }
                Err(message) => match &entry.origin {
                    Origin::Document => problems.push_at(*position, entry.key.clone(), message),
                    Origin::Env(var) => problems.push_at(
                        *position,
                        option.key,
                        format!("{message} (from the environment variable {var})"),
                    ),
                },
            },
            _ => {}
        }
    }
    problems.into_result(resolved)
}

fn set_twice(option: &OptionDef, first: &str, second: &str) -> String {
    let alias = [first, second].into_iter().find(|k| *k != option.key);
    match alias {
        Some(alias) if first != second => format!(
            "set both as '{}' and as its deprecated alias '{alias}': keep only '{}'",
            option.key, option.key
        ),
        Some(alias) => format!(
            "the deprecated alias '{alias}' is set twice (as a dotted key and as a nested map, or repeated): keep one '{}'",
            option.key
        ),
        None => format!(
            "set twice (as a dotted key and as a nested map, or repeated): keep one '{}'",
            option.key
        ),
    }
}

/// The error for a key no option has: a map under an option's key, a close
/// key, or the keys that share the longest prefix with it.
fn unknown_key(key: &str, value: &Raw) -> (String, String) {
    // `state.backend.type: {a: 1}` flattens to `state.backend.type.a`.
    if let Some(option) = OPTIONS.iter().find(|o| {
        key.starts_with(&format!("{}.", o.key))
            && !OPTIONS.iter().any(|other| {
                std::iter::once(other.key)
                    .chain(other.aliases.iter().copied())
                    .any(|k| k.starts_with(&format!("{}.", o.key)))
            })
    }) {
        return (
            option.key.to_string(),
            format!(
                "expected {}, got a map (found '{key}' = {})",
                option.kind.accepted(),
                value.describe()
            ),
        );
    }
    let candidates = OPTIONS
        .iter()
        .flat_map(|o| std::iter::once(o.key).chain(o.aliases.iter().copied()));
    let message = match suggest(key, candidates) {
        Some(close) => match lookup(close) {
            Some((option, true)) => format!(
                "unknown key; did you mean '{close}' (a deprecated alias of '{}')?",
                option.key
            ),
            _ => format!("unknown key; did you mean '{close}'?"),
        },
        None => format!("unknown key; {}", known_keys_near(key)),
    };
    (key.to_string(), message)
}

/// The candidate closest to `wanted`, if it is close enough to be a typo
/// (optimal string alignment distance: edits and swapped neighbours, with
/// two rows of memory, not the full table Damerau-Levenshtein needs).
pub(crate) fn suggest<'a>(
    wanted: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let wanted_lower = wanted.to_ascii_lowercase();
    let limit = (wanted.len() / 10).max(2);
    let length = wanted.chars().count();
    candidates
        .into_iter()
        // Cheap lower bounds of the distance first: a long or hostile key
        // must not cost length² per option.
        .filter(|c| c.chars().count().abs_diff(length) <= limit)
        .filter(|c| bag_distance(&wanted_lower, c).is_none_or(|bound| bound <= limit))
        .map(|c| {
            (
                strsim::osa_distance(&wanted_lower, &c.to_ascii_lowercase()),
                c,
            )
        })
        .filter(|(distance, _)| *distance <= limit)
        .min_by_key(|(distance, _)| *distance)
        .map(|(_, c)| c)
}

/// A lower bound of the edit distance between two ASCII strings (compared
/// case-insensitively): the larger of the byte counts one has and the other
/// lacks. `None` for non-ASCII strings, where bytes are not characters.
fn bag_distance(a: &str, b: &str) -> Option<usize> {
    if !a.is_ascii() || !b.is_ascii() {
        return None;
    }
    let mut counts = [0i32; 128];
    for byte in a.bytes() {
        counts[usize::from(byte.to_ascii_lowercase())] += 1;
    }
    for byte in b.bytes() {
        counts[usize::from(byte.to_ascii_lowercase())] -= 1;
    }
    let surplus: i32 = counts.iter().filter(|&&n| n > 0).sum();
    let deficit: i32 = counts.iter().filter(|&&n| n < 0).map(|n| -n).sum();
    usize::try_from(surplus.max(deficit)).ok()
}

/// "the keys under 'a.b.' are: …" for the longest dotted prefix of `key`
/// that some option shares, else every key.
fn known_keys_near(key: &str) -> String {
    // No option has more than a few parts; a key of thousands of dots
    // needs no thousands of prefixes.
    let parts: Vec<&str> = key.split('.').take(12).collect();
    for n in (1..parts.len()).rev() {
        let prefix = format!("{}.", parts[..n].join("."));
        let near: Vec<&str> = OPTIONS
            .iter()
            .map(|o| o.key)
            .filter(|k| k.starts_with(&prefix))
            .collect();
        if !near.is_empty() {
            return format!("the keys under '{prefix}' are: {}", near.join(", "));
        }
    }
    let all: Vec<&str> = OPTIONS.iter().map(|o| o.key).collect();
    format!("the known keys are: {}", all.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bag_distance_bounds_the_edit_distance() {
        for (a, b) in [
            ("state.backend.type", "state.backend.tpye"),
            ("state.backend.type", "state.backed.type"),
            ("abc", "xyz"),
            ("", "abc"),
        ] {
            let bound = bag_distance(a, b).unwrap();
            assert!(bound <= strsim::osa_distance(a, b), "{a} {b}");
        }
        assert_eq!(bag_distance("tpye", "TYPE"), Some(0));
        assert_eq!(bag_distance("é", "e"), None);
    }

    #[test]
    fn typos_get_hints_and_long_keys_do_not_cost_much() {
        let keys = ["state.backend.type", "state.checkpoints.num-retained"];
        assert_eq!(
            suggest("state.backend.tpye", keys),
            Some("state.backend.type")
        );
        assert_eq!(suggest(&"x.".repeat(50_000), keys), None);
    }
}

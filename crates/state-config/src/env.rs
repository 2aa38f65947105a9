//! Environment variables: `KSTATE_` followed by the key upper-cased, with
//! `.` → `_` and `-` → `__`.

use std::collections::BTreeMap;

use crate::options::OPTIONS;
use crate::parse::Raw;
use crate::resolve::{Entry, Origin, Problems, suggest};

/// Prefix of the environment variables that set options.
pub const ENV_PREFIX: &str = "KSTATE_";

/// The environment variable that sets `key`: [`ENV_PREFIX`], then the key
/// upper-cased with `.` → `_` and `-` → `__`.
///
/// ```
/// use state_config::env_var_name;
/// assert_eq!(env_var_name("state.backend.type"), "KSTATE_STATE_BACKEND_TYPE");
/// assert_eq!(
///     env_var_name("execution.checkpointing.num-retained"),
///     "KSTATE_EXECUTION_CHECKPOINTING_NUM__RETAINED"
/// );
/// ```
pub fn env_var_name(key: &str) -> String {
    let mut name = String::from(ENV_PREFIX);
    for c in key.chars() {
        match c {
            '.' => name.push('_'),
            '-' => name.push_str("__"),
            c => name.push(c.to_ascii_uppercase()),
        }
    }
    name
}

/// The entries the `KSTATE_` variables among `vars` set; other variables
/// are ignored, unknown `KSTATE_` variables are problems. An empty value
/// leaves the option unset.
pub(crate) fn entries<I, K, V>(vars: I) -> Result<Vec<Entry>, state_api::StateError>
where
    I: IntoIterator<Item = (K, V)>,
    K: AsRef<str>,
    V: AsRef<str>,
{
    let names: BTreeMap<String, &'static str> = OPTIONS
        .iter()
        .map(|o| (env_var_name(o.key), o.key))
        .collect();
    let mut problems = Problems::default();
    let mut out = Vec::new();
    let mut vars: Vec<(String, String)> = vars
        .into_iter()
        .map(|(k, v)| (k.as_ref().to_string(), v.as_ref().to_string()))
        .filter(|(k, _)| k.starts_with(ENV_PREFIX))
        .collect();
    // The environment has no order; errors come in name order.
    vars.sort();
    for (name, value) in vars {
        match names.get(&name) {
            Some(key) => out.push(Entry {
                key: (*key).to_string(),
                value: if value.is_empty() {
                    Raw::Null
                } else {
                    Raw::Str(value)
                },
                origin: Origin::Env(name),
            }),
            None => {
                let hint = match suggest(&name, names.keys().map(String::as_str)) {
                    Some(close) => format!(
                        "did you mean {close} (for '{}')?",
                        names.get(close).copied().unwrap_or_default()
                    ),
                    None => "see the option table for the keys".to_string(),
                };
                problems.push(
                    name,
                    format!(
                        "unknown environment variable: {ENV_PREFIX} variables set options ({ENV_PREFIX} and the key upper-cased, '.' as '_', '-' as '__'); {hint}"
                    ),
                );
            }
        }
    }
    problems.into_result(out)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use super::*;

    #[test]
    fn every_key_has_its_own_variable() {
        let names: BTreeSet<String> = OPTIONS.iter().map(|o| env_var_name(o.key)).collect();
        assert_eq!(names.len(), OPTIONS.len());
    }
}

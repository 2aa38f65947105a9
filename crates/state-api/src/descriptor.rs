//! State descriptors: how a state is registered.
//!
//! A typed descriptor ([`ValueStateDescriptor`], [`ListStateDescriptor`],
//! [`MapStateDescriptor`], [`ReducingStateDescriptor`],
//! [`AggregatingStateDescriptor`]) names a state and fixes its types. The
//! backend only sees the type-erased [`StateRegistration`]: a [`StateMeta`]
//! (name, kind, type names), which it persists in snapshots and checks on every
//! later registration, plus the byte-level [`StateFunction`] that reducing and
//! aggregating states fold with.

use std::any::type_name;
use std::fmt;
use std::marker::PhantomData;

/// Marks the types a handle or descriptor is for, without owning them.
type TypeMarker<T> = PhantomData<fn() -> T>;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::codec::{decode, encode_into};
use crate::error::{Result, StateError};
use crate::ttl::{StateTtlConfig, TtlMeta};

/// The namespace of non-windowed state. It encodes to zero bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct VoidNamespace;

/// The five kinds of keyed state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StateKind {
    /// One value per (key, namespace).
    Value,
    /// A list of elements per (key, namespace), appended to cheaply.
    List,
    /// A map of user keys to user values per (key, namespace).
    Map,
    /// One value per (key, namespace), folded with a reduce function.
    Reducing,
    /// One accumulator per (key, namespace), folded with an aggregate function.
    Aggregating,
    /// Timers: a set of timestamps per (key, namespace), fired in time
    /// order (see [`crate::timers`]). In snapshots and change logs it has
    /// the form of a map state whose user keys are the timestamps
    /// ([`encode_timestamp`](crate::timers::encode_timestamp)) and whose
    /// values are empty.
    Timers,
}

impl StateKind {
    /// Whether values of this kind are folded with a [`StateFunction`].
    pub fn needs_function(self) -> bool {
        matches!(self, StateKind::Reducing | StateKind::Aggregating)
    }

    /// Whether entries of this kind carry a user key in snapshots and change
    /// logs (map state's user keys, timer states' timestamps).
    pub fn has_user_key(self) -> bool {
        matches!(self, StateKind::Map | StateKind::Timers)
    }
}

/// What a backend knows and persists about a registered state.
///
/// Type names default to [`std::any::type_name`], which Rust does not promise
/// to keep stable across compiler versions or crate renames. State that must
/// outlive such changes should set stable tags on its descriptor
/// (`with_value_type_tag`, `with_namespace_type_tag`, and for map state
/// `with_user_key_type_tag`); restore compares whatever was stored.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateMeta {
    /// Unique name within the backend.
    pub name: String,
    /// The kind of state.
    pub kind: StateKind,
    /// Type of the namespace.
    pub namespace_type: String,
    /// Type of the value, list element, map value, or accumulator.
    pub value_type: String,
    /// Type of the map's user key (map state only).
    pub user_key_type: Option<String>,
    /// The time to live its values are stored with; `None`: no TTL, and its
    /// values carry no last-access stamp (see [`crate::ttl`]). Recorded
    /// since format version 4; absent before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<TtlMeta>,
}

impl StateMeta {
    /// The error for an operation of kind `requested` on this state.
    #[cold]
    pub fn kind_mismatch(&self, requested: StateKind) -> StateError {
        StateError::StateKindMismatch {
            state: self.name.clone(),
            registered: self.kind,
            requested,
        }
    }

    /// Checks that `requested` may use the state registered as `self`: same
    /// kind and same types.
    ///
    /// # Errors
    /// [`StateError::StateKindMismatch`] or [`StateError::StateTypeMismatch`].
    pub fn check_compatible(&self, requested: &StateMeta) -> Result<()> {
        if self.kind != requested.kind {
            return Err(StateError::StateKindMismatch {
                state: self.name.clone(),
                registered: self.kind,
                requested: requested.kind,
            });
        }
        let pairs = [
            (
                "namespace",
                Some(&self.namespace_type),
                Some(&requested.namespace_type),
            ),
            ("value", Some(&self.value_type), Some(&requested.value_type)),
            (
                "user key",
                self.user_key_type.as_ref(),
                requested.user_key_type.as_ref(),
            ),
        ];
        for (what, registered, wanted) in pairs {
            if registered != wanted {
                return Err(StateError::StateTypeMismatch {
                    state: self.name.clone(),
                    what,
                    registered: registered.cloned().unwrap_or_default(),
                    requested: wanted.cloned().unwrap_or_default(),
                });
            }
        }
        // Another time to live is fine (it applies from now on); TTL on or
        // off changes how every value is stored.
        if self.ttl.is_some() != requested.ttl.is_some() {
            return Err(StateError::StateTtlMismatch {
                state: self.name.clone(),
                registered: self.ttl.as_ref().map(|t| t.ttl_ms),
                requested: requested.ttl.as_ref().map(|t| t.ttl_ms),
            });
        }
        Ok(())
    }
}

/// The byte-level fold of reducing and aggregating state.
///
/// Backends call it on encoded bytes, so they never need the user's types:
/// the heap and RocksDB backends fold on `add` and merge namespaces with it
/// (see [`merge_namespace_values`]); the changelog backend folds before
/// logging, so its replay never needs it.
pub trait StateFunction: Send + Sync {
    /// Folds one encoded input into the encoded accumulator (`None`: no value
    /// yet), writing the new accumulator to `out` (which starts empty).
    ///
    /// # Errors
    /// [`StateError::Codec`] when the bytes do not decode.
    fn add(&self, accumulator: Option<&[u8]>, input: &[u8], out: &mut Vec<u8>) -> Result<()>;

    /// Merges two encoded accumulators into `out` (which starts empty); used
    /// when namespaces (windows) merge.
    ///
    /// # Errors
    /// [`StateError::Codec`] when the bytes do not decode.
    fn merge(&self, a: &[u8], b: &[u8], out: &mut Vec<u8>) -> Result<()>;
}

/// The value a namespace merge leaves in `target`, as
/// [`KeyedStateBackend::merge_namespaces`](crate::KeyedStateBackend::merge_namespaces)
/// specifies it: the sources' values in order (a repeated source counts
/// once), after the target's own value unless the target is itself a
/// source; lists concatenate, reducing and aggregating states merge with
/// `function`. `read` returns a namespace's current value. `None`: no source
/// has a value and the target stays as it is.
///
/// Every value is read before anything is written, so a failing function
/// leaves all namespaces unchanged; the caller then writes the result to the
/// target and clears the sources other than the target.
///
/// ```
/// use state_api::StateKind;
/// use state_api::descriptor::merge_namespace_values;
///
/// let read = |ns: &[u8]| Ok(Some(ns.to_vec())); // each namespace holds its own name
/// let merged = merge_namespace_values(StateKind::List, None, b"t", &[b"a", b"b", b"a"], read);
/// assert_eq!(merged.unwrap(), Some(b"tab".to_vec()));
/// ```
///
/// # Errors
/// [`StateError::Config`] for a reducing or aggregating state without a
/// function; the function's and `read`'s errors.
pub fn merge_namespace_values(
    kind: StateKind,
    function: Option<&dyn StateFunction>,
    target: &[u8],
    sources: &[&[u8]],
    mut read: impl FnMut(&[u8]) -> Result<Option<Vec<u8>>>,
) -> Result<Option<Vec<u8>>> {
    let mut scratch = Vec::new();
    let mut merged: Option<Vec<u8>> = None;
    let mut target_is_source = false;
    for (i, source) in sources.iter().enumerate() {
        if sources[..i].contains(source) {
            continue; // a repeated source merges once
        }
        target_is_source |= *source == target;
        let Some(value) = read(source)? else {
            continue;
        };
        merged = Some(match merged {
            None => value,
            Some(mut acc) => {
                combine(kind, function, &mut acc, &value, &mut scratch)?;
                acc
            }
        });
    }
    let Some(merged) = merged else {
        return Ok(None);
    };
    if !target_is_source && let Some(mut acc) = read(target)? {
        // Flink's order: the target's value first, then the sources'.
        combine(kind, function, &mut acc, &merged, &mut scratch)?;
        return Ok(Some(acc));
    }
    Ok(Some(merged))
}

/// Appends `value` to the accumulator `acc`: concatenation for lists, the
/// function's merge otherwise.
fn combine(
    kind: StateKind,
    function: Option<&dyn StateFunction>,
    acc: &mut Vec<u8>,
    value: &[u8],
    scratch: &mut Vec<u8>,
) -> Result<()> {
    if kind == StateKind::List {
        acc.extend_from_slice(value);
        return Ok(());
    }
    let function = function.ok_or_else(|| StateError::Config {
        key: "state function".into(),
        message: format!("a {kind:?} state needs a fold function to merge namespaces"),
    })?;
    scratch.clear();
    function.merge(acc, value, scratch)?;
    std::mem::swap(acc, scratch);
    Ok(())
}

/// A state registration as the backend sees it.
#[derive(Clone)]
pub struct StateRegistration {
    /// Name, kind and types.
    pub meta: StateMeta,
    /// The fold of reducing and aggregating state; `None` for the other kinds.
    pub function: Option<Arc<dyn StateFunction>>,
    /// The time to live, with its clock and clean-up settings (the meta
    /// records it too); `None` without TTL.
    pub ttl: Option<StateTtlConfig>,
}

impl StateRegistration {
    /// A registration of `meta` without a function or TTL (value, list, map
    /// and timer states).
    pub fn of(meta: StateMeta) -> Self {
        Self {
            meta,
            function: None,
            ttl: None,
        }
    }
}

impl fmt::Debug for StateRegistration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StateRegistration")
            .field("meta", &self.meta)
            .field("function", &self.function.as_ref().map(|_| "<fn>"))
            .field("ttl", &self.ttl)
            .finish()
    }
}

impl StateRegistration {
    /// Checks that reducing and aggregating registrations carry a function and
    /// others do not.
    ///
    /// # Errors
    /// [`StateError::Config`] naming the state.
    pub fn validate(&self) -> Result<()> {
        if self.meta.name.is_empty() {
            return Err(StateError::Config {
                key: "state name".into(),
                message: "a state name must not be empty".into(),
            });
        }
        if self.meta.kind.needs_function() != self.function.is_some() {
            return Err(StateError::Config {
                key: self.meta.name.clone(),
                message: format!(
                    "a {:?} state {} a fold function",
                    self.meta.kind,
                    if self.meta.kind.needs_function() {
                        "needs"
                    } else {
                        "must not have"
                    }
                ),
            });
        }
        Ok(())
    }
}

/// Methods every descriptor has: its metadata and stable type tags.
macro_rules! descriptor_common {
    () => {
        /// Name, kind and types.
        pub fn meta(&self) -> &StateMeta {
            &self.meta
        }

        /// Records `tag` instead of the Rust name of the value (element,
        /// accumulator) type, so the state survives type renames.
        pub fn with_value_type_tag(mut self, tag: impl Into<String>) -> Self {
            self.meta.value_type = tag.into();
            self
        }

        /// Records `tag` instead of the Rust name of the namespace type.
        pub fn with_namespace_type_tag(mut self, tag: impl Into<String>) -> Self {
            self.meta.namespace_type = tag.into();
            self
        }

        /// Gives the state a time to live (see [`crate::ttl`]): per value,
        /// list element and map entry.
        pub fn with_ttl(mut self, ttl: StateTtlConfig) -> Self {
            self.meta.ttl = Some(ttl.meta());
            self.ttl = Some(ttl);
            self
        }
    };
}

/// Descriptor of a [`ValueState`](crate::state::ValueState).
///
/// ```
/// use state_api::descriptor::ValueStateDescriptor;
/// let counts = ValueStateDescriptor::<u64>::new("counts").with_default(0);
/// assert_eq!(counts.meta().name, "counts");
/// ```
pub struct ValueStateDescriptor<V, N = VoidNamespace> {
    pub(crate) meta: StateMeta,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) default: Option<V>,
    _types: PhantomData<fn() -> N>,
}

impl<V, N> ValueStateDescriptor<V, N> {
    /// A value state named `name`, with no default (absent values read as `None`).
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            meta: meta::<V, N>(name.into(), StateKind::Value, None),
            ttl: None,
            default: None,
            _types: PhantomData,
        }
    }

    /// Absent values read as `default` instead of `None`.
    pub fn with_default(mut self, default: V) -> Self {
        self.default = Some(default);
        self
    }

    descriptor_common!();
}

/// Descriptor of a [`ListState`](crate::state::ListState).
pub struct ListStateDescriptor<T, N = VoidNamespace> {
    pub(crate) meta: StateMeta,
    pub(crate) ttl: Option<StateTtlConfig>,
    _types: PhantomData<fn() -> (T, N)>,
}

impl<T, N> ListStateDescriptor<T, N> {
    /// A list state named `name` with elements of type `T`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            meta: meta::<T, N>(name.into(), StateKind::List, None),
            ttl: None,
            _types: PhantomData,
        }
    }

    descriptor_common!();
}

/// Descriptor of a [`MapState`](crate::state::MapState).
pub struct MapStateDescriptor<UK, UV, N = VoidNamespace> {
    pub(crate) meta: StateMeta,
    pub(crate) ttl: Option<StateTtlConfig>,
    _types: TypeMarker<(UK, UV, N)>,
}

impl<UK, UV, N> MapStateDescriptor<UK, UV, N> {
    /// Records `tag` instead of the Rust name of the user key type.
    pub fn with_user_key_type_tag(mut self, tag: impl Into<String>) -> Self {
        self.meta.user_key_type = Some(tag.into());
        self
    }

    /// A map state named `name` mapping `UK` to `UV`.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            meta: meta::<UV, N>(
                name.into(),
                StateKind::Map,
                Some(type_name::<UK>().to_string()),
            ),
            ttl: None,
            _types: PhantomData,
        }
    }

    descriptor_common!();
}

/// Descriptor of a [`ReducingState`](crate::state::ReducingState).
///
/// ```
/// use state_api::descriptor::ReducingStateDescriptor;
/// let max = ReducingStateDescriptor::<i64>::new("max", |a, b| (*a).max(*b));
/// assert_eq!(max.meta().name, "max");
/// ```
pub struct ReducingStateDescriptor<T, N = VoidNamespace> {
    pub(crate) meta: StateMeta,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) function: Arc<dyn StateFunction>,
    _types: PhantomData<fn() -> (T, N)>,
}

impl<T, N> ReducingStateDescriptor<T, N>
where
    T: Serialize + DeserializeOwned + 'static,
{
    /// A reducing state named `name` that folds added values with `reduce`.
    pub fn new(
        name: impl Into<String>,
        reduce: impl Fn(&T, &T) -> T + Send + Sync + 'static,
    ) -> Self {
        Self {
            meta: meta::<T, N>(name.into(), StateKind::Reducing, None),
            ttl: None,
            function: Arc::new(ReduceFunction {
                reduce,
                _types: PhantomData,
            }),
            _types: PhantomData,
        }
    }

    descriptor_common!();
}

/// An aggregation: inputs of type `In` fold into an accumulator `Acc`, read out
/// as `Out`. Accumulators of two namespaces can merge.
pub trait AggregateFunction: Send + Sync + 'static {
    /// Input values.
    type In;
    /// The stored accumulator.
    type Acc: Serialize + DeserializeOwned;
    /// What reads return.
    type Out;
    /// A new, empty accumulator.
    fn create_accumulator(&self) -> Self::Acc;
    /// Folds `value` into `accumulator`.
    fn add(&self, value: &Self::In, accumulator: Self::Acc) -> Self::Acc;
    /// Merges two accumulators.
    fn merge(&self, a: Self::Acc, b: Self::Acc) -> Self::Acc;
    /// The result of an accumulator.
    fn get_result(&self, accumulator: &Self::Acc) -> Self::Out;
}

/// Descriptor of an [`AggregatingState`](crate::state::AggregatingState).
pub struct AggregatingStateDescriptor<F: AggregateFunction, N = VoidNamespace> {
    pub(crate) meta: StateMeta,
    pub(crate) ttl: Option<StateTtlConfig>,
    pub(crate) aggregate: Arc<F>,
    _types: PhantomData<fn() -> N>,
}

impl<F, N> AggregatingStateDescriptor<F, N>
where
    F: AggregateFunction,
    F::In: Serialize + DeserializeOwned,
{
    /// An aggregating state named `name` folding with `aggregate`.
    pub fn new(name: impl Into<String>, aggregate: F) -> Self {
        Self {
            meta: meta::<F::Acc, N>(name.into(), StateKind::Aggregating, None),
            ttl: None,
            aggregate: Arc::new(aggregate),
            _types: PhantomData,
        }
    }

    descriptor_common!();

    pub(crate) fn function(&self) -> Arc<dyn StateFunction> {
        Arc::new(AggregateAdapter(Arc::clone(&self.aggregate)))
    }
}

fn meta<V, N>(name: String, kind: StateKind, user_key_type: Option<String>) -> StateMeta {
    StateMeta {
        name,
        kind,
        namespace_type: type_name::<N>().to_string(),
        value_type: type_name::<V>().to_string(),
        user_key_type,
        ttl: None,
    }
}

/// Reduce function lifted to bytes.
struct ReduceFunction<T, F> {
    reduce: F,
    _types: PhantomData<fn() -> T>,
}

impl<T, F> StateFunction for ReduceFunction<T, F>
where
    T: Serialize + DeserializeOwned,
    F: Fn(&T, &T) -> T + Send + Sync,
{
    fn add(&self, accumulator: Option<&[u8]>, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        match accumulator {
            None => {
                // Validate before storing, so bad bytes never enter state.
                decode::<T>(input)?;
                out.extend_from_slice(input);
                Ok(())
            }
            Some(acc) => self.merge(acc, input, out),
        }
    }

    fn merge(&self, a: &[u8], b: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let reduced = (self.reduce)(&decode::<T>(a)?, &decode::<T>(b)?);
        encode_into(&reduced, out)
    }
}

/// Aggregate function lifted to bytes.
struct AggregateAdapter<F>(Arc<F>);

impl<F> StateFunction for AggregateAdapter<F>
where
    F: AggregateFunction,
    F::In: DeserializeOwned,
{
    fn add(&self, accumulator: Option<&[u8]>, input: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let acc = match accumulator {
            Some(bytes) => decode::<F::Acc>(bytes)?,
            None => self.0.create_accumulator(),
        };
        let acc = self.0.add(&decode::<F::In>(input)?, acc);
        encode_into(&acc, out)
    }

    fn merge(&self, a: &[u8], b: &[u8], out: &mut Vec<u8>) -> Result<()> {
        let merged = self.0.merge(decode::<F::Acc>(a)?, decode::<F::Acc>(b)?);
        encode_into(&merged, out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mismatch_names_state_and_types() {
        let a = ValueStateDescriptor::<u64>::new("s").meta().clone();
        let b = ValueStateDescriptor::<String>::new("s").meta().clone();
        let err = a.check_compatible(&b).unwrap_err().to_string();
        assert!(
            err.contains("'s'") && err.contains("u64") && err.contains("String"),
            "{err}"
        );
        let c = ListStateDescriptor::<u64>::new("s").meta().clone();
        assert!(matches!(
            a.check_compatible(&c),
            Err(StateError::StateKindMismatch { .. })
        ));
        assert!(a.check_compatible(&a.clone()).is_ok());
    }

    #[test]
    fn type_tags_replace_rust_type_names() {
        let meta = MapStateDescriptor::<u32, String, u8>::new("m")
            .with_value_type_tag("name")
            .with_namespace_type_tag("window")
            .with_user_key_type_tag("id")
            .meta()
            .clone();
        assert_eq!(
            (
                meta.value_type.as_str(),
                meta.namespace_type.as_str(),
                meta.user_key_type.as_deref()
            ),
            ("name", "window", Some("id"))
        );
    }

    #[test]
    fn reduce_function_folds_bytes() {
        let d = ReducingStateDescriptor::<u64>::new("sum", |a, b| a + b);
        let mut out = Vec::new();
        d.function
            .add(
                Some(&crate::codec::encode(&2u64).unwrap()),
                &crate::codec::encode(&3u64).unwrap(),
                &mut out,
            )
            .unwrap();
        assert_eq!(decode::<u64>(&out).unwrap(), 5);
        let mut out = Vec::new();
        assert!(d.function.add(None, &[0xff, 0xff], &mut out).is_err());
    }
}

//! Typed state handles over any [`KeyedStateBackend`].
//!
//! Register a state through [`KeyedStateBackendExt`] and use the returned
//! handle with the backend it came from; handles only hold the state's id,
//! their current namespace and (for value state) the default. Values go
//! through the [crate codec](crate::codec): encoding uses an inline buffer, so
//! small values never allocate on the write path.
//!
//! ```
//! # fn demo(backend: &mut dyn state_api::KeyedStateBackend) -> state_api::Result<()> {
//! use state_api::{KeyedStateBackendExt, ValueStateDescriptor};
//!
//! let counts = backend.value_state(ValueStateDescriptor::<u64>::new("counts").with_default(0))?;
//! backend.set_key("user-1")?;
//! let n = counts.value(backend)?.unwrap_or_default();
//! counts.update(backend, &(n + 1))?;
//! # Ok(()) }
//! ```

use std::marker::PhantomData;

/// Marks the types a handle or descriptor is for, without owning them.
type TypeMarker<T> = PhantomData<fn() -> T>;
use std::ops::ControlFlow;
use std::sync::Arc;

use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::backend::{KeyedStateBackend, StateId};
use crate::codec::{
    InlineBytes, ListElements, decode, encode_inline, with_encoded, write_len_prefixed,
};
use crate::descriptor::{
    AggregateFunction, AggregatingStateDescriptor, ListStateDescriptor, MapStateDescriptor,
    ReducingStateDescriptor, StateFunction, StateRegistration, ValueStateDescriptor,
};
use crate::error::{Result, StateError};
use crate::ttl::access;
use crate::ttl::{StateTtlConfig, TtlFunction};

/// Typed registration and key handling on any backend (including
/// `dyn KeyedStateBackend`).
pub trait KeyedStateBackendExt: KeyedStateBackend {
    /// Encodes `key` and makes it the current key.
    ///
    /// # Errors
    /// [`StateError::KeyGroupOutOfRange`] if the key belongs to another
    /// instance; codec errors.
    fn set_key<K: Serialize + ?Sized>(&mut self, key: &K) -> Result<()> {
        with_encoded(key, |encoded| self.set_current_key(encoded))
    }

    /// Decodes the current key.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`]; codec errors for another key type.
    fn current_key_as<K: DeserializeOwned>(&self) -> Result<K> {
        decode(self.current_key().ok_or_else(|| StateError::NoCurrentKey)?)
    }

    /// Registers (or re-opens) a value state.
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn value_state<V, N>(
        &mut self,
        descriptor: ValueStateDescriptor<V, N>,
    ) -> Result<ValueState<V, N>> {
        let id = self.register_state(StateRegistration {
            meta: descriptor.meta,
            function: None,
            ttl: descriptor.ttl.clone(),
        })?;
        Ok(ValueState {
            id,
            ttl: descriptor.ttl,
            default: descriptor.default,
            namespace: InlineBytes::new(),
            _types: PhantomData,
        })
    }

    /// Registers (or re-opens) a list state.
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn list_state<T, N>(
        &mut self,
        descriptor: ListStateDescriptor<T, N>,
    ) -> Result<ListState<T, N>> {
        let id = self.register_state(StateRegistration {
            meta: descriptor.meta,
            function: None,
            ttl: descriptor.ttl.clone(),
        })?;
        Ok(ListState {
            id,
            ttl: descriptor.ttl,
            namespace: InlineBytes::new(),
            _types: PhantomData,
        })
    }

    /// Registers (or re-opens) a map state.
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn map_state<UK, UV, N>(
        &mut self,
        descriptor: MapStateDescriptor<UK, UV, N>,
    ) -> Result<MapState<UK, UV, N>> {
        let id = self.register_state(StateRegistration {
            meta: descriptor.meta,
            function: None,
            ttl: descriptor.ttl.clone(),
        })?;
        Ok(MapState {
            id,
            ttl: descriptor.ttl,
            namespace: InlineBytes::new(),
            _types: PhantomData,
        })
    }

    /// Registers (or re-opens) a reducing state.
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn reducing_state<T, N>(
        &mut self,
        descriptor: ReducingStateDescriptor<T, N>,
    ) -> Result<ReducingState<T, N>> {
        let id = self.register_state(StateRegistration {
            meta: descriptor.meta,
            function: Some(with_ttl(descriptor.function, descriptor.ttl.as_ref())),
            ttl: descriptor.ttl.clone(),
        })?;
        Ok(ReducingState {
            id,
            ttl: descriptor.ttl,
            namespace: InlineBytes::new(),
            _types: PhantomData,
        })
    }

    /// Registers (or re-opens) an aggregating state.
    ///
    /// # Errors
    /// See [`KeyedStateBackend::register_state`].
    fn aggregating_state<F, N>(
        &mut self,
        descriptor: AggregatingStateDescriptor<F, N>,
    ) -> Result<AggregatingState<F, N>>
    where
        F: AggregateFunction,
        F::In: Serialize + DeserializeOwned,
    {
        let function = with_ttl(descriptor.function(), descriptor.ttl.as_ref());
        let id = self.register_state(StateRegistration {
            meta: descriptor.meta,
            function: Some(function),
            ttl: descriptor.ttl.clone(),
        })?;
        Ok(AggregatingState {
            id,
            ttl: descriptor.ttl,
            aggregate: descriptor.aggregate,
            namespace: InlineBytes::new(),
            _types: PhantomData,
        })
    }

    /// The keys that have an entry in `state` under `namespace`.
    ///
    /// # Errors
    /// [`StateError::UnknownState`]; codec errors for another key type.
    fn keys<K: DeserializeOwned, N: Serialize>(
        &mut self,
        state: StateId,
        namespace: &N,
    ) -> Result<Vec<K>> {
        let ns = encode_inline(namespace)?;
        let mut keys = Vec::new();
        self.for_each_key_and_namespace(state, &mut |key, key_ns| {
            if key_ns == ns.as_slice() {
                keys.push(decode(key)?);
            }
            Ok(ControlFlow::Continue(()))
        })?;
        Ok(keys)
    }

    /// Calls `function` once for every key with an entry in `state` under
    /// `namespace`, with that key set as the current key (Flink's
    /// `applyToAllKeys`, used for window clean-up). `function` may read, write
    /// and clear state. The previous current key is restored afterwards.
    ///
    /// # Errors
    /// The first error of `function`, or of iteration.
    fn apply_to_all_keys<N: Serialize>(
        &mut self,
        state: StateId,
        namespace: &N,
        mut function: impl FnMut(&mut Self) -> Result<()>,
    ) -> Result<()> {
        let ns = encode_inline(namespace)?;
        // Collect first: the function may modify the state being iterated.
        let mut keys: Vec<InlineBytes> = Vec::new();
        self.for_each_key_and_namespace(state, &mut |key, key_ns| {
            if key_ns == ns.as_slice() {
                keys.push(InlineBytes::from_slice(key));
            }
            Ok(ControlFlow::Continue(()))
        })?;
        let previous = self.current_key().map(InlineBytes::from_slice);
        let outcome = keys.iter().try_for_each(|key| {
            self.set_current_key(key)?;
            function(self)
        });
        if let Some(previous) = previous {
            self.set_current_key(&previous)?;
        }
        outcome
    }
}

impl<B: KeyedStateBackend + ?Sized> KeyedStateBackendExt for B {}

/// The fold of a state with a time to live works on stamped accumulators.
fn with_ttl(
    function: Arc<dyn StateFunction>,
    ttl: Option<&StateTtlConfig>,
) -> Arc<dyn StateFunction> {
    match ttl {
        Some(ttl) => Arc::new(TtlFunction {
            inner: function,
            ttl: ttl.clone(),
        }),
        None => function,
    }
}

fn encode_namespaces<N: Serialize>(sources: &[N]) -> Result<Vec<InlineBytes>> {
    sources.iter().map(encode_inline).collect()
}

macro_rules! namespace_methods {
    () => {
        /// The id the backend assigned to this state.
        pub fn id(&self) -> StateId {
            self.id
        }

        /// Sets the namespace (e.g. window) that following calls address.
        ///
        /// # Errors
        /// Codec errors.
        pub fn set_namespace(&mut self, namespace: &N) -> Result<()>
        where
            N: Serialize,
        {
            self.namespace = encode_inline(namespace)?;
            Ok(())
        }

        /// Removes the entry of the current key and namespace.
        ///
        /// # Errors
        /// [`StateError::NoCurrentKey`], backend errors.
        pub fn clear<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<()> {
            backend.clear(self.id, &self.namespace)
        }
    };
}

macro_rules! merge_namespaces_method {
    () => {
        /// Merges the entries of `sources` into `target` and clears the
        /// sources (merging windows).
        ///
        /// # Errors
        /// Backend or codec errors.
        pub fn merge_namespaces<B: KeyedStateBackend + ?Sized>(
            &self,
            backend: &mut B,
            target: &N,
            sources: &[N],
        ) -> Result<()>
        where
            N: Serialize,
        {
            let target = encode_inline(target)?;
            let sources = encode_namespaces(sources)?;
            let refs: Vec<&[u8]> = sources.iter().map(|s| s.as_slice()).collect();
            backend.merge_namespaces(self.id, &target, &refs)
        }
    };
}

/// One value per (key, namespace).
pub struct ValueState<V, N = crate::VoidNamespace> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    default: Option<V>,
    namespace: InlineBytes,
    _types: PhantomData<fn() -> N>,
}

impl<V: Serialize + DeserializeOwned + Clone, N> ValueState<V, N> {
    namespace_methods!();

    /// The value, or the descriptor's default (`None` if it has none).
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn value<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Option<V>> {
        let found = match &self.ttl {
            None => backend
                .get(self.id, &self.namespace)?
                .map(decode)
                .transpose()?,
            Some(ttl) => access::get(backend, ttl, self.id, &self.namespace, decode)?,
        };
        Ok(found.or_else(|| self.default.clone()))
    }

    /// Replaces the value.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn update<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, value: &V) -> Result<()> {
        match &self.ttl {
            None => with_encoded(value, |encoded| {
                backend.put(self.id, &self.namespace, encoded)
            }),
            Some(ttl) => access::put_value(backend, ttl, self.id, &self.namespace, value),
        }
    }
}

/// A list of elements per (key, namespace).
pub struct ListState<T, N = crate::VoidNamespace> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    namespace: InlineBytes,
    _types: PhantomData<fn() -> (T, N)>,
}

impl<T: Serialize + DeserializeOwned, N> ListState<T, N> {
    namespace_methods!();
    merge_namespaces_method!();

    /// The elements, in insertion order (empty when absent).
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Vec<T>> {
        if let Some(ttl) = &self.ttl {
            return access::get_list(backend, ttl, self.id, &self.namespace, decode);
        }
        match backend.get(self.id, &self.namespace)? {
            Some(bytes) => ListElements::new(bytes).map(|e| decode(e?)).collect(),
            None => Ok(Vec::new()),
        }
    }

    /// Appends one element.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, element: &T) -> Result<()> {
        with_encoded(element, |encoded| {
            if let Some(ttl) = &self.ttl {
                let framed = access::stamp_list(ttl, &[encoded]);
                return backend.list_append(self.id, &self.namespace, &framed);
            }
            let mut framed = InlineBytes::new();
            write_len_prefixed(&mut framed, encoded);
            backend.list_append(self.id, &self.namespace, &framed)
        })
    }

    /// Appends several elements in one backend call.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn add_all<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        elements: &[T],
    ) -> Result<()> {
        if elements.is_empty() {
            return Ok(());
        }
        let encoded = encode_list(elements, self.ttl.as_ref())?;
        backend.list_append(self.id, &self.namespace, &encoded)
    }

    /// Replaces the list (an empty slice clears it).
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn update<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        elements: &[T],
    ) -> Result<()> {
        if elements.is_empty() {
            return backend.clear(self.id, &self.namespace);
        }
        let encoded = encode_list(elements, self.ttl.as_ref())?;
        backend.put(self.id, &self.namespace, &encoded)
    }
}

/// The list encoding of `elements`, each stamped when the state has a
/// time to live.
// Built in a `Vec` (one allocation): building it in an `InlineBytes`
// cost about four times the instructions, since SmallVec's `Extend`
// pushes byte by byte; for a 10-element list that was more than
// RocksDB's merge of the result (callgrind, suite workload listAddAll).
fn encode_list<T: Serialize>(elements: &[T], ttl: Option<&StateTtlConfig>) -> Result<Vec<u8>> {
    if let Some(ttl) = ttl {
        let encoded = elements
            .iter()
            .map(crate::codec::encode)
            .collect::<Result<Vec<_>>>()?;
        let refs: Vec<&[u8]> = encoded.iter().map(Vec::as_slice).collect();
        return Ok(access::stamp_list(ttl, &refs));
    }
    let mut out = Vec::with_capacity(elements.len() * 10);
    for element in elements {
        with_encoded(element, |encoded| {
            write_len_prefixed(&mut out, encoded);
            Ok(())
        })?;
    }
    Ok(out)
}

/// A map of user keys to values per (key, namespace).
pub struct MapState<UK, UV, N = crate::VoidNamespace> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    namespace: InlineBytes,
    _types: TypeMarker<(UK, UV, N)>,
}

impl<UK, UV, N> MapState<UK, UV, N>
where
    UK: Serialize + DeserializeOwned,
    UV: Serialize + DeserializeOwned,
{
    namespace_methods!();

    /// The value under `user_key`.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        user_key: &UK,
    ) -> Result<Option<UV>> {
        with_encoded(user_key, |uk| match &self.ttl {
            None => backend
                .map_get(self.id, &self.namespace, uk)?
                .map(decode)
                .transpose(),
            Some(ttl) => access::map_get(backend, ttl, self.id, &self.namespace, uk, decode),
        })
    }

    /// Whether `user_key` is present.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn contains<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        user_key: &UK,
    ) -> Result<bool> {
        with_encoded(user_key, |uk| match &self.ttl {
            None => Ok(backend.map_get(self.id, &self.namespace, uk)?.is_some()),
            Some(ttl) => {
                let found =
                    access::map_get(backend, ttl, self.id, &self.namespace, uk, |_| Ok(()))?;
                Ok(found.is_some())
            }
        })
    }

    /// Inserts or replaces an entry.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn put<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        user_key: &UK,
        value: &UV,
    ) -> Result<()> {
        with_encoded(user_key, |uk| {
            with_encoded(value, |uv| match &self.ttl {
                None => backend.map_put(self.id, &self.namespace, uk, uv),
                Some(ttl) => access::map_put(backend, ttl, self.id, &self.namespace, uk, uv),
            })
        })
    }

    /// Removes an entry.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn remove<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        user_key: &UK,
    ) -> Result<()> {
        with_encoded(user_key, |uk| {
            backend.map_remove(self.id, &self.namespace, uk)
        })
    }

    /// All entries, in ascending order of the encoded user keys.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn entries<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Vec<(UK, UV)>> {
        let mut entries = Vec::new();
        self.for_each_encoded(backend, |uk, uv| {
            entries.push((decode(uk)?, decode(uv)?));
            Ok(())
        })?;
        Ok(entries)
    }

    /// All user keys, in ascending order of their encoding (values are not
    /// decoded).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn keys<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Vec<UK>> {
        let mut keys = Vec::new();
        self.for_each_encoded(backend, |uk, _| {
            keys.push(decode(uk)?);
            Ok(())
        })?;
        Ok(keys)
    }

    /// All values, in ascending order of their user keys' encoding (keys are
    /// not decoded).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn values<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Vec<UV>> {
        let mut values = Vec::new();
        self.for_each_encoded(backend, |_, uv| {
            values.push(decode(uv)?);
            Ok(())
        })?;
        Ok(values)
    }

    /// Visits the live entries' encoded user keys and values (without TTL
    /// stamps).
    fn for_each_encoded<B: KeyedStateBackend + ?Sized>(
        &self,
        backend: &mut B,
        mut visit: impl FnMut(&[u8], &[u8]) -> Result<()>,
    ) -> Result<()> {
        if let Some(ttl) = &self.ttl {
            return access::map_entries(backend, ttl, self.id, &self.namespace, visit);
        }
        backend.map_for_each(self.id, &self.namespace, &mut |uk, uv| {
            visit(uk, uv)?;
            Ok(ControlFlow::Continue(()))
        })
    }

    /// Whether the map has no entry.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn is_empty<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<bool> {
        if let Some(ttl) = &self.ttl {
            let mut empty = true;
            access::map_entries(backend, ttl, self.id, &self.namespace, |_, _| {
                empty = false;
                Ok(())
            })?;
            return Ok(empty);
        }
        let mut empty = true;
        backend.map_for_each(self.id, &self.namespace, &mut |_, _| {
            empty = false;
            Ok(ControlFlow::Break(()))
        })?;
        Ok(empty)
    }
}

/// A value per (key, namespace) that added values fold into with a reduce
/// function.
pub struct ReducingState<T, N = crate::VoidNamespace> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    namespace: InlineBytes,
    _types: PhantomData<fn() -> (T, N)>,
}

impl<T: Serialize + DeserializeOwned, N> ReducingState<T, N> {
    namespace_methods!();
    merge_namespaces_method!();

    /// The reduced value.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Option<T>> {
        match &self.ttl {
            None => backend
                .get(self.id, &self.namespace)?
                .map(decode)
                .transpose(),
            Some(ttl) => access::get(backend, ttl, self.id, &self.namespace, decode),
        }
    }

    /// Folds `value` in.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, value: &T) -> Result<()> {
        with_encoded(value, |encoded| {
            backend.accumulate(self.id, &self.namespace, encoded)
        })
    }
}

/// An accumulator per (key, namespace) that inputs fold into with an
/// [`AggregateFunction`].
pub struct AggregatingState<F: AggregateFunction, N = crate::VoidNamespace> {
    id: StateId,
    ttl: Option<StateTtlConfig>,
    aggregate: Arc<F>,
    namespace: InlineBytes,
    _types: PhantomData<fn() -> N>,
}

impl<F, N> AggregatingState<F, N>
where
    F: AggregateFunction,
    F::In: Serialize,
{
    namespace_methods!();
    merge_namespaces_method!();

    /// The aggregate's result, or `None` when nothing was added.
    ///
    /// # Errors
    /// [`StateError::NoCurrentKey`], backend or codec errors.
    pub fn get<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B) -> Result<Option<F::Out>> {
        let accumulator = match &self.ttl {
            None => backend
                .get(self.id, &self.namespace)?
                .map(decode::<F::Acc>)
                .transpose()?,
            Some(ttl) => access::get(backend, ttl, self.id, &self.namespace, decode::<F::Acc>)?,
        };
        Ok(accumulator.map(|acc| self.aggregate.get_result(&acc)))
    }

    /// Folds `input` in.
    ///
    /// # Errors
    /// As [`get`](Self::get).
    pub fn add<B: KeyedStateBackend + ?Sized>(&self, backend: &mut B, input: &F::In) -> Result<()> {
        with_encoded(input, |encoded| {
            backend.accumulate(self.id, &self.namespace, encoded)
        })
    }
}

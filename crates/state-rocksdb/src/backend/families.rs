//! The column family of each state, resolved once per registration.
//!
//! The `rocksdb` crate hands out a column family by name (a lookup in a
//! string-keyed map); its handles borrow the DB. [`ColumnFamilies`] keeps a
//! reference to the DB together with the handles borrowed from it (a
//! self-referential pair built safely by `self_cell`), so an operation
//! indexes a vector by state id instead of looking a name up.

use std::sync::Arc;

use rocksdb::ColumnFamily;
use state_api::{Result, StateError, StateId};

use super::{BACKEND_NAME, Db};

/// Handles in state-id order.
type Handles<'db> = Vec<&'db ColumnFamily>;

self_cell::self_cell!(
    /// The DB and the handles borrowed from it.
    struct Resolved {
        owner: Arc<Db>,

        #[covariant]
        dependent: Handles,
    }
);

/// The handle of every state's column family, in state-id order.
///
/// It holds a reference to the DB: [`release`](Self::release) it before
/// the DB must be held exclusively (creating a column family), then
/// [`resolve`](Self::resolve) again.
#[derive(Default)]
pub(crate) struct ColumnFamilies {
    resolved: Option<Resolved>,
}

impl ColumnFamilies {
    /// Resolves the column families `names` (in state-id order) of `db`.
    ///
    /// # Errors
    /// [`StateError::Backend`] when one of them does not exist.
    pub(crate) fn resolve<'n>(
        db: &Arc<Db>,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<Self> {
        let names: Vec<&str> = names.into_iter().collect();
        let resolved = Resolved::try_new(Arc::clone(db), |db| {
            names
                .iter()
                .map(|name| {
                    db.cf_handle(name)
                        .ok_or_else(|| missing(&format!("'{name}'")))
                })
                .collect::<Result<Handles<'_>>>()
        })?;
        Ok(Self {
            resolved: Some(resolved),
        })
    }

    /// Drops the handles and the reference to the DB.
    pub(crate) fn release(&mut self) {
        self.resolved = None;
    }

    /// The column family of state `id`.
    ///
    /// # Errors
    /// [`StateError::Backend`] for an id without a column family, or when
    /// the handles are released (a registration that failed to resolve).
    #[inline]
    pub(crate) fn get(&self, id: StateId) -> Result<&ColumnFamily> {
        self.by_index(id.0 as usize)
    }

    /// The column family of the state at `index` (in state-id order).
    ///
    /// # Errors
    /// As [`get`](Self::get).
    #[inline]
    pub(crate) fn by_index(&self, index: usize) -> Result<&ColumnFamily> {
        self.resolved
            .as_ref()
            .and_then(|resolved| resolved.borrow_dependent().get(index).copied())
            .ok_or_else(|| missing(&format!("of state {index}")))
    }
}

fn missing(what: &str) -> StateError {
    StateError::Backend {
        backend: BACKEND_NAME,
        source: format!("column family {what} is missing").into(),
    }
}

//! [`State`]: shared state a worker injects into its handlers (a database pool, a config, a
//! client of another service), the way axum's `State<T>` does; [`States`] holds it.
//!
//! A free-function handler asks for it with a parameter (`State(db): State<Db>`); the worker is
//! given it when it is built (`Worker::new(&conn).state(db)`, or one handler only:
//! `balance::handler().state(db)`). Each request gets a clone of the value (so hold big or shared
//! things in an `Arc`, or in a type that is one inside, as connection pools are). The worker
//! checks when it starts that every handler's states were given ([`Error::Config`] otherwise),
//! so a missing state is never a per-request surprise. A service implementation
//! (`#[lepus::service]`) holds its state itself (`&self`) and needs none of this.
//!
//! States are kept by type: one value per type per handler. Two workers (or two handlers) in one
//! process with different values of the same type do not see each other's.
//!
//! [`Error::Config`]: crate::Error::Config

use std::any::{Any, TypeId};
use std::sync::Arc;

/// A handler parameter that receives shared state of type `T`, given to the worker when it is
/// built ([`Worker::state`](crate::Worker::state) or
/// [`Handler::state`](crate::Handler::state)).
///
/// ```
/// # use std::{collections::HashMap, sync::Arc};
/// # type Db = Arc<HashMap<String, u64>>;
/// #[lepus::rpc(queue = "accounts")]
/// async fn balance(lepus::State(db): lepus::State<Db>, account: String) -> u64 {
///     db.get(&account).copied().unwrap_or(0)
/// }
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// // A worker is given the state once (`Worker::new(&conn).state(db)`); a test gives a fake:
/// let db: Db = Arc::new(HashMap::from([("alice".to_owned(), 500)]));
/// let cx = lepus::Context::new().with_state(db);
/// let cents = lepus::call_local_with::<balance>(("alice".into(),), cx).await;
/// assert_eq!(cents.ok(), Some(500));
/// # }
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct State<T>(pub T);

impl<T> std::ops::Deref for State<T> {
    type Target = T;

    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T> std::ops::DerefMut for State<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// One state a handler needs, named for the error when it is missing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Needed {
    pub(crate) type_id: TypeId,
    pub(crate) type_name: &'static str,
}

impl Needed {
    /// The need for a `State<T>`.
    pub fn of<T: Any>() -> Self {
        Needed {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
        }
    }

    /// The type's name, as `std::any::type_name` gives it.
    pub fn type_name(&self) -> &'static str {
        self.type_name
    }
}

/// A state a handler asked for and nobody gave (a local run without it; workers check first).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("no state of type {type_name} was given to the worker (Worker::state or Handler::state)")]
pub struct MissingState {
    /// The type that was asked for.
    pub type_name: &'static str,
}

/// The states of one handler, by type: few entries (one per type a service shares), so a
/// vector scanned by `TypeId` beats hashing. Immutable once the worker starts; shared by every
/// request's [`Context`](crate::Context) through an `Arc`.
#[derive(Clone, Default)]
pub(crate) struct States {
    entries: Vec<Entry>,
}

#[derive(Clone)]
struct Entry {
    type_id: TypeId,
    type_name: &'static str,
    /// The value; every request clones the `T` out of it.
    value: Arc<dyn Any + Send + Sync>,
}

impl std::fmt::Debug for States {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.entries.iter().map(|e| e.type_name))
            .finish()
    }
}

impl States {
    /// Adds `value`, replacing a value of the same type.
    pub(crate) fn insert<T: Clone + Send + Sync + 'static>(&mut self, value: T) {
        let entry = Entry {
            type_id: TypeId::of::<T>(),
            type_name: std::any::type_name::<T>(),
            value: Arc::new(value),
        };
        match self.entries.iter_mut().find(|e| e.type_id == entry.type_id) {
            Some(existing) => *existing = entry,
            None => self.entries.push(entry),
        }
    }

    /// The value of type `T`, if given.
    pub(crate) fn get<T: 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.entries
            .iter()
            .find(|e| e.type_id == id)
            .and_then(|e| e.value.downcast_ref::<T>())
    }

    /// True when a value of this type was given.
    pub(crate) fn has(&self, needed: &Needed) -> bool {
        self.entries.iter().any(|e| e.type_id == needed.type_id)
    }

    /// These states, with `fallback`'s for the types these do not have (a handler's own
    /// states win over its worker's).
    pub(crate) fn over(&self, fallback: &States) -> States {
        let mut merged = self.clone();
        for entry in &fallback.entries {
            if !merged.entries.iter().any(|e| e.type_id == entry.type_id) {
                merged.entries.push(entry.clone());
            }
        }
        merged
    }

    /// The first of `needs` these states lack.
    pub(crate) fn first_missing(&self, needs: &[Needed]) -> Option<Needed> {
        needs.iter().find(|n| !self.has(n)).copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_are_found_by_type_and_the_handlers_own_win() {
        let mut worker = States::default();
        worker.insert(7u32);
        worker.insert(String::from("worker"));
        let mut own = States::default();
        own.insert(String::from("handler"));
        let merged = own.over(&worker);
        assert_eq!(merged.get::<u32>(), Some(&7));
        assert_eq!(merged.get::<String>().map(String::as_str), Some("handler"));
        assert_eq!(merged.get::<u64>(), None);
        assert!(merged.first_missing(&[Needed::of::<u32>()]).is_none());
        assert_eq!(
            merged.first_missing(&[Needed::of::<u32>(), Needed::of::<u64>()]),
            Some(Needed::of::<u64>())
        );
        let mut replaced = merged.clone();
        replaced.insert(8u32);
        assert_eq!(replaced.get::<u32>(), Some(&8));
        assert_eq!(merged.get::<u32>(), Some(&7));
    }
}

//! Typed values: the application state of a server ([`State`](super::State))
//! and the per-socket extensions ([`Socket::extensions`](super::Socket::extensions)).

use std::{
    any::{Any, TypeId},
    sync::{Arc, Mutex},
};

type Value = Arc<dyn Any + Send + Sync>;

/// Values by type. Lists are short (a handful of types), so a linear scan beats
/// hashing and an empty map costs no allocation.
#[derive(Clone, Default)]
pub(crate) struct TypeMap(Vec<(TypeId, Value)>);

impl TypeMap {
    /// Puts `value`, returning the value of the same type it replaces.
    pub(crate) fn insert<T: Send + Sync + 'static>(&mut self, value: T) -> Option<Value> {
        let id = TypeId::of::<T>();
        let value: Value = Arc::new(value);
        match self.0.iter_mut().find(|(k, _)| *k == id) {
            Some((_, v)) => Some(std::mem::replace(v, value)),
            None => {
                self.0.push((id, value));
                None
            }
        }
    }

    /// The shared value of type `T`.
    pub(crate) fn get<T: Send + Sync + 'static>(&self) -> Option<Arc<T>> {
        let id = TypeId::of::<T>();
        let (_, v) = self.0.iter().find(|(k, _)| *k == id)?;
        v.clone().downcast::<T>().ok()
    }

    fn remove<T: Send + Sync + 'static>(&mut self) -> Option<Value> {
        let id = TypeId::of::<T>();
        let at = self.0.iter().position(|(k, _)| *k == id)?;
        Some(self.0.swap_remove(at).1)
    }
}

impl std::fmt::Debug for TypeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} value(s)", self.0.len())
    }
}

/// Takes `T` out of a value no one else holds, else clones it. Runs with no lock
/// held: `Clone` and `Drop` of `T` are user code.
fn unwrap_or_clone<T: Clone + Send + Sync + 'static>(value: Value) -> Option<T> {
    let value = value.downcast::<T>().ok()?;
    Some(Arc::try_unwrap(value).unwrap_or_else(|shared| (*shared).clone()))
}

/// Typed per-socket state, Node's `socket.data` with a type per value: one value
/// of each type, kept as long as the socket. Read with [`Extensions::get`] or
/// the [`Extension`](super::Extension) extractor.
///
/// ```no_run
/// # use rsio::prelude::*;
/// #[derive(Clone)]
/// struct User { name: String }
/// # let io = Server::builder().build();
/// io.ns("/", |socket: Socket| async move {
///     socket.extensions().insert(User { name: "ann".into() });
///     socket.on("whoami", |Extension(user): Extension<User>, ack: AckSender| async move {
///         let _ = ack.send(&user.name);
///     });
/// });
/// ```
///
/// The lock inside is held only to find or swap a value: `Clone` and `Drop` of
/// the values run after it is released.
#[derive(Default)]
pub struct Extensions(Mutex<TypeMap>);

impl Extensions {
    fn map(&self) -> std::sync::MutexGuard<'_, TypeMap> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Stores `value`, returning the value of the same type it replaces.
    pub fn insert<T: Clone + Send + Sync + 'static>(&self, value: T) -> Option<T> {
        let old = self.map().insert(value);
        old.and_then(unwrap_or_clone::<T>)
    }

    /// A copy of the value of type `T`.
    pub fn get<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        let shared = self.map().get::<T>()?;
        Some((*shared).clone())
    }

    /// Takes out the value of type `T`.
    pub fn remove<T: Clone + Send + Sync + 'static>(&self) -> Option<T> {
        let old = self.map().remove::<T>();
        old.and_then(unwrap_or_clone::<T>)
    }

    /// Whether a value of type `T` is stored.
    pub fn contains<T: Send + Sync + 'static>(&self) -> bool {
        self.map().get::<T>().is_some()
    }

    /// Drops every value, unlocked (their `Drop` is user code).
    pub(crate) fn clear(&self) {
        let values = std::mem::take(&mut *self.map());
        drop(values);
    }
}

impl std::fmt::Debug for Extensions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Extensions").field(&*self.map()).finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_value_per_type() {
        let ext = Extensions::default();
        assert_eq!(ext.get::<u32>(), None);
        assert_eq!(ext.insert(1u32), None);
        assert_eq!(ext.insert("a".to_string()), None);
        assert_eq!(ext.insert(2u32), Some(1));
        assert_eq!(ext.get::<u32>(), Some(2));
        assert_eq!(ext.get::<String>().as_deref(), Some("a"));
        assert!(ext.contains::<String>());
        assert_eq!(ext.remove::<String>().as_deref(), Some("a"));
        assert!(!ext.contains::<String>());
        ext.clear();
        assert_eq!(ext.get::<u32>(), None);
    }

    /// A value's `Clone` may use the same extensions: no lock is held then.
    #[test]
    fn clone_runs_unlocked() {
        struct Reentrant(Arc<Extensions>);
        impl Clone for Reentrant {
            fn clone(&self) -> Self {
                let _ = self.0.contains::<u8>();
                Reentrant(self.0.clone())
            }
        }
        let ext = Arc::new(Extensions::default());
        ext.insert(Reentrant(ext.clone()));
        assert!(ext.get::<Reentrant>().is_some());
        ext.clear();
    }
}

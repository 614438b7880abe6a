//! [`KeyedMap`]: per-key state made on first use and kept, shared by the layers that keep
//! state per model or endpoint (circuit breaker, rate limiter).

use std::collections::HashMap;
use std::sync::{Arc, PoisonError, RwLock};

/// Values by string key, made on first use and kept. A lookup of an existing key takes a
/// read lock and allocates nothing; only a new key takes the write lock and allocates.
/// Keys are never evicted, so their number must stay bounded (models, endpoints).
pub(crate) struct KeyedMap<T> {
    by_key: RwLock<HashMap<Arc<str>, Arc<T>>>,
}

impl<T> Default for KeyedMap<T> {
    fn default() -> Self {
        Self {
            by_key: RwLock::default(),
        }
    }
}

impl<T> KeyedMap<T> {
    /// The value of `key`, if it was ever made.
    pub(crate) fn get(&self, key: &str) -> Option<Arc<T>> {
        let by_key = self.by_key.read().unwrap_or_else(PoisonError::into_inner);
        by_key.get(key).map(Arc::clone)
    }

    /// The value of `key`, made with `make` (given the shared key) if new.
    pub(crate) fn get_or_insert_with(&self, key: &str, make: impl FnOnce(Arc<str>) -> T) -> Arc<T> {
        if let Some(value) = self.get(key) {
            return value;
        }
        let mut by_key = self.by_key.write().unwrap_or_else(PoisonError::into_inner);
        if let Some(value) = by_key.get(key) {
            return Arc::clone(value);
        }
        let key: Arc<str> = Arc::from(key);
        let value = Arc::new(make(Arc::clone(&key)));
        by_key.insert(key, Arc::clone(&value));
        value
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_is_made_once_per_key() {
        let map = KeyedMap::default();
        let mut made = 0;
        let first = map.get_or_insert_with("a", |key| {
            made += 1;
            key.len()
        });
        let again = map.get_or_insert_with("a", |_| unreachable!("kept"));
        assert!(Arc::ptr_eq(&first, &again));
        assert_eq!(made, 1);
        assert!(map.get("b").is_none());
        assert_eq!(*map.get_or_insert_with("bb", |key| key.len()), 2);
    }
}

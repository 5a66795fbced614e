//! Async locks by key, created on first use and removed once no one holds or waits for them:
//! the manager's "one reconcile per (driver, resource) at a time" and the registry's "loads
//! of one file in order" are the same mechanism.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Arc;

use tokio::sync::OwnedMutexGuard;

/// A set of locks, one per key.
pub struct KeyedLocks<K> {
    map: std::sync::Mutex<HashMap<K, Arc<tokio::sync::Mutex<()>>>>,
}

impl<K> Default for KeyedLocks<K> {
    fn default() -> Self {
        KeyedLocks {
            map: std::sync::Mutex::default(),
        }
    }
}

/// Holds one key's lock; dropping it releases the lock (and forgets the key when no one else
/// wants it).
pub struct KeyGuard<K: Eq + Hash> {
    locks: Arc<KeyedLocks<K>>,
    key: K,
    guard: Option<OwnedMutexGuard<()>>,
}

impl<K: Eq + Hash + Clone> KeyedLocks<K> {
    /// Waits for `key`'s lock. Holders of other keys never wait for each other.
    pub async fn lock(self: Arc<Self>, key: K) -> KeyGuard<K> {
        let mutex = self
            .map
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(key.clone())
            .or_default()
            .clone();
        let guard = mutex.lock_owned().await;
        KeyGuard {
            locks: self,
            key,
            guard: Some(guard),
        }
    }

    /// How many keys are locked or waited for now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    /// Whether no key is locked or waited for.
    #[cfg(test)]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<K: Eq + Hash> Drop for KeyGuard<K> {
    fn drop(&mut self) {
        self.guard.take();
        let mut map = self.locks.map.lock().unwrap_or_else(|p| p.into_inner());
        if map
            .get(&self.key)
            .is_some_and(|m| Arc::strong_count(m) == 1)
        {
            map.remove(&self.key);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn key_locks_serialise_and_clean_up() {
        let locks = Arc::new(KeyedLocks::<String>::default());
        let a = locks.clone().lock("k".into()).await;
        let waiting = tokio::spawn(locks.clone().lock("k".into()));
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(!waiting.is_finished());
        drop(a);
        let b = waiting.await.unwrap();
        drop(b);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn other_keys_do_not_wait() {
        let locks = Arc::new(KeyedLocks::<String>::default());
        let _a = locks.clone().lock("a".into()).await;
        let b = tokio::time::timeout(Duration::from_secs(1), locks.clone().lock("b".into())).await;
        assert!(b.is_ok());
    }
}

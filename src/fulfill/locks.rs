//! Per-session in-process mutexes. A second caller for the same session waits
//! for the first, then sees its outcome; callers for different sessions never
//! wait for each other. An entry lives only while someone holds or awaits it,
//! so the map holds at most one entry per session in flight.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

#[derive(Default)]
pub struct SessionLocks {
    map: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
}

/// Holds one session's lock; dropping it releases the lock and, when nobody
/// else wants it, removes the map entry.
pub struct SessionGuard {
    map: Arc<Mutex<HashMap<String, Arc<AsyncMutex<()>>>>>,
    id: String,
    guard: Option<OwnedMutexGuard<()>>,
}

impl SessionLocks {
    pub async fn lock(&self, id: &str) -> SessionGuard {
        let entry = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            map.entry(id.to_string()).or_default().clone()
        };
        let guard = entry.lock_owned().await;
        SessionGuard {
            map: self.map.clone(),
            id: id.to_string(),
            guard: Some(guard),
        }
    }

    /// Sessions with a holder or waiter right now.
    pub fn len(&self) -> usize {
        self.map.lock().unwrap_or_else(|p| p.into_inner()).len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Drop for SessionGuard {
    fn drop(&mut self) {
        let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
        // Release first: the guard owns one reference to the mutex.
        drop(self.guard.take());
        // Every other reference is taken under the map lock, so a count of one
        // (the map's own) means nobody holds or awaits this session.
        if map.get(&self.id).is_some_and(|m| Arc::strong_count(m) == 1) {
            map.remove(&self.id);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serialises_one_session_and_forgets_it_afterwards() {
        let locks = Arc::new(SessionLocks::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let max_inside = Arc::new(AtomicUsize::new(0));
        let mut tasks = Vec::new();
        for _ in 0..32 {
            let (locks, inside, max_inside) = (locks.clone(), inside.clone(), max_inside.clone());
            tasks.push(tokio::spawn(async move {
                let _g = locks.lock("cs_test_same").await;
                let now = inside.fetch_add(1, Ordering::SeqCst) + 1;
                max_inside.fetch_max(now, Ordering::SeqCst);
                tokio::task::yield_now().await;
                inside.fetch_sub(1, Ordering::SeqCst);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
        assert!(locks.is_empty());
    }

    #[tokio::test]
    async fn different_sessions_do_not_block_each_other() {
        let locks = SessionLocks::default();
        let _a = locks.lock("cs_test_a").await;
        let _b = locks.lock("cs_test_b").await;
        assert_eq!(locks.len(), 2);
        drop(_a);
        assert_eq!(locks.len(), 1);
    }
}

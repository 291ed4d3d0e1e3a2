//! `cache_affinity` (single-node mode): a chat whose history (the messages before the last
//! two) was seen before goes back to the instance that served it, where its prefix is likely
//! still cached — if that instance is listed and has room; otherwise the least loaded one,
//! which is remembered. The memory is an LRU of `cache_size` histories.

use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use serde_json::Value;

/// History hash → (instance id, last use), and the use clock.
type Table = (HashMap<u64, (u64, u64)>, u64);

/// The remembered histories.
pub struct Affinity {
    cap: usize,
    map: Mutex<Table>,
}

impl Affinity {
    pub fn new(cap: usize) -> Self {
        Affinity {
            cap: cap.max(1),
            map: Mutex::new((HashMap::new(), 0)),
        }
    }

    /// The key of a chat body: the hash of `messages` without the last two; `None` for other
    /// bodies or chats of two messages or fewer (nothing to reuse).
    pub fn key(body: &Value) -> Option<u64> {
        let msgs = body.get("messages")?.as_array()?;
        if msgs.len() <= 2 {
            return None;
        }
        let mut h = DefaultHasher::new();
        for m in &msgs[..msgs.len() - 2] {
            m.to_string().hash(&mut h);
        }
        Some(h.finish())
    }

    /// The instance remembered for `key`.
    pub fn get(&self, key: u64) -> Option<u64> {
        let mut g = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (map, clock) = &mut *g;
        *clock += 1;
        let now = *clock;
        map.get_mut(&key).map(|e| {
            e.1 = now;
            e.0
        })
    }

    /// Remembers `instance` for `key`, forgetting the least recently used when full.
    pub fn put(&self, key: u64, instance: u64) {
        let mut g = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let (map, clock) = &mut *g;
        *clock += 1;
        if map.len() >= self.cap && !map.contains_key(&key) {
            if let Some(oldest) = map.iter().min_by_key(|(_, (_, t))| *t).map(|(k, _)| *k) {
                map.remove(&oldest);
            }
        }
        map.insert(key, (instance, *clock));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn history_without_the_last_two_messages_is_the_key() {
        let a = json!({"messages": [{"role":"system","content":"s"},{"role":"user","content":"q1"},
                                     {"role":"assistant","content":"a1"},{"role":"user","content":"q2"}]});
        let b = json!({"messages": [{"role":"system","content":"s"},{"role":"user","content":"q1"},
                                     {"role":"assistant","content":"other"},{"role":"user","content":"q3"}]});
        assert_eq!(Affinity::key(&a), Affinity::key(&b));
        assert!(Affinity::key(&json!({"messages": [{"role":"user","content":"x"}]})).is_none());
        assert!(Affinity::key(&json!({"prompt": "x"})).is_none());
    }

    #[test]
    fn lru_forgets_the_oldest() {
        let a = Affinity::new(2);
        a.put(1, 10);
        a.put(2, 20);
        assert_eq!(a.get(1), Some(10));
        a.put(3, 30);
        assert_eq!(a.get(2), None);
        assert_eq!(a.get(1), Some(10));
        assert_eq!(a.get(3), Some(30));
    }
}

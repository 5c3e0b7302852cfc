//! A bounded cache of supplier reads. Entries are fresh for their TTL; past
//! it they are kept (up to [`STALE_LIMIT`]) only to answer while the
//! supplier is unavailable, marked stale. Our own writes invalidate the
//! entries they change.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// The oldest copy ever served while a supplier is down.
pub const STALE_LIMIT: Duration = Duration::from_secs(24 * 3600);

pub enum Lookup {
    Fresh(Arc<Vec<Value>>),
    /// Past its TTL: usable only when the supplier cannot answer.
    Stale(Arc<Vec<Value>>),
    Miss,
}

type Entry = (Instant, Arc<Vec<Value>>);

pub struct Cache {
    max: usize,
    map: Mutex<HashMap<String, Entry>>,
}

impl Cache {
    pub fn new(max: usize) -> Cache {
        Cache {
            max: max.max(1),
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(&self, key: &str, ttl: Duration) -> Lookup {
        let g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        match g.get(key) {
            Some((at, v)) if at.elapsed() <= ttl => Lookup::Fresh(v.clone()),
            Some((at, v)) if at.elapsed() <= STALE_LIMIT => Lookup::Stale(v.clone()),
            _ => Lookup::Miss,
        }
    }

    pub fn put(&self, key: String, value: Arc<Vec<Value>>) {
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        if g.len() >= self.max && !g.contains_key(&key) {
            g.retain(|_, (at, _)| at.elapsed() <= STALE_LIMIT);
            if g.len() >= self.max {
                if let Some(oldest) = g
                    .iter()
                    .min_by_key(|(_, (at, _))| *at)
                    .map(|(k, _)| k.clone())
                {
                    g.remove(&oldest);
                }
            }
        }
        g.insert(key, (Instant::now(), value));
    }

    /// The newest copy of a resource matching `pred` among the entries under
    /// `prefix`, and whether it is still fresh (within `ttl`).
    pub fn find(
        &self,
        prefix: &str,
        ttl: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<(Value, bool)> {
        let g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        g.iter()
            .filter(|(k, (at, _))| k.starts_with(prefix) && at.elapsed() <= STALE_LIMIT)
            .filter_map(|(_, (at, list))| list.iter().find(|v| pred(v)).map(|v| (*at, v)))
            .max_by_key(|(at, _)| *at)
            .map(|(at, v)| (v.clone(), at.elapsed() <= ttl))
    }

    /// Drops every entry whose key starts with `prefix`.
    pub fn invalidate(&self, prefix: &str) {
        let mut g = self.map.lock().unwrap_or_else(|p| p.into_inner());
        g.retain(|k, _| !k.starts_with(prefix));
    }

    pub fn len(&self) -> usize {
        self.map.lock().map(|g| g.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounded_fresh_then_stale_and_invalidated_by_prefix() {
        let c = Cache::new(2);
        c.put("a|1".into(), Arc::new(vec![Value::Null]));
        assert!(matches!(
            c.get("a|1", Duration::from_secs(5)),
            Lookup::Fresh(_)
        ));
        assert!(matches!(c.get("a|1", Duration::ZERO), Lookup::Stale(_)));
        c.put("b".into(), Arc::new(vec![]));
        c.put("c".into(), Arc::new(vec![]));
        assert_eq!(c.len(), 2);
        c.invalidate("c");
        assert!(matches!(c.get("c", Duration::from_secs(5)), Lookup::Miss));
    }
}

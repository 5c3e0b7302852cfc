//! The index of active Consents every request's access decision reads:
//! keyed by actor, purpose and proxy NHS number, so a decision looks up the
//! few rules that can apply instead of scanning. Kept in step with storage by
//! the service (every committed Consent write is applied before its response
//! is sent) and, for other instances on one database, by a refresh from the
//! Consent history every `consent.refresh_ms`.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use super::rule::{Actor, Kind, ProxyGrant, Rule, Subject};
use crate::model::ResourceType;

/// One patient a proxy may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proxied {
    pub patient: String,
    pub grant: ProxyGrant,
}

impl Proxied {
    /// Whether the grant reaches `ty` for reading (`write`: creating or updating).
    pub fn covers(&self, ty: ResourceType, write: bool) -> bool {
        (!write || self.grant.write) && self.grant.types.as_ref().is_none_or(|t| t.contains(&ty))
    }
}

#[derive(Default)]
struct Inner {
    /// Active rules by Consent id.
    rules: HashMap<String, Rule>,
    /// The newest version applied per Consent id (older ones arriving late
    /// are ignored).
    versions: HashMap<String, i64>,
    by_actor: HashMap<Actor, HashSet<String>>,
    by_purpose: HashMap<String, HashSet<String>>,
    /// Data-sharing Consents with a provision that applies to every caller.
    open: HashSet<String>,
    by_proxy: HashMap<String, HashSet<String>>,
}

struct Cached {
    generation: u64,
    /// Epoch ms after which a period boundary may change the answer.
    until: Option<i64>,
    denied: Arc<Vec<String>>,
}

/// Active Consents, indexed for per-request decisions.
#[derive(Default)]
pub struct ConsentIndex {
    inner: RwLock<Inner>,
    generation: AtomicU64,
    cache: Mutex<HashMap<Subject, Cached>>,
}

const CACHE_ENTRIES: usize = 4096;

pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

fn remove_key<K: std::hash::Hash + Eq>(m: &mut HashMap<K, HashSet<String>>, k: &K, id: &str) {
    if let Some(s) = m.get_mut(k) {
        s.remove(id);
        if s.is_empty() {
            m.remove(k);
        }
    }
}

impl Inner {
    fn remove(&mut self, id: &str) {
        let Some(rule) = self.rules.remove(id) else {
            return;
        };
        if let Some(n) = &rule.sharing {
            let (mut actors, mut purposes, mut open) = (Vec::new(), Vec::new(), false);
            n.keys(&mut actors, &mut purposes, &mut open);
            for a in &actors {
                remove_key(&mut self.by_actor, a, id);
            }
            for p in &purposes {
                remove_key(&mut self.by_purpose, p, id);
            }
            self.open.remove(id);
        }
        if let Kind::Proxy { proxy_nhs } = &rule.kind {
            remove_key(&mut self.by_proxy, proxy_nhs, id);
        }
    }

    fn insert(&mut self, id: &str, rule: Rule) {
        if let Some(n) = &rule.sharing {
            let (mut actors, mut purposes, mut open) = (Vec::new(), Vec::new(), false);
            n.keys(&mut actors, &mut purposes, &mut open);
            for a in actors {
                self.by_actor.entry(a).or_default().insert(id.to_owned());
            }
            for p in purposes {
                self.by_purpose.entry(p).or_default().insert(id.to_owned());
            }
            if open {
                self.open.insert(id.to_owned());
            }
        }
        if let Kind::Proxy { proxy_nhs } = &rule.kind {
            self.by_proxy
                .entry(proxy_nhs.clone())
                .or_default()
                .insert(id.to_owned());
        }
        self.rules.insert(id.to_owned(), rule);
    }
}

impl ConsentIndex {
    pub fn new() -> ConsentIndex {
        ConsentIndex::default()
    }

    /// Applies the current state of Consent `id`: `None` (deleted), or its
    /// content. Only `active` enforceable Consents stay in the index.
    pub fn apply(&self, id: &str, version: i64, content: Option<&serde_json::Value>) {
        let rule = content
            .and_then(|c| super::rule::parse(c).ok())
            .filter(|r| r.active && matches!(r.kind, Kind::DataSharing | Kind::Proxy { .. }));
        let mut inner = self.inner.write().unwrap_or_else(|e| e.into_inner());
        if inner.versions.get(id).is_some_and(|v| *v > version) {
            return;
        }
        inner.versions.insert(id.to_owned(), version);
        if rule.is_none() && !inner.rules.contains_key(id) {
            return;
        }
        inner.remove(id);
        if let Some(r) = rule {
            inner.insert(id, r);
        }
        self.generation.fetch_add(1, Ordering::Release);
        drop(inner);
        self.cache.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }

    /// Applies a stored Consent version (a deletion marker removes it).
    pub fn apply_stored(&self, s: &crate::model::StoredResource) {
        let content = s
            .content
            .as_deref()
            .and_then(|c| serde_json::from_str::<serde_json::Value>(c).ok());
        self.apply(s.id.as_str(), s.version, content.as_ref());
    }

    /// How many rules are in force (metrics, tests).
    pub fn len(&self) -> usize {
        self.inner.read().map(|i| i.rules.len()).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The patients whose data-sharing Consent denies `s` now (sorted).
    pub fn denied(&self, s: &Subject) -> Arc<Vec<String>> {
        let now = now_ms();
        let generation = self.generation.load(Ordering::Acquire);
        if let Some(c) = self
            .cache
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(s)
            .filter(|c| c.generation == generation && c.until.is_none_or(|u| now < u))
        {
            return c.denied.clone();
        }
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let mut candidates: HashSet<&String> = inner.open.iter().collect();
        let mut look = |a: Actor| {
            if let Some(ids) = inner.by_actor.get(&a) {
                candidates.extend(ids.iter());
            }
        };
        if let Some(c) = &s.client {
            look(Actor::Client(c.clone()));
        }
        if let Some(o) = &s.ods {
            look(Actor::Ods(o.clone()));
        }
        for p in &s.purposes {
            if let Some(ids) = inner.by_purpose.get(p) {
                candidates.extend(ids.iter());
            }
        }
        let mut denied = Vec::new();
        let mut until: Option<i64> = None;
        for id in candidates {
            let Some(rule) = inner.rules.get(id) else {
                continue;
            };
            let Some(node) = &rule.sharing else { continue };
            if let Some(b) = node.next_boundary(now) {
                until = Some(until.map_or(b, |u| u.min(b)));
            }
            if node.denies(s, &rule.patient, now) {
                denied.push(rule.patient.clone());
            }
        }
        drop(inner);
        denied.sort();
        denied.dedup();
        let denied = Arc::new(denied);
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        if cache.len() >= CACHE_ENTRIES {
            cache.clear();
        }
        cache.insert(
            s.clone(),
            Cached {
                generation,
                until,
                denied: denied.clone(),
            },
        );
        denied
    }

    /// The patients the holder of NHS number `proxy_nhs` may act for now.
    pub fn proxied(&self, proxy_nhs: &str) -> Vec<Proxied> {
        let now = now_ms();
        let inner = self.inner.read().unwrap_or_else(|e| e.into_inner());
        let Some(ids) = inner.by_proxy.get(proxy_nhs) else {
            return Vec::new();
        };
        let mut out: Vec<Proxied> = ids
            .iter()
            .filter_map(|id| inner.rules.get(id))
            .filter_map(|r| {
                let g = r.proxy.as_ref()?;
                g.period.is_none_or(|p| p.contains(now)).then(|| Proxied {
                    patient: r.patient.clone(),
                    grant: g.clone(),
                })
            })
            .collect();
        out.sort_by(|a, b| a.patient.cmp(&b.patient));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn sharing(patient: &str, client: &str) -> serde_json::Value {
        json!({
            "resourceType": "Consent", "status": "active",
            "scope": {"coding": [{"system": super::super::rule::SCOPE_SYSTEM, "code": "patient-privacy"}]},
            "category": [{"coding": [{"system": super::super::rule::ACT_CODE, "code": "INFA"}]}],
            "patient": {"reference": format!("Patient/{patient}")},
            "provision": {"type": "permit", "provision": [{"type": "deny", "actor": [{"reference": {"identifier": {"system": super::super::rule::CLIENT_ID_SYSTEM, "value": client}}}]}]}
        })
    }

    #[test]
    fn a_deny_applies_until_withdrawn() {
        let ix = ConsentIndex::new();
        let s = Subject {
            client: Some("app".into()),
            ..Default::default()
        };
        assert!(ix.denied(&s).is_empty());
        ix.apply("c1", 1, Some(&sharing("p1", "app")));
        ix.apply("c2", 1, Some(&sharing("p2", "other")));
        assert_eq!(*ix.denied(&s), vec!["p1".to_string()]);
        let mut withdrawn = sharing("p1", "app");
        withdrawn["status"] = json!("inactive");
        ix.apply("c1", 2, Some(&withdrawn));
        assert!(ix.denied(&s).is_empty());
        // A late, older version does not bring it back.
        ix.apply("c1", 1, Some(&sharing("p1", "app")));
        assert!(ix.denied(&s).is_empty());
        ix.apply("c2", 2, None);
        assert!(ix.is_empty());
    }
}

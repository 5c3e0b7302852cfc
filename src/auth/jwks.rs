//! Where public keys come from: a JWKS file (re-read when it changes) or a
//! `jwks_uri` (fetched with a timeout and a size limit, cached, refreshed at
//! most once per `min_refresh` when a token names a `kid` it does not hold,
//! and at the latest after `max_age`). One fetch at a time per source: a
//! slow or hanging endpoint delays only tokens of its own issuer, and only
//! up to the timeout.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime};

use super::jwt::{Alg, Jwk, JwkSet};

/// Why no key was found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    /// The source has no key for the token's `kid`/`alg`.
    UnknownKey,
    /// The source could not be read (timeout, refused, junk, too large).
    Unavailable(String),
}

/// Fetch limits of a `jwks_uri`.
#[derive(Debug, Clone, Copy)]
pub struct FetchLimits {
    pub timeout: Duration,
    pub max_bytes: usize,
    pub min_refresh: Duration,
    pub max_age: Duration,
}

/// A set of keys that can change while the server runs (our own signing
/// keys, which rotate): asked on every lookup.
pub trait KeyProvider: Send + Sync {
    fn keys(&self) -> Arc<JwkSet>;
}

pub struct KeySource {
    kind: Kind,
}

enum Kind {
    File {
        path: PathBuf,
        state: Mutex<Option<FileState>>,
    },
    Uri {
        url: String,
        limits: FetchLimits,
        current: RwLock<Option<(Arc<JwkSet>, Instant)>>,
        last_attempt: Mutex<Option<Instant>>,
        fetching: tokio::sync::Mutex<()>,
    },
    Fixed(Arc<JwkSet>),
    Provided(Arc<dyn KeyProvider>),
}

struct FileState {
    stamp: (Option<SystemTime>, u64),
    keys: Arc<JwkSet>,
}

impl std::fmt::Debug for KeySource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.kind {
            Kind::File { path, .. } => write!(f, "KeySource::File({})", path.display()),
            Kind::Uri { url, .. } => write!(f, "KeySource::Uri({url})"),
            Kind::Fixed(_) => write!(f, "KeySource::Fixed"),
            Kind::Provided(_) => write!(f, "KeySource::Provided"),
        }
    }
}

impl KeySource {
    pub fn file(path: impl Into<PathBuf>) -> KeySource {
        KeySource {
            kind: Kind::File {
                path: path.into(),
                state: Mutex::new(None),
            },
        }
    }

    pub fn uri(url: impl Into<String>, limits: FetchLimits) -> KeySource {
        KeySource {
            kind: Kind::Uri {
                url: url.into(),
                limits,
                current: RwLock::new(None),
                last_attempt: Mutex::new(None),
                fetching: tokio::sync::Mutex::new(()),
            },
        }
    }

    /// A fixed set (our own keys).
    pub fn fixed(keys: Arc<JwkSet>) -> KeySource {
        KeySource {
            kind: Kind::Fixed(keys),
        }
    }

    /// Keys asked of `provider` on every lookup (our own, rotating keys).
    pub fn provided(provider: Arc<dyn KeyProvider>) -> KeySource {
        KeySource {
            kind: Kind::Provided(provider),
        }
    }

    /// The key for a token with `kid` (if any) and `alg`.
    pub async fn find(&self, kid: Option<&str>, alg: Alg) -> Result<Jwk, KeyError> {
        match &self.kind {
            Kind::Fixed(keys) => keys.find(kid, alg).cloned().ok_or(KeyError::UnknownKey),
            Kind::Provided(p) => p.keys().find(kid, alg).cloned().ok_or(KeyError::UnknownKey),
            Kind::File { path, state } => {
                let keys = file_keys(path, state)?;
                keys.find(kid, alg).cloned().ok_or(KeyError::UnknownKey)
            }
            Kind::Uri {
                url,
                limits,
                current,
                last_attempt,
                fetching,
            } => {
                let cached = current.read().ok().and_then(|c| c.clone());
                if let Some((keys, at)) = &cached {
                    if at.elapsed() < limits.max_age {
                        if let Some(k) = keys.find(kid, alg) {
                            return Ok(k.clone());
                        }
                    }
                }
                let recently = |last: &Mutex<Option<Instant>>| {
                    last.lock()
                        .ok()
                        .and_then(|l| *l)
                        .is_some_and(|t| t.elapsed() < limits.min_refresh)
                };
                // Rate limit: an unknown kid triggers at most one fetch per
                // min_refresh (tokens naming invented kids cannot make us
                // hammer the issuer).
                if recently(last_attempt) {
                    return match cached {
                        Some((keys, _)) => keys.find(kid, alg).cloned().ok_or(KeyError::UnknownKey),
                        None => Err(KeyError::Unavailable(
                            "the JWKS could not be fetched".into(),
                        )),
                    };
                }
                let _one = fetching.lock().await;
                // Someone else may have fetched while this request waited.
                if let Some((keys, at)) = current.read().ok().and_then(|c| c.clone()) {
                    if at.elapsed() < limits.min_refresh {
                        return keys.find(kid, alg).cloned().ok_or(KeyError::UnknownKey);
                    }
                }
                if let Ok(mut l) = last_attempt.lock() {
                    *l = Some(Instant::now());
                }
                match fetch(url, limits).await {
                    Ok(keys) => {
                        let keys = Arc::new(keys);
                        if let Ok(mut c) = current.write() {
                            *c = Some((keys.clone(), Instant::now()));
                        }
                        keys.find(kid, alg).cloned().ok_or(KeyError::UnknownKey)
                    }
                    Err(e) => {
                        tracing::warn!(jwks_uri = %url, error = %e, "JWKS fetch failed");
                        // Keep using the keys we had (an issuer's outage must
                        // not log everyone out), but never invent one.
                        match cached {
                            Some((keys, _)) => {
                                keys.find(kid, alg).cloned().ok_or(KeyError::Unavailable(e))
                            }
                            None => Err(KeyError::Unavailable(e)),
                        }
                    }
                }
            }
        }
    }
}

fn file_keys(path: &PathBuf, state: &Mutex<Option<FileState>>) -> Result<Arc<JwkSet>, KeyError> {
    let meta = std::fs::metadata(path);
    let stamp = meta
        .as_ref()
        .map(|m| (m.modified().ok(), m.len()))
        .unwrap_or((None, 0));
    let mut guard = state
        .lock()
        .map_err(|_| KeyError::Unavailable("key state poisoned".into()))?;
    if let Some(s) = guard.as_ref() {
        if s.stamp == stamp {
            return Ok(s.keys.clone());
        }
    }
    let loaded = std::fs::read(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))
        .and_then(|bytes| JwkSet::parse(&bytes).map_err(|e| format!("{}: {e}", path.display())));
    match loaded {
        Ok(keys) => {
            let keys = Arc::new(keys);
            *guard = Some(FileState {
                stamp,
                keys: keys.clone(),
            });
            Ok(keys)
        }
        Err(e) => {
            tracing::warn!(error = %e, "JWKS file could not be loaded");
            match guard.as_ref() {
                // A half-written file keeps the previous keys.
                Some(s) => Ok(s.keys.clone()),
                None => Err(KeyError::Unavailable(e)),
            }
        }
    }
}

async fn fetch(url: &str, limits: &FetchLimits) -> Result<JwkSet, String> {
    let work = async {
        let client = awc::Client::builder()
            .timeout(limits.timeout)
            .disable_redirects()
            .finish();
        let mut resp = client
            .get(url)
            .insert_header(("Accept", "application/json"))
            .send()
            .await
            .map_err(|e| format!("request failed: {e}"))?;
        if !resp.status().is_success() {
            return Err(format!("status {}", resp.status().as_u16()));
        }
        let body = resp
            .body()
            .limit(limits.max_bytes)
            .await
            .map_err(|e| format!("body: {e}"))?;
        JwkSet::parse(&body)
    };
    match tokio::time::timeout(limits.timeout, work).await {
        Ok(r) => r,
        Err(_) => Err(format!("timed out after {} ms", limits.timeout.as_millis())),
    }
}

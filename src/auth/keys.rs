//! The server's own signing key: ES384, kept as PEM in
//! `auth.signing_key_file` (default `server-signing-key.pem` beside the
//! SQLite database, `data/server-signing-key.pem` for PostgreSQL; an
//! in-memory database gets an ephemeral key), created on first start with
//! mode 0600 and read on later starts. `fhirbridge rotate-signing-key`
//! ([`rotate`]) writes a new key and keeps the public half of the previous
//! one beside it (`server-signing-key.previous.pem`), so access tokens
//! signed before the rotation verify until they expire. A running server
//! notices a rotation (the files' modification stamps) the next time it
//! signs or verifies with a key it has not cached.
//!
//! Several instances share a key only if they share the file
//! (`auth.signing_key_file` on a shared volume): creation is atomic
//! (written aside, then hard-linked into place), so two instances starting
//! at once end with one key.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use anyhow::Context as _;
use serde_json::{json, Value};

use super::config::AuthSettings;
use super::jwks::KeyProvider;
use super::jwt::{public_jwk_from_pem, JwkSet, SigningKey};

/// Where the server's signing key lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLocation {
    /// A PEM file (created when missing).
    File(PathBuf),
    /// In memory only, new on every start (in-memory databases): tokens do
    /// not survive a restart, and neither does anything else.
    Ephemeral,
}

/// The key file default name.
pub const DEFAULT_FILE: &str = "server-signing-key.pem";

/// Where the signing key of a server with these settings is.
pub fn location(auth: &AuthSettings, database_url: &str) -> KeyLocation {
    if let Some(f) = auth.signing_key_file.as_deref().filter(|f| !f.is_empty()) {
        return KeyLocation::File(PathBuf::from(f));
    }
    if matches!(
        database_url,
        "sqlite::memory:" | "sqlite://:memory:" | ":memory:"
    ) {
        return KeyLocation::Ephemeral;
    }
    if let Some(path) = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
    {
        let path = path.split('?').next().unwrap_or(path);
        let dir = Path::new(path)
            .parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        return KeyLocation::File(dir.join(DEFAULT_FILE));
    }
    KeyLocation::File(Path::new("data").join(DEFAULT_FILE))
}

/// The file holding the previous key's public half: `NAME.previous.pem`
/// beside `NAME.pem`.
pub fn previous_path(current: &Path) -> PathBuf {
    let stem = current
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "server-signing-key".into());
    current.with_file_name(format!("{stem}.previous.pem"))
}

/// Modification time, length and inode: a file replaced by a rename is
/// noticed even within one timestamp tick.
type Stamp = Option<(Option<SystemTime>, u64, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path).ok().map(|m| {
        #[cfg(unix)]
        let ino = std::os::unix::fs::MetadataExt::ino(&m);
        #[cfg(not(unix))]
        let ino = 0;
        (m.modified().ok(), m.len(), ino)
    })
}

struct Loaded {
    current: SigningKey,
    /// The previous key's public JWK, if one is kept.
    previous: Option<Value>,
    jwks: Value,
    set: Arc<JwkSet>,
    stamps: (Stamp, Stamp),
}

impl Loaded {
    fn new(
        current: SigningKey,
        previous: Option<Value>,
        stamps: (Stamp, Stamp),
    ) -> anyhow::Result<Loaded> {
        let mut keys = vec![current.public_jwk()?];
        if let Some(p) = &previous {
            if p["kid"] != keys[0]["kid"] {
                keys.push(p.clone());
            }
        }
        let jwks = json!({ "keys": keys });
        let set = JwkSet::parse(jwks.to_string().as_bytes()).map_err(|e| anyhow::anyhow!(e))?;
        Ok(Loaded {
            current,
            previous,
            jwks,
            set: Arc::new(set),
            stamps,
        })
    }
}

/// The server's keys: the current signing key and the previous public key.
pub struct ServerKeys {
    location: KeyLocation,
    state: Mutex<Arc<Loaded>>,
}

impl std::fmt::Debug for ServerKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerKeys")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl ServerKeys {
    /// Reads the key at `location`, creating it when there is none.
    pub fn open(location: KeyLocation) -> anyhow::Result<ServerKeys> {
        let loaded = match &location {
            KeyLocation::Ephemeral => {
                let key = SigningKey::generate_es384()?;
                tracing::info!(kid = %key.kid, "server signing key: ephemeral (in-memory database)");
                Loaded::new(key, None, (None, None))?
            }
            KeyLocation::File(path) => {
                let created = create_if_missing(path)?;
                let loaded = read(path)?;
                let what = if created { "created" } else { "read" };
                tracing::info!(
                    kid = %loaded.current.kid,
                    previous = loaded.previous.is_some(),
                    "server signing key {what}: {}",
                    path.display()
                );
                warn_if_exposed(path);
                loaded
            }
        };
        Ok(ServerKeys {
            location,
            state: Mutex::new(Arc::new(loaded)),
        })
    }

    /// The keys as they are now (re-read when a file changed; a file that
    /// cannot be read keeps the keys already loaded).
    fn now(&self) -> Arc<Loaded> {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        if let KeyLocation::File(path) = &self.location {
            let stamps = (stamp(path), stamp(&previous_path(path)));
            if stamps != guard.stamps {
                match read(path) {
                    Ok(fresh) => {
                        if fresh.current.kid != guard.current.kid {
                            tracing::info!(kid = %fresh.current.kid, "server signing key changed (rotated)");
                        }
                        *guard = Arc::new(fresh);
                    }
                    Err(e) => {
                        tracing::warn!(error = %format!("{e:#}"), "server signing key could not be re-read; keeping the loaded one");
                        // Not retried on every call: only when it changes again.
                        let old = guard.clone();
                        *guard = Arc::new(Loaded {
                            current: old.current.clone(),
                            previous: old.previous.clone(),
                            jwks: old.jwks.clone(),
                            set: old.set.clone(),
                            stamps,
                        });
                    }
                }
            }
        }
        guard.clone()
    }

    /// The key new tokens are signed with.
    pub fn signing_key(&self) -> SigningKey {
        self.now().current.clone()
    }

    /// The published JWKS (`{"keys": [current, previous]}`).
    pub fn jwks(&self) -> Value {
        self.now().jwks.clone()
    }

    pub fn location(&self) -> &KeyLocation {
        &self.location
    }
}

impl KeyProvider for ServerKeys {
    fn keys(&self) -> Arc<JwkSet> {
        self.now().set.clone()
    }
}

fn read(path: &Path) -> anyhow::Result<Loaded> {
    let previous_file = previous_path(path);
    // Stamps first: a change after them is seen on the next call.
    let stamps = (stamp(path), stamp(&previous_file));
    let pem = std::fs::read(path)
        .with_context(|| format!("cannot read the signing key {}", path.display()))?;
    let current =
        SigningKey::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
    let previous = match std::fs::read(&previous_file) {
        Ok(pem) => Some(
            public_jwk_from_pem(&pem)
                .map_err(|e| anyhow::anyhow!("{}: {e}", previous_file.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => {
            return Err(e).with_context(|| format!("cannot read {}", previous_file.display()))
        }
    };
    Loaded::new(current, previous, stamps)
}

/// Writes `bytes` to a new file beside `path` (mode 0600), returning its
/// path; the caller links or renames it into place.
fn write_aside(path: &Path, bytes: &[u8]) -> anyhow::Result<PathBuf> {
    use std::io::Write as _;
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    if let Some(dir) = dir {
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    }
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| DEFAULT_FILE.into());
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", uuid::Uuid::new_v4().simple()));
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        options.mode(0o600);
    }
    let mut f = options
        .open(&tmp)
        .with_context(|| format!("cannot create {}", tmp.display()))?;
    f.write_all(bytes)
        .and_then(|_| f.sync_all())
        .with_context(|| format!("cannot write {}", tmp.display()))?;
    Ok(tmp)
}

/// Creates a key at `path` unless one is there; `true` if it was created.
fn create_if_missing(path: &Path) -> anyhow::Result<bool> {
    if path.exists() {
        return Ok(false);
    }
    let key = SigningKey::generate_es384()?;
    let tmp = write_aside(path, &key.to_pem()?)?;
    // A hard link never replaces an existing file: of two instances
    // starting at once, one key wins and both read it.
    let linked = std::fs::hard_link(&tmp, path);
    let _ = std::fs::remove_file(&tmp);
    match linked {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => Ok(false),
        Err(e) => Err(e).with_context(|| format!("cannot create {}", path.display())),
    }
}

#[cfg(unix)]
fn warn_if_exposed(path: &Path) {
    use std::os::unix::fs::PermissionsExt as _;
    if let Ok(m) = std::fs::metadata(path) {
        if m.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "the server signing key {} is readable by other users (chmod 600 it)",
                path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_exposed(_: &Path) {}

/// What [`rotate`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rotation {
    pub path: PathBuf,
    /// The key that signed until now (still published); `None` when there
    /// was no key yet.
    pub previous_kid: Option<String>,
    pub new_kid: String,
}

/// Replaces the key at `path` with a new one, keeping the old key's public
/// half as the previous key (the one kept before it is dropped: tokens it
/// signed stop verifying).
pub fn rotate(path: &Path) -> anyhow::Result<Rotation> {
    let old = match std::fs::read(path) {
        Ok(pem) => Some(
            SigningKey::from_pem(&pem).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?,
        ),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
        Err(e) => return Err(e).with_context(|| format!("cannot read {}", path.display())),
    };
    let new = SigningKey::generate_es384()?;
    if let Some(old) = &old {
        // Previous first: a server reading between the two renames sees
        // the old key as both current and previous, never a gap.
        let previous = previous_path(path);
        let tmp = write_aside(&previous, &old.public_pem()?)?;
        std::fs::rename(&tmp, &previous)
            .with_context(|| format!("cannot write {}", previous.display()))?;
    }
    let tmp = write_aside(path, &new.to_pem()?)?;
    std::fs::rename(&tmp, path).with_context(|| format!("cannot write {}", path.display()))?;
    Ok(Rotation {
        path: path.to_owned(),
        previous_kid: old.map(|k| k.kid),
        new_kid: new.kid,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::jwt::decode_token;

    #[test]
    fn default_locations() {
        let a = AuthSettings::default();
        assert_eq!(
            location(&a, "sqlite://data/fhirbridge.db"),
            KeyLocation::File(PathBuf::from("data/server-signing-key.pem"))
        );
        assert_eq!(
            location(&a, "sqlite:///var/lib/fb/x.db"),
            KeyLocation::File(PathBuf::from("/var/lib/fb/server-signing-key.pem"))
        );
        assert_eq!(
            location(&a, "sqlite://x.db"),
            KeyLocation::File(PathBuf::from("./server-signing-key.pem"))
        );
        assert_eq!(location(&a, "sqlite::memory:"), KeyLocation::Ephemeral);
        assert_eq!(
            location(&a, "postgres://u@h/db"),
            KeyLocation::File(PathBuf::from("data/server-signing-key.pem"))
        );
        let set = AuthSettings {
            signing_key_file: Some("/keys/k.pem".into()),
            ..AuthSettings::default()
        };
        assert_eq!(
            location(&set, "sqlite::memory:"),
            KeyLocation::File(PathBuf::from("/keys/k.pem"))
        );
        assert_eq!(
            previous_path(Path::new("/keys/k.pem")),
            PathBuf::from("/keys/k.previous.pem")
        );
    }

    #[test]
    fn created_once_then_read_and_rotated() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("key.pem");
        let first = ServerKeys::open(KeyLocation::File(path.clone())).unwrap();
        let kid = first.signing_key().kid;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        let again = ServerKeys::open(KeyLocation::File(path.clone())).unwrap();
        assert_eq!(again.signing_key().kid, kid);
        assert_eq!(first.jwks()["keys"].as_array().unwrap().len(), 1);

        let token = first
            .signing_key()
            .sign(&serde_json::json!({"sub": "x"}), "JWT")
            .unwrap();
        let r = rotate(&path).unwrap();
        assert_eq!(r.previous_kid.as_deref(), Some(kid.as_str()));
        assert_ne!(r.new_kid, kid);
        // The running instance notices; the old token still verifies.
        assert_eq!(first.signing_key().kid, r.new_kid);
        let kids: Vec<_> = first.jwks()["keys"]
            .as_array()
            .unwrap()
            .iter()
            .map(|k| k["kid"].as_str().unwrap().to_owned())
            .collect();
        assert_eq!(kids, [r.new_kid.clone(), kid.clone()]);
        let u = decode_token(&token).unwrap();
        let set = first.keys();
        u.verify(set.find(u.kid.as_deref(), u.alg).unwrap())
            .unwrap();
        // A second rotation drops the first key.
        rotate(&path).unwrap();
        assert!(first.keys().find(u.kid.as_deref(), u.alg).is_none());
    }

    #[test]
    fn a_broken_key_file_stops_the_start() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        std::fs::write(&path, "not a key").unwrap();
        let e = ServerKeys::open(KeyLocation::File(path.clone())).unwrap_err();
        assert!(format!("{e:#}").contains("key.pem"), "{e:#}");
        // Nothing was overwritten.
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "not a key");
    }
}

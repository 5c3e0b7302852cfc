//! The SQL backend: one implementation of the storage traits for SQLite (the
//! embedded default) and PostgreSQL, on diesel + r2d2.
//!
//! The query code is written once, inside the `sql_ops!` macro, and expanded for
//! each diesel connection type, so both dialects run the same statements. The few
//! dialect differences (placeholders, row locks, advisory locks) are switched on
//! [`Dialect`]. All diesel work runs on the blocking thread pool, never on the
//! async executor, and re-enters the caller's tracing span.
//!
//! **Invariant:** every statement that reads resources goes through
//! `scope_filter`, the single place a request's scope predicate is applied.
//!
//! Concurrency: SQLite has one writer at a time, so writes take an in-process
//! mutex and `BEGIN IMMEDIATE` (no busy-wait between our own connections).
//! PostgreSQL serialises writes to one resource with a row lock on the head row
//! (a placeholder row is upserted first so that concurrent first writes of the
//! same id meet on that lock) and serialises conditional creates of the same
//! criteria with a transaction-scoped advisory lock.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool, PooledConnection};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection as _, RunQueryDsl as _};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::*;
use crate::model::{Instant, LogicalId, ResourceType, VersionId};
use crate::search::types::SearchQuery;

mod jobs;
mod reindex;
mod search;

const SQLITE_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/sqlite");
const PG_MIGRATIONS: EmbeddedMigrations = embed_migrations!("migrations/postgres");

/// Which SQL dialect a statement is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    Postgres,
}

/// How to open the database.
#[derive(Debug, Clone)]
pub struct SqlOptions {
    /// `sqlite://PATH`, `sqlite::memory:` or `postgres://…`.
    pub url: String,
    pub pool_size: u32,
    /// How long a request waits for a free connection before 503.
    pub acquire_timeout: Duration,
    /// SQLite only: `PRAGMA synchronous=FULL` (survives power loss, slower)
    /// instead of `NORMAL` (survives a process crash or `kill -9`).
    pub sqlite_synchronous_full: bool,
}

enum Pools {
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    Postgres(Pool<ConnectionManager<PgConnection>>),
}

/// The SQL storage backend.
pub struct SqlBackend {
    pools: Pools,
    dialect: Dialect,
    /// Serialises SQLite writers inside this process.
    write_lock: Arc<WriteGate>,
    capabilities: Capabilities,
    /// Migrations `open` applied (0: the schema was up to date).
    migrations_applied: usize,
}

/// The SQLite writer gate: one writer at a time in this process, and a nudge to
/// the background checkpointer after each commit.
#[derive(Default)]
struct WriteGate {
    mutex: Arc<Mutex<()>>,
    checkpoints: Option<std::sync::mpsc::SyncSender<()>>,
}

impl WriteGate {
    fn committed(&self) {
        if let Some(tx) = &self.checkpoints {
            // A full channel means a checkpoint is already due.
            let _ = tx.try_send(());
        }
    }
}

#[derive(diesel::QueryableByName)]
struct CheckpointRow {
    /// Frames in the WAL.
    #[diesel(sql_type = diesel::sql_types::Integer)]
    log: i32,
}

/// WAL frames (4 KiB pages) after which the checkpointer briefly holds the
/// writer gate to finish a checkpoint, so the next writer restarts the WAL.
const WAL_RESTART_FRAMES: i32 = 8192;

/// Copies the WAL back into the database file on its own thread and connection
/// (`PRAGMA wal_checkpoint(PASSIVE)`, which never blocks readers or the writer),
/// so commits do not pay for checkpoints (pool connections checkpoint
/// themselves only as a backstop, past 16,384 frames). Runs after commits (at
/// most every 50 ms) and once a second.
/// Under a steady stream of writes a passive checkpoint never quite catches
/// up and the WAL would only grow; past [`WAL_RESTART_FRAMES`] the remainder
/// (small, most was copied concurrently) is copied while holding the writer
/// gate. The thread ends when the backend is dropped.
fn spawn_checkpointer(
    path: String,
    writers: Arc<Mutex<()>>,
) -> anyhow::Result<std::sync::mpsc::SyncSender<()>> {
    use std::sync::mpsc::{sync_channel, RecvTimeoutError};
    let mut conn = SqliteConnection::establish(&path)
        .with_context(|| "Failed to open the SQLite database for checkpoints")?;
    conn.batch_execute("PRAGMA busy_timeout = 1000;")
        .context("Failed to configure the checkpoint connection")?;
    let (tx, rx) = sync_channel::<()>(1);
    std::thread::Builder::new()
        .name("sqlite-checkpoint".into())
        .spawn(move || {
            while !matches!(
                rx.recv_timeout(Duration::from_secs(1)),
                Err(RecvTimeoutError::Disconnected)
            ) {
                let mut pass = || {
                    diesel::sql_query("PRAGMA wal_checkpoint(PASSIVE)")
                        .load::<CheckpointRow>(&mut conn)
                        .map(|r| r.first().map_or(0, |r| r.log))
                };
                match pass() {
                    Ok(log) if log > WAL_RESTART_FRAMES => {
                        let _writer = writers.lock().unwrap_or_else(|p| p.into_inner());
                        if let Err(e) = pass() {
                            tracing::warn!(error = %e, "WAL checkpoint failed");
                        }
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = %e, "WAL checkpoint failed"),
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        })
        .context("Failed to start the checkpoint thread")?;
    Ok(tx)
}

#[derive(Debug)]
struct SqlitePragmas {
    synchronous_full: bool,
    wal: bool,
}

impl CustomizeConnection<SqliteConnection, diesel::r2d2::Error> for SqlitePragmas {
    fn on_acquire(&self, conn: &mut SqliteConnection) -> Result<(), diesel::r2d2::Error> {
        let mut pragmas = String::from(
            "PRAGMA busy_timeout = 10000; PRAGMA foreign_keys = ON; PRAGMA cache_size = -65536; PRAGMA temp_store = MEMORY; PRAGMA mmap_size = 2147418112; PRAGMA wal_autocheckpoint = 16384;",
        );
        if self.wal {
            pragmas.push_str("PRAGMA journal_mode = WAL;");
        }
        pragmas.push_str(if self.synchronous_full {
            "PRAGMA synchronous = FULL;"
        } else {
            "PRAGMA synchronous = NORMAL;"
        });
        conn.batch_execute(&pragmas)
            .map_err(diesel::r2d2::Error::QueryError)
    }
}

impl SqlBackend {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(opts: &SqlOptions) -> anyhow::Result<SqlBackend> {
        let url = opts.url.trim();
        let mut gate = WriteGate::default();
        let migrations_applied;
        let (pools, dialect) = if url.starts_with("postgres://") || url.starts_with("postgresql://")
        {
            let manager = ConnectionManager::<PgConnection>::new(url);
            let pool = Pool::builder()
                .max_size(opts.pool_size.max(1))
                .connection_timeout(opts.acquire_timeout)
                .build(manager)
                .context("Failed to connect to PostgreSQL")?;
            let mut conn = pool
                .get()
                .context("Failed to get a PostgreSQL connection")?;
            migrations_applied = conn
                .run_pending_migrations(PG_MIGRATIONS)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("Failed to run PostgreSQL migrations")?
                .len();
            (Pools::Postgres(pool), Dialect::Postgres)
        } else {
            let (target, memory) = sqlite_target(url)?;
            let manager = ConnectionManager::<SqliteConnection>::new(target.clone());
            let pool = Pool::builder()
                // A private in-memory database exists per connection: keep exactly one.
                .max_size(if memory { 1 } else { opts.pool_size.max(2) })
                .connection_timeout(opts.acquire_timeout)
                .connection_customizer(Box::new(SqlitePragmas {
                    synchronous_full: opts.sqlite_synchronous_full,
                    wal: !memory,
                }))
                .build(manager)
                .context("Failed to open the SQLite database")?;
            let mut conn = pool.get().context("Failed to get a SQLite connection")?;
            migrations_applied = conn
                .run_pending_migrations(SQLITE_MIGRATIONS)
                .map_err(|e| anyhow::anyhow!("{e}"))
                .context("Failed to run SQLite migrations")?
                .len();
            if !memory {
                gate.checkpoints = Some(spawn_checkpointer(target, gate.mutex.clone())?);
            }
            (Pools::Sqlite(pool), Dialect::Sqlite)
        };
        let all: BTreeSet<Interaction> = [
            Interaction::Read,
            Interaction::Vread,
            Interaction::Update,
            Interaction::Delete,
            Interaction::HistoryInstance,
            Interaction::HistoryType,
            Interaction::Create,
            Interaction::SearchType,
        ]
        .into_iter()
        .collect();
        let capabilities = Capabilities {
            backend: match dialect {
                Dialect::Sqlite => "sqlite",
                Dialect::Postgres => "postgres",
            },
            types: ResourceType::ALL
                .iter()
                .map(|t| (*t, all.clone()))
                .collect(),
            system_history: true,
            conditional_create: true,
            update_create: true,
        };
        Ok(SqlBackend {
            pools,
            dialect,
            write_lock: Arc::new(gate),
            capabilities,
            migrations_applied,
        })
    }

    pub fn dialect(&self) -> Dialect {
        self.dialect
    }

    /// How many migrations `open` applied (0 when the schema was up to date).
    pub fn migrations_applied(&self) -> usize {
        self.migrations_applied
    }

    async fn blocking<T, F>(&self, f: F) -> StorageResult<T>
    where
        T: Send + 'static,
        F: FnOnce(Conn) -> StorageResult<T> + Send + 'static,
    {
        let conn = match &self.pools {
            Pools::Sqlite(p) => PoolRef::Sqlite(p.clone()),
            Pools::Postgres(p) => PoolRef::Postgres(p.clone()),
        };
        let lock = self.write_lock.clone();
        let span = tracing::Span::current();
        tokio::task::spawn_blocking(move || {
            let _entered = span.enter();
            let conn = match conn {
                PoolRef::Sqlite(p) => Conn::Sqlite(p.get().map_err(pool_error)?, lock),
                PoolRef::Postgres(p) => Conn::Postgres(p.get().map_err(pool_error)?),
            };
            f(conn)
        })
        .await
        .map_err(|e| StorageError::Internal(anyhow::anyhow!("blocking task failed: {e}")))?
    }
}

enum PoolRef {
    Sqlite(Pool<ConnectionManager<SqliteConnection>>),
    Postgres(Pool<ConnectionManager<PgConnection>>),
}

/// A checked-out connection of either dialect.
enum Conn {
    Sqlite(
        PooledConnection<ConnectionManager<SqliteConnection>>,
        Arc<WriteGate>,
    ),
    Postgres(PooledConnection<ConnectionManager<PgConnection>>),
}

fn pool_error(e: r2d2::Error) -> StorageError {
    tracing::warn!(error = %e, "database connection unavailable");
    StorageError::Busy
}

/// Maps `sqlite://PATH` / `sqlite::memory:` to what SQLite opens; creates parent dirs.
fn sqlite_target(url: &str) -> anyhow::Result<(String, bool)> {
    if url == "sqlite::memory:" || url == "sqlite://:memory:" || url == ":memory:" {
        return Ok((":memory:".to_owned(), true));
    }
    let path = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .unwrap_or(url);
    if path.is_empty() {
        anyhow::bail!("empty SQLite path in database URL");
    }
    if let Some(parent) = std::path::Path::new(path).parent() {
        if !parent.as_os_str().is_empty() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("Failed to create directory {}", parent.display()))?;
        }
    }
    Ok((path.to_owned(), false))
}

fn internal(e: diesel::result::Error) -> StorageError {
    use diesel::result::{DatabaseErrorKind, Error};
    match &e {
        Error::DatabaseError(DatabaseErrorKind::SerializationFailure, _) => StorageError::Busy,
        Error::DatabaseError(DatabaseErrorKind::ClosedConnection, _) => {
            StorageError::Unavailable(anyhow::anyhow!("{e}"))
        }
        Error::DatabaseError(_, info) if info.message().contains("database is locked") => {
            StorageError::Busy
        }
        // Another transaction created the same id first (a bulk create of
        // client-chosen ids): a retry finds it and updates it.
        Error::DatabaseError(DatabaseErrorKind::UniqueViolation, _) => StorageError::Busy,
        _ => StorageError::Internal(anyhow::Error::new(e)),
    }
}

/// A value bound to a `?` placeholder.
#[derive(Debug, Clone)]
enum Bind {
    Text(String),
    OptText(Option<String>),
    Int(i64),
    OptInt(Option<i64>),
    Real(f64),
}

/// Builds SQL text and its binds together. The text holds no placeholders:
/// `marks` records where each bind goes, and diesel writes `?` or `$n` there.
struct Sql {
    text: String,
    binds: Vec<Bind>,
    marks: Vec<usize>,
    /// Keep the prepared statement in the connection's cache (keyed by the
    /// text). Only for statements of few shapes (the write path), never for
    /// search SQL, whose text varies without bound.
    cache: bool,
}

impl Sql {
    fn new() -> Sql {
        Sql {
            text: String::with_capacity(256),
            binds: Vec::new(),
            marks: Vec::new(),
            cache: false,
        }
    }

    /// A statement of a fixed shape, worth keeping prepared.
    fn prepared() -> Sql {
        Sql {
            cache: true,
            ..Sql::new()
        }
    }

    fn push(&mut self, s: &str) -> &mut Sql {
        self.text.push_str(s);
        self
    }

    fn bind(&mut self, b: Bind) -> &mut Sql {
        self.binds.push(b);
        self.marks.push(self.text.len());
        self
    }

    fn text(&mut self, s: &str) -> &mut Sql {
        self.bind(Bind::Text(s.to_owned()))
    }

    fn int(&mut self, i: i64) -> &mut Sql {
        self.bind(Bind::Int(i))
    }

    /// `?, ?, …`: one text bind per item, comma-separated (for `IN (…)`).
    fn text_list<S: AsRef<str>>(&mut self, items: impl IntoIterator<Item = S>) -> &mut Sql {
        for (i, item) in items.into_iter().enumerate() {
            if i > 0 {
                self.push(", ");
            }
            self.text(item.as_ref());
        }
        self
    }

    /// The text with `?` where the binds go: for `fhirbridge::sql=trace`
    /// diagnostics only. Bound values (patient data) are never shown.
    fn shown(&self) -> String {
        let mut out = String::with_capacity(self.text.len() + self.marks.len());
        let mut at = 0;
        for &m in &self.marks {
            out.push_str(&self.text[at..m]);
            out.push('?');
            at = m;
        }
        out.push_str(&self.text[at..]);
        out
    }
}

/// Runs `f`, and with `RUST_LOG=fhirbridge::sql=trace` logs the statement's
/// shape (placeholders, no values) and how long it took.
fn traced<T>(sql: &Sql, f: impl FnOnce() -> T) -> T {
    if !tracing::enabled!(target: "fhirbridge::sql", tracing::Level::TRACE) {
        return f();
    }
    let t0 = std::time::Instant::now();
    let out = f();
    tracing::trace!(target: "fhirbridge::sql", us = t0.elapsed().as_micros() as u64, sql = %sql.shown());
    out
}

mod rows {
    use diesel::sql_types::{BigInt, Double, Nullable, Text};
    use diesel::QueryableByName;

    #[derive(QueryableByName, Debug)]
    pub struct PageToken {
        #[diesel(sql_type = Text)]
        pub res_type: String,
        #[diesel(sql_type = Text)]
        pub params: String,
    }

    #[derive(QueryableByName, Debug)]
    pub struct Head {
        #[diesel(sql_type = BigInt)]
        pub version: i64,
        #[diesel(sql_type = BigInt)]
        pub last_updated: i64,
        #[diesel(sql_type = BigInt)]
        pub deleted: i64,
        #[diesel(sql_type = Nullable<Text>)]
        pub content: Option<String>,
    }

    #[derive(QueryableByName, Debug)]
    pub struct Found {
        #[diesel(sql_type = Text)]
        pub res_id: String,
        #[diesel(sql_type = BigInt)]
        pub version: i64,
        #[diesel(sql_type = BigInt)]
        pub last_updated: i64,
        #[diesel(sql_type = Nullable<Text>)]
        pub content: Option<String>,
    }

    #[derive(QueryableByName, Debug)]
    pub struct VersionRow {
        #[diesel(sql_type = BigInt)]
        pub seq: i64,
        #[diesel(sql_type = Text)]
        pub res_type: String,
        #[diesel(sql_type = Text)]
        pub res_id: String,
        #[diesel(sql_type = BigInt)]
        pub version: i64,
        #[diesel(sql_type = BigInt)]
        pub last_updated: i64,
        #[diesel(sql_type = Text)]
        pub method: String,
        #[diesel(sql_type = Nullable<Text>)]
        pub content: Option<String>,
    }

    #[derive(QueryableByName, Debug)]
    pub struct ResId {
        #[diesel(sql_type = Text)]
        pub res_id: String,
    }

    #[derive(QueryableByName, Debug)]
    pub struct IdList {
        /// Comma-separated (ids never contain a comma).
        #[diesel(sql_type = Nullable<Text>)]
        pub ids: Option<String>,
        #[diesel(sql_type = BigInt)]
        pub n: i64,
    }

    #[derive(QueryableByName, Debug)]
    pub struct Target {
        #[diesel(sql_type = Text)]
        pub target_type: String,
        #[diesel(sql_type = Text)]
        pub target_id: String,
    }

    /// A search match with up to five typed sort-key columns.
    #[derive(QueryableByName, Debug)]
    pub struct Sorted {
        #[diesel(sql_type = Text)]
        pub res_id: String,
        #[diesel(sql_type = BigInt)]
        pub version: i64,
        #[diesel(sql_type = BigInt)]
        pub last_updated: i64,
        #[diesel(sql_type = Nullable<Text>)]
        pub content: Option<String>,
        #[diesel(sql_type = Nullable<Text>)]
        pub k0_t: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        pub k0_i: Option<i64>,
        #[diesel(sql_type = Nullable<Double>)]
        pub k0_r: Option<f64>,
        #[diesel(sql_type = Nullable<Text>)]
        pub k1_t: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        pub k1_i: Option<i64>,
        #[diesel(sql_type = Nullable<Double>)]
        pub k1_r: Option<f64>,
        #[diesel(sql_type = Nullable<Text>)]
        pub k2_t: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        pub k2_i: Option<i64>,
        #[diesel(sql_type = Nullable<Double>)]
        pub k2_r: Option<f64>,
        #[diesel(sql_type = Nullable<Text>)]
        pub k3_t: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        pub k3_i: Option<i64>,
        #[diesel(sql_type = Nullable<Double>)]
        pub k3_r: Option<f64>,
        #[diesel(sql_type = Nullable<Text>)]
        pub k4_t: Option<String>,
        #[diesel(sql_type = Nullable<BigInt>)]
        pub k4_i: Option<i64>,
        #[diesel(sql_type = Nullable<Double>)]
        pub k4_r: Option<f64>,
    }

    #[derive(QueryableByName, Debug)]
    pub struct Count {
        #[diesel(sql_type = BigInt)]
        pub n: i64,
    }
}

/// Expands the dialect-independent statement runners for one connection type.
macro_rules! sql_ops {
    ($modname:ident, $conn:ty, $db:ty) => {
        mod $modname {
            use super::{rows, Bind, Sql};
            use diesel::query_builder::{AstPass, Query, QueryFragment, QueryId};
            use diesel::sql_types::{BigInt, Double, Nullable, Text, Untyped};
            use diesel::{QueryResult, QueryableByName, RunQueryDsl};

            /// `sql` as a diesel query, binding its values by reference.
            struct Stmt<'a>(&'a Sql);

            impl QueryFragment<$db> for Stmt<'_> {
                fn walk_ast<'b>(&'b self, mut out: AstPass<'_, 'b, $db>) -> QueryResult<()> {
                    if !self.0.cache {
                        out.unsafe_to_cache_prepared();
                    }
                    let text = &self.0.text;
                    let mut from = 0;
                    for (b, &at) in self.0.binds.iter().zip(&self.0.marks) {
                        out.push_sql(&text[from..at]);
                        from = at;
                        match b {
                            Bind::Text(s) => out.push_bind_param::<Text, String>(s)?,
                            Bind::OptText(s) => {
                                out.push_bind_param::<Nullable<Text>, Option<String>>(s)?
                            }
                            Bind::Int(i) => out.push_bind_param::<BigInt, i64>(i)?,
                            Bind::OptInt(i) => {
                                out.push_bind_param::<Nullable<BigInt>, Option<i64>>(i)?
                            }
                            Bind::Real(f) => out.push_bind_param::<Double, f64>(f)?,
                        }
                    }
                    out.push_sql(&text[from..]);
                    Ok(())
                }
            }

            impl QueryId for Stmt<'_> {
                type QueryId = ();
                const HAS_STATIC_QUERY_ID: bool = false;
            }

            impl Query for Stmt<'_> {
                type SqlType = Untyped;
            }

            impl<C> RunQueryDsl<C> for Stmt<'_> {}

            pub fn load<R: QueryableByName<$db> + 'static>(
                conn: &mut $conn,
                sql: &Sql,
            ) -> QueryResult<Vec<R>> {
                Stmt(sql).load::<R>(conn)
            }

            pub fn exec(conn: &mut $conn, sql: &Sql) -> QueryResult<usize> {
                Stmt(sql).execute(conn)
            }

            pub fn count(conn: &mut $conn, sql: &Sql) -> QueryResult<i64> {
                Ok(load::<rows::Count>(conn, sql)?
                    .first()
                    .map(|c| c.n)
                    .unwrap_or(0))
            }
        }
    };
}

sql_ops!(
    sqlite_ops,
    diesel::sqlite::SqliteConnection,
    diesel::sqlite::Sqlite
);
sql_ops!(pg_ops, diesel::pg::PgConnection, diesel::pg::Pg);

impl Conn {
    fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(..) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    fn load<R>(&mut self, sql: &Sql) -> StorageResult<Vec<R>>
    where
        R: diesel::QueryableByName<diesel::sqlite::Sqlite>
            + diesel::QueryableByName<diesel::pg::Pg>
            + 'static,
    {
        traced(sql, || match self {
            Conn::Sqlite(c, _) => sqlite_ops::load::<R>(c, sql),
            Conn::Postgres(c) => pg_ops::load::<R>(c, sql),
        })
        .map_err(internal)
    }

    fn exec(&mut self, sql: &Sql) -> StorageResult<usize> {
        match self {
            Conn::Sqlite(c, _) => sqlite_ops::exec(c, sql),
            Conn::Postgres(c) => pg_ops::exec(c, sql),
        }
        .map_err(internal)
    }

    fn count(&mut self, sql: &Sql) -> StorageResult<i64> {
        traced(sql, || match self {
            Conn::Sqlite(c, _) => sqlite_ops::count(c, sql),
            Conn::Postgres(c) => pg_ops::count(c, sql),
        })
        .map_err(internal)
    }

    /// Runs `f` in a write transaction: `BEGIN IMMEDIATE` under the process-wide
    /// writer mutex on SQLite, an ordinary transaction on PostgreSQL.
    fn write_tx<T>(&mut self, f: impl FnOnce(&mut Conn) -> StorageResult<T>) -> StorageResult<T> {
        let lock = match self {
            Conn::Sqlite(_, lock) => Some(lock.clone()),
            Conn::Postgres(_) => None,
        };
        let _guard = lock
            .as_ref()
            .map(|l| l.mutex.lock().unwrap_or_else(|p| p.into_inner()));
        let begin = match self.dialect() {
            Dialect::Sqlite => "BEGIN IMMEDIATE",
            Dialect::Postgres => "BEGIN",
        };
        self.simple(begin)?;
        match f(self) {
            Ok(v) => match self.simple("COMMIT") {
                Ok(()) => {
                    if let Some(gate) = &lock {
                        gate.committed();
                    }
                    Ok(v)
                }
                Err(e) => {
                    let _ = self.simple("ROLLBACK");
                    Err(e)
                }
            },
            Err(e) => {
                let _ = self.simple("ROLLBACK");
                Err(e)
            }
        }
    }

    fn simple(&mut self, sql: &str) -> StorageResult<()> {
        match self {
            Conn::Sqlite(c, _) => c.batch_execute(sql),
            Conn::Postgres(c) => c.batch_execute(sql),
        }
        .map_err(internal)
    }

    fn ping(&mut self) -> StorageResult<()> {
        self.simple("SELECT 1")
    }
}

/// The single chokepoint for the scope predicate on resource reads. Today the
/// scope is the resource type; practice (ODS) scoping will be added here.
fn scope_filter(sql: &mut Sql, alias: &str, ty: ResourceType) {
    sql.push(alias).push(".res_type = ").text(ty.as_str());
}

fn stored(
    ty: ResourceType,
    id: &str,
    version: i64,
    last_updated: i64,
    content: Option<String>,
) -> StorageResult<StoredResource> {
    Ok(StoredResource {
        resource_type: ty,
        id: LogicalId::parse(id).ok_or_else(|| {
            StorageError::Internal(anyhow::anyhow!("stored id is not a valid id"))
        })?,
        version,
        last_updated: Instant(last_updated),
        content,
    })
}

fn read_head(
    conn: &mut Conn,
    ty: ResourceType,
    id: &LogicalId,
    for_update: bool,
) -> StorageResult<Option<rows::Head>> {
    let mut sql = Sql::new();
    sql.push("SELECT version, last_updated, deleted, content FROM resources r WHERE ");
    scope_filter(&mut sql, "r", ty);
    sql.push(" AND r.res_id = ").text(id.as_str());
    if for_update && conn.dialect() == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    Ok(conn.load::<rows::Head>(&sql)?.into_iter().next())
}

/// Makes sure a head row exists (a `version = 0` placeholder if new) and locks it.
fn lock_head(conn: &mut Conn, ty: ResourceType, id: &LogicalId) -> StorageResult<rows::Head> {
    let mut sql = Sql::new();
    sql.push("INSERT INTO resources (res_type, res_id, version, last_updated, deleted, content) VALUES (")
        .text(ty.as_str())
        .push(", ")
        .text(id.as_str())
        .push(", 0, 0, 1, NULL) ON CONFLICT (res_type, res_id) DO NOTHING");
    conn.exec(&sql)?;
    read_head(conn, ty, id, true)?.ok_or_else(|| {
        StorageError::Internal(anyhow::anyhow!("head row vanished inside a transaction"))
    })
}

struct VersionWrite<'a> {
    ty: ResourceType,
    id: &'a LogicalId,
    version: VersionId,
    at: Instant,
    method: &'static str,
    content: Option<String>,
}

/// Writes one version: the head row, the version row, and replaces index rows.
/// `fresh` means the head row does not exist yet (a create with a new id): it is
/// inserted rather than updated and there are no old index rows to remove.
fn write_version(
    conn: &mut Conn,
    w: VersionWrite<'_>,
    indexes: &[IndexRow],
    fresh: bool,
) -> StorageResult<()> {
    let mut sql = Sql::prepared();
    if fresh {
        sql.push("INSERT INTO resources (res_type, res_id, version, last_updated, deleted, content) VALUES (")
            .text(w.ty.as_str())
            .push(", ")
            .text(w.id.as_str())
            .push(", ")
            .int(w.version)
            .push(", ")
            .int(w.at.0)
            .push(", ")
            .int(i64::from(w.content.is_none()))
            .push(", ")
            .bind(Bind::OptText(w.content))
            .push(")");
    } else {
        // The version being superseded gets its content: until now it was
        // only in the head row (see `VERSION_CONTENT`).
        let mut keep = Sql::prepared();
        keep.push("UPDATE resource_versions SET content = (SELECT r.content FROM resources r WHERE r.res_type = ")
            .text(w.ty.as_str())
            .push(" AND r.res_id = ")
            .text(w.id.as_str())
            .push(") WHERE res_type = ")
            .text(w.ty.as_str())
            .push(" AND res_id = ")
            .text(w.id.as_str())
            .push(" AND content IS NULL AND version = (SELECT r.version FROM resources r WHERE r.res_type = ")
            .text(w.ty.as_str())
            .push(" AND r.res_id = ")
            .text(w.id.as_str())
            .push(")");
        conn.exec(&keep)?;
        sql.push("UPDATE resources SET version = ")
            .int(w.version)
            .push(", last_updated = ")
            .int(w.at.0)
            .push(", deleted = ")
            .int(i64::from(w.content.is_none()))
            .push(", content = ")
            .bind(Bind::OptText(w.content))
            .push(" WHERE res_type = ")
            .text(w.ty.as_str())
            .push(" AND res_id = ")
            .text(w.id.as_str());
    }
    conn.exec(&sql)?;

    let mut sql = Sql::prepared();
    sql.push("INSERT INTO resource_versions (res_type, res_id, version, last_updated, method, content) VALUES (")
        .text(w.ty.as_str())
        .push(", ")
        .text(w.id.as_str())
        .push(", ")
        .int(w.version)
        .push(", ")
        .int(w.at.0)
        .push(", ")
        .text(w.method)
        .push(", NULL)");
    conn.exec(&sql)?;

    if !fresh {
        search::delete_indexes(conn, w.ty, &[w.id])?;
    }
    search::insert_indexes(conn, w.ty, w.id, indexes)
}

/// The content of version row `v`. A version's content is stored once: the
/// current version's lives in its head row in `resources` (the version row holds
/// NULL until the version is superseded, when `write_version` copies it down);
/// a deletion has none anywhere. Rows written before this rule carry their
/// content themselves, which the COALESCE also reads.
const VERSION_CONTENT: &str = "COALESCE(v.content, (SELECT r.content FROM resources r WHERE r.res_type = v.res_type AND r.res_id = v.res_id AND r.version = v.version)) AS content";

fn read_current(
    conn: &mut Conn,
    ty: ResourceType,
    id: &LogicalId,
) -> StorageResult<StoredResource> {
    let head = read_head(conn, ty, id, false)?.ok_or(StorageError::NotFound)?;
    if head.version == 0 {
        return Err(StorageError::NotFound);
    }
    if head.deleted != 0 {
        return Err(StorageError::Gone {
            version: head.version,
            last_updated: Instant(head.last_updated),
        });
    }
    stored(
        ty,
        id.as_str(),
        head.version,
        head.last_updated,
        head.content,
    )
}

fn read_version(
    conn: &mut Conn,
    ty: ResourceType,
    id: &LogicalId,
    version: VersionId,
) -> StorageResult<StoredResource> {
    let mut sql = Sql::new();
    sql.push("SELECT seq, res_type, res_id, version, last_updated, method, ")
        .push(VERSION_CONTENT)
        .push(" FROM resource_versions v WHERE ");
    scope_filter(&mut sql, "v", ty);
    sql.push(" AND v.res_id = ")
        .text(id.as_str())
        .push(" AND v.version = ")
        .int(version);
    let row = conn
        .load::<rows::VersionRow>(&sql)?
        .into_iter()
        .next()
        .ok_or(StorageError::NotFound)?;
    if row.content.is_none() {
        return Err(StorageError::Gone {
            version: row.version,
            last_updated: Instant(row.last_updated),
        });
    }
    stored(ty, id.as_str(), row.version, row.last_updated, row.content)
}

fn serialize(resource: &serde_json::Value) -> StorageResult<String> {
    serde_json::to_string(resource).map_err(|e| StorageError::Internal(anyhow::Error::new(e)))
}

/// Stable 64-bit FNV-1a hash (for advisory-lock keys).
fn fnv1a(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

fn do_create(conn: &mut Conn, req: CreateRequest) -> StorageResult<WriteOutcome> {
    conn.write_tx(|conn| create_in(conn, req, None))
}

/// A create inside an open write transaction; `id` is a pre-assigned id (bundles
/// assign ids before writing so references between entries can be rewritten).
fn create_in(
    conn: &mut Conn,
    req: CreateRequest,
    id: Option<LogicalId>,
) -> StorageResult<WriteOutcome> {
    {
        if let Some(cond) = &req.if_none_exist {
            if conn.dialect() == Dialect::Postgres {
                let mut sql = Sql::new();
                // The one key of every conditional path (see `SearchQuery::selection_key`).
                let key = super::conditional_lock_key(cond);
                sql.push("SELECT pg_advisory_xact_lock(")
                    .int(fnv1a(&key))
                    .push(")");
                conn.exec(&sql)?;
            }
            let found = search::matches_for_write(conn, cond, 2)?;
            match found.len() {
                0 => {}
                1 => {
                    let f = found.into_iter().next().ok_or(StorageError::NotFound)?;
                    return Ok(WriteOutcome {
                        kind: WriteKind::Existing,
                        stored: Some(stored(
                            req.resource_type,
                            &f.res_id,
                            f.version,
                            f.last_updated,
                            f.content,
                        )?),
                    });
                }
                _ => {
                    return Err(StorageError::PreconditionFailed(
                        "If-None-Exist criteria match more than one resource".into(),
                    ))
                }
            }
        }
        let id = id.unwrap_or_else(LogicalId::generate);
        let at = Instant::now();
        let mut resource = req.content.resource;
        set_id(&mut resource, &id);
        stamp_meta(&mut resource, 1, at);
        let content = serialize(&resource)?;
        write_version(
            conn,
            VersionWrite {
                ty: req.resource_type,
                id: &id,
                version: 1,
                at,
                method: "POST",
                content: Some(content.clone()),
            },
            &req.content.indexes,
            true,
        )?;
        Ok(WriteOutcome {
            kind: WriteKind::Created,
            stored: Some(StoredResource {
                resource_type: req.resource_type,
                id: id.clone(),
                version: 1,
                last_updated: at,
                content: Some(content),
            }),
        })
    }
}

type Serialized = (ResourceType, LogicalId, String, Vec<IndexRow>);

/// Sets id and meta and serialises each resource; large batches on two threads
/// (the writer holds the write lock meanwhile, so this is on the critical path).
fn stamp_and_serialize(
    mut reqs: Vec<(CreateRequest, LogicalId)>,
    at: Instant,
) -> StorageResult<Vec<Serialized>> {
    let run = |reqs: Vec<(CreateRequest, LogicalId)>| -> StorageResult<Vec<Serialized>> {
        reqs.into_iter()
            .map(|(req, id)| {
                let mut resource = req.content.resource;
                set_id(&mut resource, &id);
                stamp_meta(&mut resource, 1, at);
                let content = serialize(&resource)?;
                Ok((req.resource_type, id, content, req.content.indexes))
            })
            .collect()
    };
    if reqs.len() < 64 {
        return run(reqs);
    }
    let second = reqs.split_off(reqs.len() / 2);
    let (mut first, second) = std::thread::scope(|s| {
        let other = s.spawn(|| run(second));
        (run(reqs), other.join())
    });
    let second = second
        .map_err(|_| StorageError::Internal(anyhow::anyhow!("serialisation thread panicked")))??;
    if let Ok(v) = &mut first {
        v.extend(second);
    }
    first
}

/// Many plain creates (fresh ids, no conditions) with multi-row INSERTs: the
/// bulk path of transaction Bundles and imports.
fn create_many_in(
    conn: &mut Conn,
    reqs: Vec<(CreateRequest, LogicalId)>,
    method: CreateMethod,
) -> StorageResult<Vec<WriteOutcome>> {
    let method = match method {
        CreateMethod::Post => "POST",
        CreateMethod::Put => "PUT",
    };
    const ROWS: usize = 100;
    let at = Instant::now();
    let mut prepared = stamp_and_serialize(reqs, at)?;
    for chunk in prepared.chunks(ROWS) {
        for (table, method) in [("resources", None), ("resource_versions", Some(method))] {
            let mut sql = Sql::prepared();
            sql.push("INSERT INTO ").push(table);
            match method {
                None => {
                    sql.push(" (res_type, res_id, version, last_updated, deleted, content) VALUES ")
                }
                Some(_) => {
                    sql.push(" (res_type, res_id, version, last_updated, method, content) VALUES ")
                }
            };
            for (i, (ty, id, content, _)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .text(ty.as_str())
                    .push(", ")
                    .text(id.as_str())
                    .push(", 1, ")
                    .int(at.0)
                    .push(", ");
                // The version row's content stays NULL: see `VERSION_CONTENT`.
                match method {
                    None => sql.push("0, ").text(content),
                    Some(m) => sql.text(m).push(", NULL"),
                };
                sql.push(")");
            }
            conn.exec(&sql)?;
        }
    }
    let items: Vec<(ResourceType, &LogicalId, &[IndexRow])> = prepared
        .iter()
        .map(|(ty, id, _, rows)| (*ty, id, rows.as_slice()))
        .collect();
    search::insert_indexes_many(conn, &items)?;
    let rows: Vec<Vec<IndexRow>> = prepared
        .iter_mut()
        .map(|p| std::mem::take(&mut p.3))
        .collect();
    let large = rows.len() > 64;
    drop_off_thread(rows, large);
    Ok(prepared
        .into_iter()
        .map(|(ty, id, content, _)| WriteOutcome {
            kind: WriteKind::Created,
            stored: Some(StoredResource {
                resource_type: ty,
                id,
                version: 1,
                last_updated: at,
                content: Some(content),
            }),
        })
        .collect())
}

fn set_id(resource: &mut serde_json::Value, id: &LogicalId) {
    if let Some(obj) = resource.as_object_mut() {
        obj.insert("id".into(), serde_json::Value::String(id.to_string()));
    }
}

fn same_content(stored: &str, incoming: &serde_json::Value) -> bool {
    match serde_json::from_str::<serde_json::Value>(stored) {
        Ok(mut old) => {
            strip_server_meta(&mut old);
            &old == incoming
        }
        Err(_) => false,
    }
}

fn do_update(conn: &mut Conn, req: UpdateRequest) -> StorageResult<WriteOutcome> {
    conn.write_tx(|conn| update_in(conn, req))
}

fn update_in(conn: &mut Conn, req: UpdateRequest) -> StorageResult<WriteOutcome> {
    {
        let head = lock_head(conn, req.resource_type, &req.id)?;
        let exists = head.version > 0 && head.deleted == 0;
        match req.precondition {
            Precondition::None => {}
            Precondition::VersionIs(v) => {
                if !exists || head.version != v {
                    return Err(StorageError::VersionConflict {
                        current: exists.then_some(head.version),
                    });
                }
            }
            Precondition::MustNotExist => {
                if exists {
                    return Err(StorageError::PreconditionFailed(
                        "If-None-Match: * but the resource exists".into(),
                    ));
                }
            }
        }
        let mut resource = req.content.resource.clone();
        set_id(&mut resource, &req.id);
        strip_server_meta(&mut resource);
        if exists {
            if let Some(old) = &head.content {
                if same_content(old, &resource) {
                    return Ok(WriteOutcome {
                        kind: WriteKind::Unchanged,
                        stored: Some(stored(
                            req.resource_type,
                            req.id.as_str(),
                            head.version,
                            head.last_updated,
                            head.content.clone(),
                        )?),
                    });
                }
            }
        }
        let version = head.version + 1;
        let at = Instant::now();
        stamp_meta(&mut resource, version, at);
        let content = serialize(&resource)?;
        write_version(
            conn,
            VersionWrite {
                ty: req.resource_type,
                id: &req.id,
                version,
                at,
                method: "PUT",
                content: Some(content.clone()),
            },
            &req.content.indexes,
            false,
        )?;
        Ok(WriteOutcome {
            kind: if exists {
                WriteKind::Updated
            } else {
                WriteKind::Created
            },
            stored: Some(StoredResource {
                resource_type: req.resource_type,
                id: req.id.clone(),
                version,
                last_updated: at,
                content: Some(content),
            }),
        })
    }
}

fn do_delete(conn: &mut Conn, req: DeleteRequest) -> StorageResult<WriteOutcome> {
    conn.write_tx(|conn| delete_in(conn, req))
}

fn delete_in(conn: &mut Conn, req: DeleteRequest) -> StorageResult<WriteOutcome> {
    {
        let Some(head) = read_head(conn, req.resource_type, &req.id, true)? else {
            if let Precondition::VersionIs(_) = req.precondition {
                return Err(StorageError::VersionConflict { current: None });
            }
            return Ok(WriteOutcome {
                kind: WriteKind::NothingToDelete,
                stored: None,
            });
        };
        let exists = head.version > 0 && head.deleted == 0;
        if let Precondition::VersionIs(v) = req.precondition {
            if !exists || head.version != v {
                return Err(StorageError::VersionConflict {
                    current: exists.then_some(head.version),
                });
            }
        }
        if !exists {
            return Ok(WriteOutcome {
                kind: WriteKind::NothingToDelete,
                stored: None,
            });
        }
        let version = head.version + 1;
        let at = Instant::now();
        write_version(
            conn,
            VersionWrite {
                ty: req.resource_type,
                id: &req.id,
                version,
                at,
                method: "DELETE",
                content: None,
            },
            &[],
            false,
        )?;
        Ok(WriteOutcome {
            kind: WriteKind::Deleted,
            stored: Some(StoredResource {
                resource_type: req.resource_type,
                id: req.id.clone(),
                version,
                last_updated: at,
                content: None,
            }),
        })
    }
}

fn do_history(conn: &mut Conn, q: HistoryQuery) -> StorageResult<HistoryPage> {
    let build = |count_only: bool| {
        let mut sql = Sql::new();
        if count_only {
            sql.push("SELECT COUNT(*) AS n FROM resource_versions v WHERE 1 = 1");
        } else {
            sql.push("SELECT seq, res_type, res_id, version, last_updated, method, ")
                .push(VERSION_CONTENT)
                .push(" FROM resource_versions v WHERE 1 = 1");
        }
        match &q.scope {
            HistoryScope::System => {}
            HistoryScope::Type(t) => {
                sql.push(" AND ");
                scope_filter(&mut sql, "v", *t);
            }
            HistoryScope::Instance(t, id) => {
                sql.push(" AND ");
                scope_filter(&mut sql, "v", *t);
                sql.push(" AND v.res_id = ").text(id.as_str());
            }
        }
        if let Some(since) = q.since {
            sql.push(" AND v.last_updated >= ").int(since.0);
        }
        if !count_only {
            if let Some(before) = q.before_seq {
                sql.push(" AND v.seq < ").int(before);
            }
            sql.push(" ORDER BY v.seq DESC LIMIT ")
                .int(i64::try_from(q.count + 1).unwrap_or(i64::MAX));
        }
        sql
    };
    let sql = build(false);
    let mut rows = conn.load::<rows::VersionRow>(&sql)?;
    let total = conn.count(&build(true))?;
    let next = if rows.len() > q.count {
        rows.truncate(q.count);
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    let mut entries = Vec::with_capacity(rows.len());
    for r in rows {
        let ty: ResourceType = r
            .res_type
            .parse()
            .map_err(|_| StorageError::Internal(anyhow::anyhow!("unknown stored type")))?;
        entries.push(HistoryEntry {
            seq: r.seq,
            resource: stored(ty, &r.res_id, r.version, r.last_updated, r.content)?,
            method: r.method,
        });
    }
    Ok(HistoryPage {
        entries,
        total,
        next_before_seq: next,
    })
}

#[async_trait]
impl ResourceRead for SqlBackend {
    async fn read(
        &self,
        _ctx: &RequestContext,
        ty: ResourceType,
        id: &LogicalId,
    ) -> StorageResult<StoredResource> {
        let id = id.clone();
        self.blocking(move |mut conn| read_current(&mut conn, ty, &id))
            .await
    }

    async fn vread(
        &self,
        _ctx: &RequestContext,
        ty: ResourceType,
        id: &LogicalId,
        version: VersionId,
    ) -> StorageResult<StoredResource> {
        let id = id.clone();
        self.blocking(move |mut conn| read_version(&mut conn, ty, &id, version))
            .await
    }
}

#[async_trait]
impl ResourceWrite for SqlBackend {
    async fn create(
        &self,
        _ctx: &RequestContext,
        req: CreateRequest,
    ) -> StorageResult<WriteOutcome> {
        self.blocking(move |mut conn| do_create(&mut conn, req))
            .await
    }

    async fn update(
        &self,
        _ctx: &RequestContext,
        req: UpdateRequest,
    ) -> StorageResult<WriteOutcome> {
        self.blocking(move |mut conn| do_update(&mut conn, req))
            .await
    }

    async fn delete(
        &self,
        _ctx: &RequestContext,
        req: DeleteRequest,
    ) -> StorageResult<WriteOutcome> {
        self.blocking(move |mut conn| do_delete(&mut conn, req))
            .await
    }
}

#[async_trait]
impl History for SqlBackend {
    async fn history(
        &self,
        _ctx: &RequestContext,
        query: HistoryQuery,
    ) -> StorageResult<HistoryPage> {
        self.blocking(move |mut conn| do_history(&mut conn, query))
            .await
    }
}

#[async_trait]
impl Search for SqlBackend {
    async fn search(
        &self,
        _ctx: &RequestContext,
        query: &SearchQuery,
    ) -> StorageResult<SearchPage> {
        let query = query.clone();
        self.blocking(move |mut conn| search::run(&mut conn, &query))
            .await
    }
}

#[async_trait]
impl PageTokens for SqlBackend {
    async fn put_pages(
        &self,
        _ctx: &RequestContext,
        ty: ResourceType,
        params: Vec<String>,
        ttl: std::time::Duration,
    ) -> StorageResult<Vec<String>> {
        let now = Instant::now().0;
        let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
        let tokens: Vec<String> = params
            .iter()
            .map(|_| uuid::Uuid::new_v4().simple().to_string())
            .collect();
        let out = tokens.clone();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let mut sweep = Sql::prepared();
                sweep
                    .push("DELETE FROM page_tokens WHERE expires_at < ")
                    .int(now);
                conn.exec(&sweep)?;
                for (token, p) in tokens.iter().zip(&params) {
                    let mut sql = Sql::prepared();
                    sql.push(
                        "INSERT INTO page_tokens (token, res_type, params, expires_at) VALUES (",
                    )
                    .text(token)
                    .push(", ")
                    .text(ty.as_str())
                    .push(", ")
                    .text(p)
                    .push(", ")
                    .int(expires)
                    .push(")");
                    conn.exec(&sql)?;
                }
                Ok(())
            })
        })
        .await?;
        Ok(out)
    }

    async fn get_page(
        &self,
        _ctx: &RequestContext,
        token: &str,
    ) -> StorageResult<Option<(ResourceType, String)>> {
        let token = token.to_owned();
        let now = Instant::now().0;
        self.blocking(move |mut conn| {
            let mut sql = Sql::new();
            sql.push("SELECT res_type, params FROM page_tokens WHERE token = ")
                .text(&token)
                .push(" AND expires_at >= ")
                .int(now);
            Ok(conn
                .load::<rows::PageToken>(&sql)?
                .into_iter()
                .next()
                .and_then(|r| Some((r.res_type.parse().ok()?, r.params))))
        })
        .await
    }
}

/// [`TxOps`] over one connection with an open write transaction.
struct SqlTx<'c> {
    conn: &'c mut Conn,
}

impl TxOps for SqlTx<'_> {
    fn create(&mut self, req: CreateRequest, id: Option<LogicalId>) -> StorageResult<WriteOutcome> {
        create_in(self.conn, req, id)
    }
    fn update(&mut self, req: UpdateRequest) -> StorageResult<WriteOutcome> {
        update_in(self.conn, req)
    }
    fn create_many(
        &mut self,
        reqs: Vec<(CreateRequest, LogicalId)>,
        method: CreateMethod,
    ) -> StorageResult<Vec<WriteOutcome>> {
        create_many_in(self.conn, reqs, method)
    }
    fn existing_ids(
        &mut self,
        ty: ResourceType,
        ids: &[&LogicalId],
    ) -> StorageResult<std::collections::HashSet<String>> {
        let mut out = std::collections::HashSet::new();
        for chunk in ids.chunks(500) {
            let mut sql = Sql::new();
            sql.push("SELECT r.res_id AS res_id FROM resources r WHERE ");
            scope_filter(&mut sql, "r", ty);
            sql.push(" AND r.res_id IN (")
                .text_list(chunk.iter().map(|id| id.as_str()))
                .push(")");
            out.extend(
                self.conn
                    .load::<rows::ResId>(&sql)?
                    .into_iter()
                    .map(|r| r.res_id),
            );
        }
        Ok(out)
    }
    fn delete(&mut self, req: DeleteRequest) -> StorageResult<WriteOutcome> {
        delete_in(self.conn, req)
    }
    fn read(&mut self, ty: ResourceType, id: &LogicalId) -> StorageResult<StoredResource> {
        read_current(self.conn, ty, id)
    }
    fn vread(
        &mut self,
        ty: ResourceType,
        id: &LogicalId,
        version: VersionId,
    ) -> StorageResult<StoredResource> {
        read_version(self.conn, ty, id, version)
    }
    fn find(&mut self, query: &SearchQuery, limit: usize) -> StorageResult<Vec<StoredResource>> {
        search::matches_for_write(self.conn, query, limit)?
            .into_iter()
            .map(|f| {
                stored(
                    query.resource_type,
                    &f.res_id,
                    f.version,
                    f.last_updated,
                    f.content,
                )
            })
            .collect()
    }
    fn search(&mut self, query: &SearchQuery) -> StorageResult<SearchPage> {
        search::run(self.conn, query)
    }
    fn lock(&mut self, key: &str) -> StorageResult<()> {
        if self.conn.dialect() == Dialect::Postgres {
            let mut sql = Sql::new();
            sql.push("SELECT pg_advisory_xact_lock(")
                .int(fnv1a(key))
                .push(")");
            self.conn.exec(&sql)?;
        }
        Ok(())
    }
}

#[async_trait]
impl Transactions for SqlBackend {
    async fn transaction(
        &self,
        _ctx: &RequestContext,
        work: TxWork,
    ) -> StorageResult<Box<dyn std::any::Any + Send>> {
        self.blocking(move |mut conn| conn.write_tx(|conn| work(&mut SqlTx { conn })))
            .await
    }
}

#[async_trait]
impl Backend for SqlBackend {
    fn transactions(&self) -> Option<&dyn Transactions> {
        Some(self)
    }
    fn page_tokens(&self) -> Option<&dyn PageTokens> {
        Some(self)
    }
    fn reindex(&self) -> Option<&dyn Reindex> {
        Some(self)
    }
    fn jobs(&self) -> Option<&dyn Jobs> {
        Some(self)
    }
    fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }
    fn reader(&self) -> Option<&dyn ResourceRead> {
        Some(self)
    }
    fn writer(&self) -> Option<&dyn ResourceWrite> {
        Some(self)
    }
    fn history(&self) -> Option<&dyn History> {
        Some(self)
    }
    fn search(&self) -> Option<&dyn Search> {
        Some(self)
    }
    async fn ping(&self) -> StorageResult<()> {
        self.blocking(|mut conn| conn.ping()).await
    }
    fn pool_state(&self) -> (u32, u32) {
        let state = match &self.pools {
            Pools::Sqlite(p) => p.state(),
            Pools::Postgres(p) => p.state(),
        };
        (
            state.connections.saturating_sub(state.idle_connections),
            state.idle_connections,
        )
    }
}

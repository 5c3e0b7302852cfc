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
//!
//! This file holds [`SqlBackend`] (opening, pools, migrations, the SQLite
//! checkpointer, the blocking pool) and the storage trait impls, which delegate
//! to the modules that do the work: `builder` (the `Sql` statement builder),
//! `conn` (connections and the `sql_ops!` statement runners), `rows` (result
//! rows), `read`, `write`, `history`, `page_tokens`, `search` and `reindex`.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context as _;
use async_trait::async_trait;
use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, CustomizeConnection, Pool};
use diesel::sqlite::SqliteConnection;
use diesel::{Connection as _, RunQueryDsl as _};
use diesel_migrations::{embed_migrations, EmbeddedMigrations, MigrationHarness};

use super::*;
use crate::model::{LogicalId, ResourceType, VersionId};
use crate::search::types::SearchQuery;

mod audit;
mod builder;
mod conn;
mod history;
mod jobs;
mod page_tokens;
mod read;
mod reindex;
mod rows;
mod search;
mod write;

use builder::Sql;
use conn::Conn;

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
            // AuditEvents are the audit trail's (`Audit`): read and search only.
            types: ResourceType::ALL
                .iter()
                .map(|t| {
                    if *t == ResourceType::AuditEvent {
                        (*t, [Interaction::Read, Interaction::SearchType].into())
                    } else {
                        (*t, all.clone())
                    }
                })
                .collect(),
            system_history: true,
            conditional_create: true,
            update_create: true,
            search_params: crate::storage::SearchParams::Registry,
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

/// The type predicate of every statement that reads resources (`alias` is a
/// `resources` or `resource_versions` row). Practice (ODS) scoping goes here.
fn scope_filter(sql: &mut Sql, alias: &str, ty: ResourceType) {
    sql.push(alias).push(".res_type = ").text(ty.as_str());
}

/// The scope chokepoint for sets a caller reads (`_include`/`_revinclude`
/// results, history and its total): [`scope_filter`] and the policy's
/// restriction for `ty`, as SQL on `alias`. (Search matches and conditional
/// matches carry the restriction in their query: the service ANDs it in.)
fn caller_scope(sql: &mut Sql, sqlite: bool, alias: &str, ty: ResourceType, ctx: &RequestContext) {
    scoped(sql, sqlite, alias, ty, &ctx.restriction(ty));
}

/// [`scope_filter`] and ` AND <restriction>` (nothing more when it is `None`).
fn scoped(
    sql: &mut Sql,
    sqlite: bool,
    alias: &str,
    ty: ResourceType,
    restriction: &crate::policy::Restriction,
) {
    scope_filter(sql, alias, ty);
    match restriction {
        crate::policy::Restriction::None => {}
        crate::policy::Restriction::Everything => {
            sql.push(" AND 1 = 0");
        }
        crate::policy::Restriction::Where(p) => {
            sql.push(" AND ");
            let mut a = search::Aliases::for_dialect(sqlite);
            search::predicate(sql, &mut a, p, alias, ty);
        }
    }
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
        self.blocking(move |mut conn| read::read_current(&mut conn, ty, &id))
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
        self.blocking(move |mut conn| read::read_version(&mut conn, ty, &id, version))
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
        self.blocking(move |mut conn| write::do_create(&mut conn, req))
            .await
    }

    async fn update(
        &self,
        _ctx: &RequestContext,
        req: UpdateRequest,
    ) -> StorageResult<WriteOutcome> {
        self.blocking(move |mut conn| write::do_update(&mut conn, req))
            .await
    }

    async fn delete(
        &self,
        _ctx: &RequestContext,
        req: DeleteRequest,
    ) -> StorageResult<WriteOutcome> {
        self.blocking(move |mut conn| write::do_delete(&mut conn, req))
            .await
    }
}

#[async_trait]
impl History for SqlBackend {
    async fn history(
        &self,
        ctx: &RequestContext,
        query: HistoryQuery,
    ) -> StorageResult<HistoryPage> {
        let ctx = ctx.clone();
        self.blocking(move |mut conn| history::do_history(&mut conn, query, &ctx))
            .await
    }
}

#[async_trait]
impl Search for SqlBackend {
    async fn search(&self, ctx: &RequestContext, query: &SearchQuery) -> StorageResult<SearchPage> {
        let query = query.clone();
        let ctx = ctx.clone();
        self.blocking(move |mut conn| search::run(&mut conn, &query, &ctx))
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
        page_tokens::put(self, ty, params, ttl).await
    }

    async fn get_page(
        &self,
        _ctx: &RequestContext,
        token: &str,
    ) -> StorageResult<Option<(ResourceType, String)>> {
        page_tokens::get(self, token).await
    }
}

/// [`TxOps`] over one connection with an open write transaction.
struct SqlTx<'c> {
    conn: &'c mut Conn,
    ctx: &'c RequestContext,
}

impl TxOps for SqlTx<'_> {
    fn ctx(&self) -> &RequestContext {
        self.ctx
    }
    fn create(&mut self, req: CreateRequest, id: Option<LogicalId>) -> StorageResult<WriteOutcome> {
        write::create_in(self.conn, req, id)
    }
    fn update(&mut self, req: UpdateRequest) -> StorageResult<WriteOutcome> {
        write::update_in(self.conn, req)
    }
    fn create_many(
        &mut self,
        reqs: Vec<(CreateRequest, LogicalId)>,
        method: CreateMethod,
    ) -> StorageResult<Vec<WriteOutcome>> {
        write::create_many_in(self.conn, reqs, method)
    }
    fn existing_ids(
        &mut self,
        ty: ResourceType,
        ids: &[&LogicalId],
    ) -> StorageResult<std::collections::HashSet<String>> {
        write::existing_ids(self.conn, ty, ids)
    }
    fn delete(&mut self, req: DeleteRequest) -> StorageResult<WriteOutcome> {
        write::delete_in(self.conn, req)
    }
    fn read(&mut self, ty: ResourceType, id: &LogicalId) -> StorageResult<StoredResource> {
        read::read_current(self.conn, ty, id)
    }
    fn vread(
        &mut self,
        ty: ResourceType,
        id: &LogicalId,
        version: VersionId,
    ) -> StorageResult<StoredResource> {
        read::read_version(self.conn, ty, id, version)
    }
    fn find(&mut self, query: &SearchQuery, limit: usize) -> StorageResult<Vec<StoredResource>> {
        search::matches_for_write(self.conn, query, limit)?
            .into_iter()
            .map(|f| {
                read::stored(
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
        search::run(self.conn, query, self.ctx)
    }
    fn lock(&mut self, key: &str) -> StorageResult<()> {
        write::advisory_lock(self.conn, key)
    }
    fn enqueue(&mut self, job: crate::storage::jobs::NewJob) -> StorageResult<Option<String>> {
        let id = LogicalId::generate().to_string();
        let now = crate::model::Instant::now().0;
        Ok(jobs::insert_job(self.conn, &id, &job, now)?.then_some(id))
    }
}

#[async_trait]
impl Transactions for SqlBackend {
    async fn transaction(&self, ctx: &RequestContext, work: TxWork) -> StorageResult<()> {
        let ctx = ctx.clone();
        self.blocking(move |mut conn| conn.write_tx(|conn| work(&mut SqlTx { conn, ctx: &ctx })))
            .await
    }
}

#[async_trait]
impl Audit for SqlBackend {
    async fn append(&self, _ctx: &RequestContext, batch: Vec<AuditRecord>) -> StorageResult<()> {
        audit::append(self, batch).await
    }

    async fn read_audit(
        &self,
        _ctx: &RequestContext,
        id: &str,
        reach: Option<&[String]>,
    ) -> StorageResult<Option<StoredAudit>> {
        audit::read(self, id.to_owned(), reach.map(<[String]>::to_vec)).await
    }

    async fn search_audit(
        &self,
        _ctx: &RequestContext,
        filter: &AuditFilter,
        page: &AuditPageRequest,
    ) -> StorageResult<AuditPage> {
        audit::search(self, filter.clone(), page.clone()).await
    }
}

#[async_trait]
impl Backend for SqlBackend {
    fn audit(&self) -> Option<&dyn Audit> {
        Some(self)
    }
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

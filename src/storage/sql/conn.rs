//! A checked-out connection of either dialect ([`Conn`]) and the statement
//! runners `sql_ops!` expands for each diesel connection type: load, execute and
//! count a [`Sql`] statement, write transactions (`BEGIN IMMEDIATE` under the
//! process-wide writer gate on SQLite), and the mapping of diesel errors to
//! [`StorageError`]s.

use std::sync::Arc;

use diesel::connection::SimpleConnection;
use diesel::pg::PgConnection;
use diesel::r2d2::{ConnectionManager, PooledConnection};
use diesel::sqlite::SqliteConnection;

use super::builder::{traced, Bind, Sql};
use super::{rows, Dialect, WriteGate};
use crate::storage::{StorageError, StorageResult};

/// A checked-out connection of either dialect.
pub(super) enum Conn {
    Sqlite(
        PooledConnection<ConnectionManager<SqliteConnection>>,
        Arc<WriteGate>,
    ),
    Postgres(PooledConnection<ConnectionManager<PgConnection>>),
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
    pub(super) fn dialect(&self) -> Dialect {
        match self {
            Conn::Sqlite(..) => Dialect::Sqlite,
            Conn::Postgres(_) => Dialect::Postgres,
        }
    }

    pub(super) fn load<R>(&mut self, sql: &Sql) -> StorageResult<Vec<R>>
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

    pub(super) fn exec(&mut self, sql: &Sql) -> StorageResult<usize> {
        match self {
            Conn::Sqlite(c, _) => sqlite_ops::exec(c, sql),
            Conn::Postgres(c) => pg_ops::exec(c, sql),
        }
        .map_err(internal)
    }

    pub(super) fn count(&mut self, sql: &Sql) -> StorageResult<i64> {
        traced(sql, || match self {
            Conn::Sqlite(c, _) => sqlite_ops::count(c, sql),
            Conn::Postgres(c) => pg_ops::count(c, sql),
        })
        .map_err(internal)
    }

    /// Runs `f` in a write transaction: `BEGIN IMMEDIATE` under the process-wide
    /// writer mutex on SQLite, an ordinary transaction on PostgreSQL.
    pub(super) fn write_tx<T>(
        &mut self,
        f: impl FnOnce(&mut Conn) -> StorageResult<T>,
    ) -> StorageResult<T> {
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

    pub(super) fn simple(&mut self, sql: &str) -> StorageResult<()> {
        match self {
            Conn::Sqlite(c, _) => c.batch_execute(sql),
            Conn::Postgres(c) => c.batch_execute(sql),
        }
        .map_err(internal)
    }

    pub(super) fn ping(&mut self) -> StorageResult<()> {
        self.simple("SELECT 1")
    }
}

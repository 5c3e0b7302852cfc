//! History: version rows newest first (system, type or instance), with the
//! `_since` bound, keyset paging on the version sequence and the total.

use super::builder::Sql;
use super::conn::Conn;
use super::read::{stored, VERSION_CONTENT};
use super::{caller_scope, rows, scoped, Dialect};
use crate::context::RequestContext;
use crate::model::ResourceType;
use crate::storage::{
    HistoryEntry, HistoryPage, HistoryQuery, HistoryScope, StorageError, StorageResult,
};

/// History under `ctx`'s restriction: a version is listed (and counted) when
/// its resource, as it is now, is one the caller may see.
pub(super) fn do_history(
    conn: &mut Conn,
    q: HistoryQuery,
    ctx: &RequestContext,
) -> StorageResult<HistoryPage> {
    let sqlite = conn.dialect() == Dialect::Sqlite;
    // System history under a restriction: the restricted types, decided once.
    let restricted: Vec<_> = match q.scope {
        HistoryScope::System if !ctx.unrestricted() => ResourceType::ALL
            .iter()
            .map(|t| (*t, ctx.restriction(*t)))
            .filter(|(_, r)| !r.is_none())
            .collect(),
        _ => Vec::new(),
    };
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
            HistoryScope::System if restricted.is_empty() => {}
            HistoryScope::System => {
                // Types without a restriction as they are; each restricted
                // type under its own.
                sql.push(" AND (v.res_type NOT IN (")
                    .text_list(restricted.iter().map(|(t, _)| t.as_str()))
                    .push(")");
                for (t, r) in &restricted {
                    sql.push(" OR (");
                    scoped(&mut sql, sqlite, "v", *t, r);
                    sql.push(")");
                }
                sql.push(")");
            }
            HistoryScope::Type(t) => {
                sql.push(" AND ");
                caller_scope(&mut sql, sqlite, "v", *t, ctx);
            }
            HistoryScope::Instance(t, id) => {
                sql.push(" AND ");
                caller_scope(&mut sql, sqlite, "v", *t, ctx);
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

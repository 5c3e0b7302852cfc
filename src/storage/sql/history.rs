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
    // System history under a restriction: each type's restriction decided
    // once, for the types stored at all (a loose index scan of the head
    // rows; a type first stored after it is left out, failing closed), so a
    // Consent restricting every compartment type does not put ~100 branches
    // into the statement.
    let (restricted, open): (Vec<_>, Vec<ResourceType>) = match q.scope {
        HistoryScope::System if !ctx.unrestricted() => {
            let present = present_types(conn)?;
            let (r, o): (Vec<_>, Vec<_>) = present
                .into_iter()
                .map(|t| (t, ctx.restriction(t)))
                .partition(|(_, r)| !r.is_none());
            (r, o.into_iter().map(|(t, _)| t).collect())
        }
        _ => (Vec::new(), Vec::new()),
    };
    let system_restricted = matches!(q.scope, HistoryScope::System) && !ctx.unrestricted();
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
            HistoryScope::System if !system_restricted => {}
            HistoryScope::System => {
                // Types without a restriction as they are; each restricted
                // type under its own.
                sql.push(" AND (1 = 0");
                if !open.is_empty() {
                    sql.push(" OR v.res_type IN (")
                        .text_list(open.iter().map(|t| t.as_str()))
                        .push(")");
                }
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

/// The resource types with at least one head row (an index probe per type).
fn present_types(conn: &mut Conn) -> StorageResult<Vec<ResourceType>> {
    let mut sql = Sql::new();
    sql.push(
        "WITH RECURSIVE t(r) AS (SELECT MIN(res_type) FROM resources \
         UNION ALL SELECT (SELECT MIN(res_type) FROM resources WHERE res_type > t.r) \
         FROM t WHERE t.r IS NOT NULL) \
         SELECT r AS target_type, '' AS target_id FROM t WHERE r IS NOT NULL",
    );
    Ok(conn
        .load::<rows::Target>(&sql)?
        .into_iter()
        .filter_map(|r| r.target_type.parse().ok())
        .collect())
}

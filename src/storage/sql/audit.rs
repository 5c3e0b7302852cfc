//! `Audit` on the `audit_events` table (migration 000007): a batch appended
//! in one write transaction, reads by id, searches under the caller's reach
//! with keyset paging on (`recorded`, `seq`).

use super::builder::Sql;
use super::conn::Conn;
use super::{Dialect, SqlBackend};
use crate::storage::audit::{
    AuditCursor, AuditFilter, AuditPage, AuditPageRequest, AuditRecord, Cmp, StoredAudit,
};
use crate::storage::StorageResult;

#[derive(diesel::QueryableByName, Debug)]
struct AuditRow {
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    seq: i64,
    #[diesel(sql_type = diesel::sql_types::BigInt)]
    recorded: i64,
    #[diesel(sql_type = diesel::sql_types::Text)]
    id: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    content: String,
}

/// Rows per INSERT statement.
const CHUNK: usize = 64;

pub(super) async fn append(backend: &SqlBackend, batch: Vec<AuditRecord>) -> StorageResult<()> {
    if batch.is_empty() {
        return Ok(());
    }
    backend
        .blocking(move |mut conn| {
            conn.write_tx(|conn| {
                for chunk in batch.chunks(CHUNK) {
                    let mut sql = if chunk.len() == CHUNK {
                        Sql::prepared()
                    } else {
                        Sql::new()
                    };
                    sql.push(
                        "INSERT INTO audit_events (id, recorded, patient_id, type, subtype, \
                         action, outcome, agent, entity_refs, content) VALUES ",
                    );
                    for (i, r) in chunk.iter().enumerate() {
                        if i > 0 {
                            sql.push(", ");
                        }
                        let refs = if r.entities.is_empty() {
                            String::new()
                        } else {
                            format!("|{}|", r.entities.join("|"))
                        };
                        sql.push("(")
                            .text(&r.id)
                            .push(", ")
                            .int(r.recorded)
                            .push(", ")
                            .bind(super::builder::Bind::OptText(r.patient_id.clone()))
                            .push(", ")
                            .text(&r.type_code)
                            .push(", ")
                            .text(&r.subtype)
                            .push(", ")
                            .text(&r.action)
                            .push(", ")
                            .text(&r.outcome)
                            .push(", ")
                            .bind(super::builder::Bind::OptText(r.agent.clone()))
                            .push(", ")
                            .text(&refs)
                            .push(", ")
                            .text(&r.content)
                            .push(")");
                    }
                    conn.exec(&sql)?;
                }
                Ok(())
            })
        })
        .await
}

pub(super) async fn read(
    backend: &SqlBackend,
    id: String,
    reach: Option<Vec<String>>,
) -> StorageResult<Option<StoredAudit>> {
    backend
        .blocking(move |mut conn| {
            let mut sql = Sql::new();
            sql.push("SELECT seq, recorded, id, content FROM audit_events WHERE id = ")
                .text(&id);
            if let Some(reach) = &reach {
                in_list(&mut sql, "patient_id", reach);
            }
            Ok(conn
                .load::<AuditRow>(&sql)?
                .into_iter()
                .next()
                .map(|r| StoredAudit {
                    id: r.id,
                    content: r.content,
                }))
        })
        .await
}

/// ` AND col IN (…)` (`AND 1 = 0` for an empty list).
fn in_list(sql: &mut Sql, col: &str, items: &[String]) {
    if items.is_empty() {
        sql.push(" AND 1 = 0");
    } else {
        sql.push(" AND ")
            .push(col)
            .push(" IN (")
            .text_list(items)
            .push(")");
    }
}

/// ` AND col IN (…)` unless the list is empty (no condition).
fn any_of(sql: &mut Sql, col: &str, items: &[String]) {
    if !items.is_empty() {
        in_list(sql, col, items);
    }
}

pub(super) async fn search(
    backend: &SqlBackend,
    filter: AuditFilter,
    page: AuditPageRequest,
) -> StorageResult<AuditPage> {
    backend
        .blocking(move |mut conn| run_search(&mut conn, &filter, &page))
        .await
}

fn run_search(
    conn: &mut Conn,
    filter: &AuditFilter,
    page: &AuditPageRequest,
) -> StorageResult<AuditPage> {
    let mut sql = Sql::new();
    sql.push("SELECT seq, recorded, id, content FROM audit_events WHERE 1 = 1");
    any_of(&mut sql, "id", &filter.ids);
    if let Some(reach) = &filter.reach {
        in_list(&mut sql, "patient_id", reach);
    }
    any_of(&mut sql, "patient_id", &filter.patients);
    for (cmp, at) in &filter.dates {
        let op = match cmp {
            Cmp::Ge => " >= ",
            Cmp::Gt => " > ",
            Cmp::Le => " <= ",
            Cmp::Lt => " < ",
        };
        sql.push(" AND recorded").push(op).int(*at);
    }
    any_of(&mut sql, "type", &filter.type_codes);
    any_of(&mut sql, "subtype", &filter.subtypes);
    any_of(&mut sql, "outcome", &filter.outcomes);
    any_of(&mut sql, "agent", &filter.agents);
    if !filter.entities.is_empty() {
        let contains = match conn.dialect() {
            Dialect::Sqlite => "instr(entity_refs, ",
            Dialect::Postgres => "strpos(entity_refs, ",
        };
        sql.push(" AND (");
        for (i, e) in filter.entities.iter().enumerate() {
            if i > 0 {
                sql.push(" OR ");
            }
            // `Type/id` from the start of a reference; a bare id after any type.
            let lead = if e.contains('/') { '|' } else { '/' };
            sql.push(contains)
                .text(&format!("{lead}{e}|"))
                .push(") > 0 OR ")
                .push(contains)
                .text(&format!("{lead}{e}/_history/"))
                .push(") > 0");
        }
        sql.push(")");
    }
    let (cmp, dir) = if page.ascending {
        (" > ", " ASC")
    } else {
        (" < ", " DESC")
    };
    if let Some(c) = page.after {
        sql.push(" AND (recorded")
            .push(cmp)
            .int(c.recorded)
            .push(" OR (recorded = ")
            .int(c.recorded)
            .push(" AND seq")
            .push(cmp)
            .int(c.seq)
            .push("))");
    }
    sql.push(" ORDER BY recorded")
        .push(dir)
        .push(", seq")
        .push(dir)
        .push(" LIMIT ")
        .int(
            i64::try_from(page.count)
                .unwrap_or(i64::MAX)
                .saturating_add(1),
        );
    let mut rows = conn.load::<AuditRow>(&sql)?;
    let next = if rows.len() > page.count {
        rows.truncate(page.count);
        rows.last().map(|r| AuditCursor {
            recorded: r.recorded,
            seq: r.seq,
        })
    } else {
        None
    };
    Ok(AuditPage {
        events: rows
            .into_iter()
            .map(|r| StoredAudit {
                id: r.id,
                content: r.content,
            })
            .collect(),
        next,
    })
}

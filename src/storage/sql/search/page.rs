//! One page of a search: sort keys as typed columns, keyset conditions in both
//! directions, the page's rows joined to `resources`, cursors for the links,
//! and counts and totals (`_total`, capped at [`TOTAL_CAP`]).

use super::plan::{push_selection, source_of, Source};
use super::predicate::{by_owner, Aliases};
use crate::search::registry::ParamKind;
use crate::search::types::*;
use crate::storage::sql::builder::{Bind, Sql};
use crate::storage::sql::conn::Conn;
use crate::storage::sql::{rows, scope_filter};
use crate::storage::StorageResult;

pub(super) fn count(conn: &mut Conn, query: &SearchQuery) -> StorageResult<i64> {
    let mut sql = Sql::new();
    let mut a = Aliases::for_conn(conn);
    let source = source_of(query);
    sql.push(match source {
        Source::Resources => "SELECT COUNT(*) AS n",
        Source::Index => "SELECT COUNT(DISTINCT r.res_id) AS n",
    });
    push_selection(&mut sql, &mut a, query, source);
    conn.count(&sql)
}

/// Which typed column a sort key lands in.
#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyCol {
    Text,
    Int,
    Real,
}

fn key_col(key: SortKey) -> KeyCol {
    match key {
        SortKey::Id => KeyCol::Text,
        SortKey::LastUpdated => KeyCol::Int,
        SortKey::Param(p) => match p.kind {
            ParamKind::Date => KeyCol::Int,
            ParamKind::Number | ParamKind::Quantity => KeyCol::Real,
            _ => KeyCol::Text,
        },
    }
}

/// The SQL of one sort key over the `r` row.
fn push_key_expr(sql: &mut Sql, spec: &SortSpec, sqlite: bool) {
    match spec.key {
        SortKey::Id => {
            sql.push("r.res_id");
        }
        SortKey::LastUpdated => {
            sql.push("r.last_updated");
        }
        SortKey::Param(p) => {
            let (col, table) = match p.kind {
                ParamKind::Token => ("code", "idx_token"),
                ParamKind::String => ("norm", "idx_string"),
                ParamKind::Date => (if spec.descending { "hi" } else { "lo" }, "idx_date"),
                ParamKind::Number => ("value", "idx_number"),
                ParamKind::Quantity => ("value", "idx_quantity"),
                ParamKind::Reference => ("target_id", "idx_reference"),
                ParamKind::Uri | ParamKind::Composite => ("value", "idx_uri"),
            };
            // The candidate's own rows, through the owner index: a covering
            // lookup index would tempt SQLite into scanning every row of the
            // parameter for each candidate.
            sql.push("(SELECT ")
                .push(if spec.descending { "MAX(" } else { "MIN(" })
                .push("s.")
                .push(col)
                .push(") FROM ");
            by_owner(sql, sqlite, table, "s");
            sql.push(
                " WHERE s.res_type = r.res_type AND s.res_id = r.res_id AND (s.param || '') = ",
            )
            .text(&p.code)
            .push(")");
        }
    }
}

fn bind_key(sql: &mut Sql, v: &KeyValue) {
    match v {
        KeyValue::Int(i) => {
            sql.int(*i);
        }
        KeyValue::Real(f) => {
            sql.bind(Bind::Real(*f));
        }
        KeyValue::Text(t) => {
            sql.text(t);
        }
        KeyValue::Null => {
            sql.push("NULL");
        }
    }
}

/// Keyset condition: rows strictly after (or before) the cursor in
/// (nulls-last keys…, res_id) order.
fn push_keyset(sql: &mut Sql, sort: &[SortSpec], cursor: &Cursor) {
    let col = |i: usize, spec: &SortSpec| {
        let suffix = match key_col(spec.key) {
            KeyCol::Text => "t",
            KeyCol::Int => "i",
            KeyCol::Real => "r",
        };
        format!("q.k{i}_{suffix}")
    };
    sql.push("(");
    for i in 0..=sort.len() {
        if i > 0 {
            sql.push(" OR ");
        }
        sql.push("(");
        // Equal on every earlier key.
        for (j, spec) in sort.iter().enumerate().take(i) {
            let c = col(j, spec);
            match cursor.keys.get(j).unwrap_or(&KeyValue::Null) {
                KeyValue::Null => {
                    sql.push(&c).push(" IS NULL AND ");
                }
                v => {
                    sql.push(&c).push(" = ");
                    bind_key(sql, v);
                    sql.push(" AND ");
                }
            }
        }
        if i == sort.len() {
            sql.push("q.res_id")
                .push(if cursor.backwards { " < " } else { " > " })
                .text(&cursor.id);
        } else {
            let spec = &sort[i];
            let c = col(i, spec);
            let v = cursor.keys.get(i).unwrap_or(&KeyValue::Null);
            let after_op = if spec.descending ^ cursor.backwards {
                " < "
            } else {
                " > "
            };
            match (v, cursor.backwards) {
                // Nulls sort last: after a null there is nothing on this key.
                (KeyValue::Null, false) => {
                    sql.push("1 = 0");
                }
                (KeyValue::Null, true) => {
                    sql.push(&c).push(" IS NOT NULL");
                }
                (v, false) => {
                    sql.push("(").push(&c).push(after_op);
                    bind_key(sql, v);
                    sql.push(" OR ").push(&c).push(" IS NULL)");
                }
                (v, true) => {
                    sql.push(&c).push(after_op);
                    bind_key(sql, v);
                }
            }
        }
        sql.push(")");
    }
    sql.push(")");
}

fn key_value(row: &rows::Sorted, i: usize, col: KeyCol) -> KeyValue {
    let (t, n, r) = match i {
        0 => (&row.k0_t, row.k0_i, row.k0_r),
        1 => (&row.k1_t, row.k1_i, row.k1_r),
        2 => (&row.k2_t, row.k2_i, row.k2_r),
        3 => (&row.k3_t, row.k3_i, row.k3_r),
        _ => (&row.k4_t, row.k4_i, row.k4_r),
    };
    match col {
        KeyCol::Text => t.clone().map(KeyValue::Text),
        KeyCol::Int => n.map(KeyValue::Int),
        KeyCol::Real => r.map(KeyValue::Real),
    }
    .unwrap_or(KeyValue::Null)
}

/// `, <key> AS k0_t, …, k4_r`: each sort key's expression over `r` in the
/// column of its type, NULL in every other column.
fn push_key_columns(sql: &mut Sql, sort: &[SortSpec], sqlite: bool) {
    for i in 0..5 {
        for (suffix, col) in [("t", KeyCol::Text), ("i", KeyCol::Int), ("r", KeyCol::Real)] {
            sql.push(", ");
            match sort.get(i) {
                Some(spec) if key_col(spec.key) == col => push_key_expr(sql, spec, sqlite),
                _ => {
                    sql.push("NULL");
                }
            }
            sql.push(&format!(" AS k{i}_{suffix}"));
        }
    }
}

/// `ORDER BY` terms over the key columns of `q`: the sort keys (nulls last
/// in forward order, first when walking backwards), then the id.
fn push_order(sql: &mut Sql, sort: &[SortSpec], backwards: bool, q: &str) {
    for (i, spec) in sort.iter().enumerate() {
        let suffix = match key_col(spec.key) {
            KeyCol::Text => "t",
            KeyCol::Int => "i",
            KeyCol::Real => "r",
        };
        let c = format!("{q}.k{i}_{suffix}");
        let desc = spec.descending ^ backwards;
        // `NULLS …` rather than a CASE over the key: the key is a correlated
        // subquery, which every mention would evaluate again.
        sql.push(&format!(
            "{c}{} NULLS {}, ",
            if desc { " DESC" } else { "" },
            if backwards { "FIRST" } else { "LAST" }
        ));
    }
    sql.push(q)
        .push(if backwards { ".res_id DESC" } else { ".res_id" });
}

/// One page of matches in sort order, plus whether more rows exist beyond it.
pub(super) fn page(
    conn: &mut Conn,
    query: &SearchQuery,
    sort: &[SortSpec],
) -> StorageResult<(Vec<rows::Sorted>, bool)> {
    let backwards = query.cursor.as_ref().is_some_and(|c| c.backwards);
    let mut sql = Sql::new();
    let mut a = Aliases::for_conn(conn);
    // The page's ids and sort keys are found first; only its rows are then
    // read from `resources` (a candidate's content is never read to be
    // dropped by the LIMIT).
    sql.push("SELECT h.res_id AS res_id, h.version AS version, h.last_updated AS last_updated, h.content AS content");
    for i in 0..5 {
        for suffix in ["t", "i", "r"] {
            sql.push(&format!(", p.k{i}_{suffix} AS k{i}_{suffix}"));
        }
    }
    let source = source_of(query);
    sql.push(" FROM (");
    if sort.is_empty() {
        // Id order only: one flat SELECT, so SQLite can walk a lookup index
        // in id order and stop at the LIMIT instead of sorting every match.
        sql.push(source.select()).push("r.res_id AS res_id");
        push_key_columns(&mut sql, sort, a.sqlite);
        push_selection(&mut sql, &mut a, query, source);
        if let Some(c) = &query.cursor {
            sql.push(" AND r.res_id")
                .push(if c.backwards { " < " } else { " > " })
                .text(&c.id);
        }
        sql.push(" ORDER BY ");
        push_order(&mut sql, sort, backwards, "r");
    } else {
        sql.push("SELECT * FROM (")
            .push(source.select())
            .push("r.res_id AS res_id");
        push_key_columns(&mut sql, sort, a.sqlite);
        push_selection(&mut sql, &mut a, query, source);
        sql.push(") q");
        if let Some(c) = &query.cursor {
            sql.push(" WHERE ");
            push_keyset(&mut sql, sort, c);
        }
        sql.push(" ORDER BY ");
        push_order(&mut sql, sort, backwards, "q");
    }
    sql.push(" LIMIT ")
        .int(i64::try_from(query.count + 1).unwrap_or(i64::MAX));
    sql.push(") p JOIN resources h ON ");
    scope_filter(&mut sql, "h", query.resource_type);
    sql.push(" AND h.res_id = p.res_id AND h.deleted = 0 ORDER BY ");
    push_order(&mut sql, sort, backwards, "p");
    let mut found = conn.load::<rows::Sorted>(&sql)?;
    let more = found.len() > query.count;
    found.truncate(query.count);
    if backwards {
        found.reverse();
    }
    Ok((found, more))
}

pub(super) fn cursor_of(row: &rows::Sorted, sort: &[SortSpec], backwards: bool) -> Cursor {
    Cursor {
        backwards,
        keys: sort
            .iter()
            .enumerate()
            .map(|(i, s)| key_value(row, i, key_col(s.key)))
            .collect(),
        id: row.res_id.clone(),
    }
}

/// `_total=estimate` (and the default) counts at most this many matches;
/// beyond it `Bundle.total` is left out rather than paid for.
pub const TOTAL_CAP: i64 = 1000;

/// `Some(n)` when fewer than `cap` resources match, else `None`.
fn count_capped(conn: &mut Conn, query: &SearchQuery, cap: i64) -> StorageResult<Option<i64>> {
    let mut sql = Sql::new();
    let mut a = Aliases::for_conn(conn);
    let source = source_of(query);
    sql.push("SELECT COUNT(*) AS n FROM (")
        .push(source.select())
        .push("r.res_id");
    push_selection(&mut sql, &mut a, query, source);
    sql.push(" LIMIT ").int(cap).push(") capped");
    let n = conn.count(&sql)?;
    Ok((n < cap).then_some(n))
}

/// `Bundle.total` as `_total` asks for it.
pub(super) fn total(conn: &mut Conn, query: &SearchQuery) -> StorageResult<Option<i64>> {
    match query.total {
        TotalMode::Accurate => Ok(Some(count(conn, query)?)),
        TotalMode::Estimate => count_capped(conn, query, TOTAL_CAP),
        TotalMode::None => Ok(None),
    }
}

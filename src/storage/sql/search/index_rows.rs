//! Index rows in and out: multi-row inserts per index table (in lookup-index
//! order), deletes of a resource's rows, and `idx_date_width`, the widest stored
//! date range per parameter.

use super::CHUNK;
use crate::model::ResourceType;
use crate::search::rows::{index_key, opt_index_key, IndexRow, IndexValue};
use crate::storage::sql::builder::{Bind, Sql};
use crate::storage::sql::conn::Conn;
use crate::storage::StorageResult;

/// Every index table (rewritten with each version).
pub(super) const INDEX_TABLES: [&str; 7] = [
    "idx_token",
    "idx_date",
    "idx_reference",
    "idx_string",
    "idx_number",
    "idx_quantity",
    "idx_uri",
];

pub(in crate::storage::sql) fn insert_indexes(
    conn: &mut Conn,
    ty: ResourceType,
    id: &crate::model::LogicalId,
    indexes: &[IndexRow],
) -> StorageResult<()> {
    insert_indexes_many(conn, &[(ty, id, indexes)])
}

fn table_index(v: &IndexValue) -> usize {
    match v {
        IndexValue::Token { .. } => 0,
        IndexValue::Date { .. } => 1,
        IndexValue::Reference { .. } => 2,
        IndexValue::String { .. } => 3,
        IndexValue::Number { .. } => 4,
        IndexValue::Quantity { .. } => 5,
        IndexValue::Uri { .. } => 6,
    }
}

/// Index rows of many resources, in multi-row INSERTs of up to [`CHUNK`] rows.
pub(in crate::storage::sql) fn insert_indexes_many(
    conn: &mut Conn,
    items: &[(ResourceType, &crate::model::LogicalId, &[IndexRow])],
) -> StorageResult<()> {
    type Writer = fn(&mut Sql, &IndexValue) -> bool;
    let tables: [(&str, &str, Writer); 7] = [
        ("idx_token", "system, code, text", |sql, v| match v {
            IndexValue::Token { system, code, text } => {
                sql.bind(Bind::OptText(opt_index_key(system)))
                    .push(", ")
                    .text(&index_key(code))
                    .push(", ")
                    .bind(Bind::OptText(text.clone()));
                true
            }
            _ => false,
        }),
        ("idx_date", "lo, hi", |sql, v| match v {
            IndexValue::Date { lo, hi } => {
                sql.int(*lo).push(", ").int(*hi);
                true
            }
            _ => false,
        }),
        (
            "idx_reference",
            "target_type, target_id, url",
            |sql, v| match v {
                IndexValue::Reference {
                    target_type,
                    target_id,
                    url,
                } => {
                    sql.text(target_type)
                        .push(", ")
                        .text(target_id)
                        .push(", ")
                        .bind(Bind::OptText(opt_index_key(url)));
                    true
                }
                _ => false,
            },
        ),
        ("idx_string", "norm, exact", |sql, v| match v {
            IndexValue::String { norm, exact } => {
                sql.text(norm).push(", ").text(&index_key(exact));
                true
            }
            _ => false,
        }),
        ("idx_number", "value", |sql, v| match v {
            IndexValue::Number { value } => {
                sql.bind(Bind::Real(*value));
                true
            }
            _ => false,
        }),
        (
            "idx_quantity",
            "system, code, unit, value",
            |sql, v| match v {
                IndexValue::Quantity {
                    system,
                    code,
                    unit,
                    value,
                } => {
                    sql.bind(Bind::OptText(opt_index_key(system)))
                        .push(", ")
                        .bind(Bind::OptText(opt_index_key(code)))
                        .push(", ")
                        .bind(Bind::OptText(opt_index_key(unit)))
                        .push(", ")
                        .bind(Bind::Real(*value));
                    true
                }
                _ => false,
            },
        ),
        ("idx_uri", "value", |sql, v| match v {
            IndexValue::Uri { value } => {
                sql.text(&index_key(value));
                true
            }
            _ => false,
        }),
    ];
    for (t, (table, columns, write)) in tables.into_iter().enumerate() {
        let mut pending = 0usize;
        let mut sql = Sql::prepared();
        // In lookup-index order: consecutive inserts land on neighbouring
        // B-tree pages instead of random ones.
        let mut rows: Vec<(&ResourceType, &&crate::model::LogicalId, &IndexRow)> = items
            .iter()
            .flat_map(|(ty, id, rows)| rows.iter().map(move |r| (ty, id, r)))
            .filter(|(_, _, row)| table_index(&row.value) == t)
            .collect();
        rows.sort_by(|a, b| {
            (a.0.as_str(), &a.2.param)
                .cmp(&(b.0.as_str(), &b.2.param))
                .then_with(|| lookup_order(&a.2.value, &b.2.value))
        });
        for (ty, id, row) in rows {
            if pending == 0 {
                sql.push("INSERT INTO ")
                    .push(table)
                    .push(" (res_type, res_id, param, grp, ")
                    .push(columns)
                    .push(") VALUES ");
            } else {
                sql.push(", ");
            }
            sql.push("(")
                .text(ty.as_str())
                .push(", ")
                .text(id.as_str())
                .push(", ")
                .text(&row.param)
                .push(", ")
                .bind(Bind::OptInt(row.group.map(i64::from)))
                .push(", ");
            write(&mut sql, &row.value);
            sql.push(")");
            pending += 1;
            if pending == CHUNK {
                conn.exec(&sql)?;
                sql = Sql::prepared();
                pending = 0;
            }
        }
        if pending > 0 {
            conn.exec(&sql)?;
        }
    }
    record_date_widths(conn, items)
}

/// Removes every index row of the resources `ids` of type `ty` (chunks of
/// [`CHUNK`] ids per statement and table).
pub(in crate::storage::sql) fn delete_indexes(
    conn: &mut Conn,
    ty: ResourceType,
    ids: &[&crate::model::LogicalId],
) -> StorageResult<()> {
    for chunk in ids.chunks(CHUNK) {
        for table in INDEX_TABLES {
            let mut sql = Sql::prepared();
            sql.push("DELETE FROM ")
                .push(table)
                .push(" WHERE res_type = ")
                .text(ty.as_str())
                .push(" AND res_id IN (")
                .text_list(chunk.iter().map(|id| id.as_str()))
                .push(")");
            conn.exec(&sql)?;
        }
    }
    Ok(())
}

/// The leading lookup-index column(s) after (res_type, param).
fn lookup_order(a: &IndexValue, b: &IndexValue) -> std::cmp::Ordering {
    use IndexValue as V;
    match (a, b) {
        (V::Token { code: x, .. }, V::Token { code: y, .. }) => x.cmp(y),
        (V::Reference { target_id: x, .. }, V::Reference { target_id: y, .. }) => x.cmp(y),
        (V::Date { lo: x, .. }, V::Date { lo: y, .. }) => x.cmp(y),
        (V::String { norm: x, .. }, V::String { norm: y, .. }) => x.cmp(y),
        (V::Uri { value: x }, V::Uri { value: y }) => x.cmp(y),
        (V::Number { value: x }, V::Number { value: y })
        | (V::Quantity { value: x, .. }, V::Quantity { value: y, .. }) => x.total_cmp(y),
        _ => std::cmp::Ordering::Equal,
    }
}

/// Keeps `idx_date_width` at least as wide as every stored date range (it
/// never narrows: a stale, wider value only loosens query bounds).
fn record_date_widths(
    conn: &mut Conn,
    items: &[(ResourceType, &crate::model::LogicalId, &[IndexRow])],
) -> StorageResult<()> {
    let mut widest: std::collections::BTreeMap<(ResourceType, &str), i64> = Default::default();
    for (ty, _, rows) in items {
        for r in rows.iter() {
            if let IndexValue::Date { lo, hi } = &r.value {
                let w = hi.saturating_sub(*lo).max(0);
                let e = widest.entry((*ty, r.param.as_str())).or_insert(w);
                *e = (*e).max(w);
            }
        }
    }
    for ((ty, param), w) in widest {
        let mut sql = Sql::prepared();
        sql.push("INSERT INTO idx_date_width (res_type, param, width) VALUES (")
            .text(ty.as_str())
            .push(", ")
            .text(param)
            .push(", ")
            .int(w)
            .push(") ON CONFLICT (res_type, param) DO UPDATE SET width = excluded.width WHERE excluded.width > idx_date_width.width");
        conn.exec(&sql)?;
    }
    Ok(())
}

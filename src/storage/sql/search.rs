//! Search on the SQL backends: index rows in, typed predicates to SQL, sorting
//! with keyset paging, counting, and `_include` / `_revinclude`.
//!
//! Every predicate becomes `alias.res_id [NOT] IN (SELECT … FROM idx_… WHERE
//! res_type = ? AND param = ? AND …)`, so both planners drive lookups from the
//! index tables' `(res_type, param, value)` indexes. Chains and `_has` nest the
//! same shape through `idx_reference`. Sorting uses correlated `MIN`/`MAX`
//! subqueries per key; paging is keyset on (sort keys…, res_id) in both
//! directions, so pages stay stable while data changes.

use super::{rows, scope_filter, stored, Bind, Conn, Sql};
use crate::model::{Instant, ResourceType};
use crate::search::registry::{self, ParamDef, ParamKind};
use crate::search::rows::{index_key, opt_index_key, IndexRow, IndexValue};
use crate::search::types::*;
use crate::storage::{SearchPage, StorageResult, StoredResource};

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

/// The largest code point: `v <= x < v || MAX_CHAR` is "x starts with v" in
/// binary collation (SQLite BINARY, PostgreSQL "C").
const MAX_CHAR: char = '\u{10FFFF}';

/// Most resources `_include`/`_revinclude` may add to one page.
pub const MAX_INCLUDED: usize = 1000;
const MAX_ITERATE: usize = 3;

const CHUNK: usize = 200;

pub(super) fn insert_indexes(
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
pub(super) fn insert_indexes_many(
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
pub(super) fn delete_indexes(
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

/// Unique table aliases for nested subqueries, and how the next index lookup
/// is written.
#[derive(Default)]
struct Aliases {
    n: usize,
    /// The next `open_rows` probes the candidate's own rows (`EXISTS … WHERE
    /// t.res_id = r.res_id`, through the owner index) instead of collecting
    /// every matching id (`r.res_id IN (SELECT …)`). Set for all but the most
    /// selective predicate of a search; taken by the first lookup it reaches.
    correlated: bool,
    /// The next `open_rows` is the search's driving row source: it opens
    /// `(SELECT DISTINCT t.res_type, t.res_id FROM table t WHERE …` (see
    /// [`push_selection`]).
    source: bool,
    /// The connection is SQLite (see [`by_owner`]).
    sqlite: bool,
}

impl Aliases {
    fn for_conn(conn: &Conn) -> Aliases {
        Aliases {
            sqlite: conn.dialect() == super::Dialect::Sqlite,
            ..Aliases::default()
        }
    }

    fn next(&mut self, prefix: &str) -> String {
        self.n += 1;
        format!("{prefix}{}", self.n)
    }
}

fn table_of(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::Token => "idx_token",
        ParamKind::Date => "idx_date",
        ParamKind::Reference => "idx_reference",
        ParamKind::String => "idx_string",
        ParamKind::Number => "idx_number",
        ParamKind::Quantity => "idx_quantity",
        ParamKind::Uri | ParamKind::Composite => "idx_uri",
    }
}

fn starts_with(sql: &mut Sql, col: &str, prefix: &str) {
    let mut upper = prefix.to_owned();
    upper.push(MAX_CHAR);
    sql.push("(")
        .push(col)
        .push(" >= ")
        .text(prefix)
        .push(" AND ")
        .push(col)
        .push(" < ")
        .text(&upper)
        .push(")");
}

fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

fn token_condition(sql: &mut Sql, t: &str, v: &TokenValue) {
    sql.push("(");
    let mut first = true;
    if let Some(code) = &v.code {
        sql.push(t).push(".code = ").text(&index_key(code));
        first = false;
    }
    match v.system.as_deref() {
        None => {}
        Some("") => {
            if !first {
                sql.push(" AND ");
            }
            sql.push(t).push(".system IS NULL");
            first = false;
        }
        Some(system) => {
            if !first {
                sql.push(" AND ");
            }
            sql.push(t).push(".system = ").text(&index_key(system));
            first = false;
        }
    }
    if first {
        sql.push("1 = 1");
    }
    sql.push(")");
}

fn or_each<T>(sql: &mut Sql, items: &[T], mut f: impl FnMut(&mut Sql, &T)) {
    sql.push("(");
    for (i, item) in items.iter().enumerate() {
        if i > 0 {
            sql.push(" OR ");
        }
        f(sql, item);
    }
    sql.push(")");
}

/// The FHIR prefix semantics over ranges: the target value covers `[vlo, vhi)`,
/// the parameter value covers `[lo, hi)`. Each prefix leads with a bound on
/// `vlo` or `vhi` alone (implied by the rest, as stored ranges are never
/// empty), so the `lo` index can scan a range.
///
/// `width` names the index rows' parameter: their widest stored range
/// (`idx_date_width`) turns the tests that bound `vhi` from below into a
/// bound on `vlo` too (`vlo >= vhi - width`), so a window `ge…&lt…` scans
/// only its own part of the `lo` index.
fn date_condition(
    sql: &mut Sql,
    vlo: &str,
    vhi: &str,
    v: &DateValue,
    width: Option<(ResourceType, &str)>,
) {
    let (lo, hi) = (v.range.lo, v.range.hi);
    let floor = match v.prefix {
        Prefix::Gt => Some(hi),
        Prefix::Ge => Some(lo),
        _ => None,
    };
    // Bounds implied by the test, for the `lo` index (and `vhi` for `ge`).
    match v.prefix {
        Prefix::Eq | Prefix::Le => {
            sql.push(vlo).push(" < ").int(hi).push(" AND ");
        }
        Prefix::Eb => {
            sql.push(vlo).push(" < ").int(lo).push(" AND ");
        }
        Prefix::Ge => {
            sql.push(vhi).push(" > ").int(lo).push(" AND ");
        }
        _ => {}
    }
    if let (Some(x), Some((ty, param))) = (floor, width) {
        // Parameters without a recorded width (none stored) get no bound.
        sql.push(vlo)
            .push(" > ")
            .int(x)
            .push(" - COALESCE((SELECT w.width FROM idx_date_width w WHERE w.res_type = ")
            .text(ty.as_str())
            .push(" AND w.param = ")
            .text(param)
            .push("), ")
            .int(i64::MAX / 4)
            .push(") AND ");
    }
    let contains = |sql: &mut Sql| {
        sql.push("(")
            .push(vlo)
            .push(" >= ")
            .int(lo)
            .push(" AND ")
            .push(vhi)
            .push(" <= ")
            .int(hi)
            .push(")");
    };
    sql.push("(");
    match v.prefix {
        Prefix::Eq => contains(sql),
        Prefix::Ne => {
            sql.push("NOT ");
            contains(sql);
        }
        Prefix::Gt => {
            sql.push(vhi).push(" > ").int(hi);
        }
        Prefix::Lt => {
            sql.push(vlo).push(" < ").int(lo);
        }
        Prefix::Ge => {
            sql.push(vhi).push(" > ").int(hi).push(" OR ");
            contains(sql);
        }
        Prefix::Le => {
            sql.push(vlo).push(" < ").int(lo).push(" OR ");
            contains(sql);
        }
        Prefix::Sa => {
            sql.push(vlo).push(" >= ").int(hi);
        }
        Prefix::Eb => {
            sql.push(vhi).push(" <= ").int(lo);
        }
        Prefix::Ap => {
            // Approximately: within 10% of the distance between the value and now.
            let now = Instant::now().0;
            let gap = ((now - lo).abs() / 10).max(hi - lo);
            sql.push(vlo)
                .push(" < ")
                .int(hi.saturating_add(gap))
                .push(" AND ")
                .push(vhi)
                .push(" > ")
                .int(lo.saturating_sub(gap));
        }
    }
    sql.push(")");
}

/// Number prefixes: the stored value is a point, the parameter a precision range.
fn number_condition(sql: &mut Sql, col: &str, v: &NumberValue) {
    let c = |sql: &mut Sql, op: &str, x: f64| {
        sql.push(col).push(op).bind(Bind::Real(x));
    };
    sql.push("(");
    match v.prefix {
        Prefix::Eq => {
            c(sql, " >= ", v.lo);
            sql.push(" AND ");
            c(sql, " < ", v.hi);
        }
        Prefix::Ne => {
            sql.push("NOT (");
            c(sql, " >= ", v.lo);
            sql.push(" AND ");
            c(sql, " < ", v.hi);
            sql.push(")");
        }
        Prefix::Gt => c(sql, " > ", v.value),
        Prefix::Lt => c(sql, " < ", v.value),
        Prefix::Ge => c(sql, " >= ", v.value),
        Prefix::Le => c(sql, " <= ", v.value),
        Prefix::Sa => c(sql, " >= ", v.hi),
        Prefix::Eb => c(sql, " < ", v.lo),
        Prefix::Ap => {
            let gap = (v.value.abs() * 0.1).max(v.hi - v.lo);
            c(sql, " >= ", v.value - gap);
            sql.push(" AND ");
            c(sql, " <= ", v.value + gap);
        }
    }
    sql.push(")");
}

/// The condition on one index-table row `t` for a test.
fn test_condition(sql: &mut Sql, t: &str, test: &Test, width: Option<(ResourceType, &str)>) {
    let col = |c: &str| format!("{t}.{c}");
    match test {
        Test::Token(values) | Test::ReferenceIdentifier(values) => {
            or_each(sql, values, |sql, v| token_condition(sql, t, v))
        }
        Test::TokenText(values) => or_each(sql, values, |sql, v| starts_with(sql, &col("text"), v)),
        Test::OfType(values) => or_each(sql, values, |sql, (system, code, value)| {
            sql.push("(")
                .push(&col("system"))
                .push(" = ")
                .text(&index_key(system))
                .push(" AND ")
                .push(&col("code"))
                .push(" = ")
                .text(&index_key(&format!("{code}|{value}")))
                .push(")");
        }),
        Test::String(mode, values) => or_each(sql, values, |sql, v| match mode {
            StringMode::StartsWith => starts_with(sql, &col("norm"), v),
            StringMode::Exact => {
                sql.push(&col("exact")).push(" = ").text(&index_key(v));
            }
            StringMode::Contains => {
                sql.push(&col("norm"))
                    .push(" LIKE ")
                    .text(&like_escape(v))
                    .push(" ESCAPE '\\'");
            }
        }),
        Test::Date(values) => or_each(sql, values, |sql, v| {
            date_condition(sql, &col("lo"), &col("hi"), v, width)
        }),
        Test::Number(values) => or_each(sql, values, |sql, v| {
            number_condition(sql, &col("value"), v)
        }),
        Test::Quantity(values) => or_each(sql, values, |sql, q| {
            sql.push("(");
            number_condition(sql, &col("value"), &q.number);
            match (&q.system, &q.code) {
                (Some(s), Some(c)) => {
                    sql.push(" AND ")
                        .push(&col("system"))
                        .push(" = ")
                        .text(&index_key(s))
                        .push(" AND ")
                        .push(&col("code"))
                        .push(" = ")
                        .text(&index_key(c));
                }
                (None, Some(c)) => {
                    let c = index_key(c);
                    sql.push(" AND (")
                        .push(&col("code"))
                        .push(" = ")
                        .text(&c)
                        .push(" OR ")
                        .push(&col("unit"))
                        .push(" = ")
                        .text(&c)
                        .push(")");
                }
                (Some(s), None) => {
                    sql.push(" AND ")
                        .push(&col("system"))
                        .push(" = ")
                        .text(&index_key(s));
                }
                (None, None) => {}
            }
            sql.push(")");
        }),
        Test::Uri(mode, values) => or_each(sql, values, |sql, v| match mode {
            UriMode::Equals => {
                sql.push(&col("value")).push(" = ").text(&index_key(v));
            }
            // Exact for values up to `INDEX_PREFIX` bytes (longer ones are
            // rejected when parsed): a longer stored value keeps at least that
            // much of itself verbatim.
            UriMode::Below => starts_with(sql, &col("value"), v),
            UriMode::Above => {
                sql.push("(")
                    .push(&col("value"))
                    .push(" <= ")
                    .text(v)
                    .push(" AND ")
                    .push(&col("value"))
                    .push(" = SUBSTR(")
                    .text(v)
                    .push(", 1, LENGTH(")
                    .push(&col("value"))
                    .push(")))");
            }
        }),
        Test::Reference(values) => or_each(sql, values, |sql, v| {
            if v.url {
                sql.push(&col("url")).push(" = ").text(&index_key(&v.id));
            } else {
                sql.push("(")
                    .push(&col("target_id"))
                    .push(" = ")
                    .text(&v.id);
                if let Some(ty) = v.target_type {
                    sql.push(" AND ")
                        .push(&col("target_type"))
                        .push(" = ")
                        .text(ty.as_str());
                }
                sql.push(")");
            }
        }),
    }
}

fn index_param_key(param: &ParamDef, test: &Test) -> (String, &'static str) {
    match test {
        Test::OfType(_) => (format!("{}:of-type", param.code), "idx_token"),
        Test::ReferenceIdentifier(_) => (format!("{}:identifier", param.code), "idx_token"),
        _ => (param.code.clone(), table_of(param.kind)),
    }
}

/// Appends a boolean SQL expression: does the `alias` row (a resource of type
/// `ty`) satisfy `pred`?
fn predicate(sql: &mut Sql, a: &mut Aliases, pred: &Predicate, alias: &str, ty: ResourceType) {
    match pred {
        Predicate::Id { ids, not } if ids.is_empty() => {
            sql.push(if *not { "1 = 1" } else { "1 = 0" });
        }
        Predicate::Id { ids, not } => {
            sql.push(alias).push(if *not {
                ".res_id NOT IN ("
            } else {
                ".res_id IN ("
            });
            sql.text_list(ids).push(")");
        }
        Predicate::LastUpdated(values) => {
            let lo = format!("{alias}.last_updated");
            let hi = format!("({alias}.last_updated + 1)");
            or_each(sql, values, |sql, v| date_condition(sql, &lo, &hi, v, None));
        }
        Predicate::Index { param, test, not } => {
            let (key, table) = index_param_key(param, test);
            let t = open_rows(sql, a, "t", alias, *not, table, ty, &key);
            sql.push(" AND ");
            test_condition(sql, &t, test, Some((ty, &key)));
            sql.push(")");
        }
        Predicate::Composite { parts, .. } => {
            // alias.res_id IN (SELECT c0.res_id FROM idx_a c0 WHERE <test 0>
            //   AND EXISTS (<c0's resource's row of component 1, same grp> AND <test 1>) …)
            let Some(((first, first_test), rest)) = parts.split_first() else {
                sql.push("1 = 0");
                return;
            };
            let c0 = open_rows(
                sql,
                a,
                "c",
                alias,
                false,
                table_of(first.kind),
                ty,
                &first.code,
            );
            sql.push(" AND ");
            test_condition(sql, &c0, first_test, None);
            for (comp, test) in rest {
                let ck = a.next("c");
                sql.push(" AND ");
                probe_rows(
                    sql,
                    a.sqlite,
                    false,
                    table_of(comp.kind),
                    &ck,
                    &c0,
                    &comp.code,
                );
                sql.push(" AND ")
                    .push(&ck)
                    .push(".grp = ")
                    .push(&c0)
                    .push(".grp AND ");
                test_condition(sql, &ck, test, None);
                sql.push(")");
            }
            sql.push(")");
        }
        Predicate::Missing { param, missing } => {
            sql.push("(");
            if *missing {
                sql.push("NOT ");
            }
            has_rows(sql, a, alias, ty, table_of(param.kind), &param.code);
            // A reference given only by identifier is a value too: its rows
            // live under `code:identifier` in the token table.
            if param.kind == ParamKind::Reference {
                sql.push(if *missing { " AND NOT " } else { " OR " });
                has_rows(
                    sql,
                    a,
                    alias,
                    ty,
                    "idx_token",
                    &format!("{}:identifier", param.code),
                );
            }
            sql.push(")");
        }
        Predicate::Chain { param, targets } => {
            let x = open_rows(sql, a, "x", alias, false, "idx_reference", ty, &param.code);
            sql.push(" AND ");
            or_each(sql, targets, |sql, (target, inner)| {
                let r = a.next("r");
                sql.push("(")
                    .push(&x)
                    .push(".target_type = ")
                    .text(target.as_str())
                    .push(" AND ")
                    .push(&x)
                    .push(".target_id IN (SELECT ")
                    .push(&r)
                    .push(".res_id FROM resources ")
                    .push(&r)
                    .push(" WHERE ");
                scope_filter(sql, &r, *target);
                sql.push(" AND ").push(&r).push(".deleted = 0 AND ");
                predicate(sql, a, inner, &r, *target);
                sql.push("))");
            });
            sql.push(")");
        }
        Predicate::Has {
            source,
            param,
            inner,
        } => {
            a.correlated = false;
            let x = a.next("x");
            let r = a.next("r");
            sql.push(alias)
                .push(".res_id IN (SELECT ")
                .push(&x)
                .push(".target_id FROM idx_reference ")
                .push(&x)
                .push(" WHERE ")
                .push(&x)
                .push(".res_type = ")
                .text(source.as_str())
                .push(" AND ")
                .push(&x)
                .push(".param = ")
                .text(&param.code)
                .push(" AND ")
                .push(&x)
                .push(".target_type = ")
                .text(ty.as_str())
                .push(" AND ")
                .push(&x)
                .push(".res_id IN (SELECT ")
                .push(&r)
                .push(".res_id FROM resources ")
                .push(&r)
                .push(" WHERE ");
            scope_filter(sql, &r, *source);
            sql.push(" AND ").push(&r).push(".deleted = 0 AND ");
            predicate(sql, a, inner, &r, *source);
            sql.push("))");
        }
        Predicate::AnyOf(preds) => {
            let correlated = a.correlated;
            or_each(sql, preds, |sql, p| {
                a.correlated = correlated;
                predicate(sql, a, p, alias, ty);
                a.correlated = false;
            });
        }
        Predicate::AllOf(preds) => {
            // Like the predicates of a search: the first may collect, the
            // others probe.
            let correlated = a.correlated;
            sql.push("(");
            for (i, p) in preds.iter().enumerate() {
                if i > 0 {
                    sql.push(" AND ");
                }
                a.correlated = correlated || i > 0;
                predicate(sql, a, p, alias, ty);
                a.correlated = false;
            }
            sql.push(")");
        }
    }
}

/// `alias.res_id IN (rows of `param` in `table`)`.
fn has_rows(
    sql: &mut Sql,
    a: &mut Aliases,
    alias: &str,
    ty: ResourceType,
    table: &str,
    param: &str,
) {
    open_rows(sql, a, "t", alias, false, table, ty, param);
    sql.push(")");
}

/// `table t`, read through its owner index (res_type, res_id): on SQLite
/// named outright, as without statistics the planner prefers a covering
/// lookup index and scans all of it; and the caller compares `param` as
/// `(t.param || '')`, which no index can serve, so no planner is tempted.
fn by_owner(sql: &mut Sql, sqlite: bool, table: &str, t: &str) {
    sql.push(table).push(" ").push(t);
    if sqlite {
        sql.push(" INDEXED BY ").push(table).push("_owner");
    }
}

/// Opens `[NOT] EXISTS (SELECT 1 FROM table t WHERE t is a row of param of
/// owner's resource` (the caller adds conditions and the closing parenthesis):
/// a probe of one candidate's rows.
fn probe_rows(
    sql: &mut Sql,
    sqlite: bool,
    not: bool,
    table: &str,
    t: &str,
    owner: &str,
    param: &str,
) {
    sql.push(if not {
        "NOT EXISTS (SELECT 1 FROM "
    } else {
        "EXISTS (SELECT 1 FROM "
    });
    by_owner(sql, sqlite, table, t);
    sql.push(" WHERE ")
        .push(t)
        .push(".res_type = ")
        .push(owner)
        .push(".res_type AND ")
        .push(t)
        .push(".res_id = ")
        .push(owner)
        .push(".res_id AND (")
        .push(t)
        .push(".param || '') = ")
        .text(param);
}

/// Opens `alias.res_id [NOT] IN (SELECT t.res_id FROM table t WHERE
/// t.res_type = ? AND t.param = ?` (the caller adds conditions and the closing
/// parenthesis) and returns the fresh alias `t`.
#[allow(clippy::too_many_arguments)]
fn open_rows(
    sql: &mut Sql,
    a: &mut Aliases,
    prefix: &str,
    alias: &str,
    not: bool,
    table: &str,
    ty: ResourceType,
    param: &str,
) -> String {
    let t = a.next(prefix);
    if std::mem::take(&mut a.correlated) {
        probe_rows(sql, a.sqlite, not, table, &t, alias, param);
        return t;
    }
    if std::mem::take(&mut a.source) {
        // The search's own row source: `table alias WHERE (…` (the caller's
        // conditions and closing parenthesis follow), so the other
        // predicates test `alias` directly and SQLite can read the lookup
        // index in id order.
        sql.push(table).push(" ").push(alias);
        if a.sqlite {
            // Without statistics SQLite may walk the owner index in id order
            // to honour `ORDER BY r.res_id LIMIT n` and filter every row of the
            // type; the lookup index ends in res_id and is never worse.
            sql.push(" INDEXED BY ").push(table).push("_lookup");
        }
        sql.push(" WHERE (")
            .push(alias)
            .push(".res_type = ")
            .text(ty.as_str())
            .push(" AND ")
            .push(alias)
            .push(".param = ")
            .text(param);
        return alias.to_owned();
    }
    sql.push(alias)
        .push(if not {
            ".res_id NOT IN (SELECT "
        } else {
            ".res_id IN (SELECT "
        })
        .push(&t)
        .push(".res_id FROM ")
        .push(table)
        .push(" ")
        .push(&t)
        .push(" WHERE ")
        .push(&t)
        .push(".res_type = ")
        .text(ty.as_str())
        .push(" AND ")
        .push(&t)
        .push(".param = ")
        .text(param);
    t
}

/// One AND-ed condition of a search as it is written into SQL.
enum Unit<'q> {
    One(&'q Predicate),
    /// Several AND-ed date tests on one single-valued parameter (`birthdate=ge…
    /// &birthdate=lt…`): all checked against the same row, so the index
    /// range is the intersection rather than each half of the table.
    DateRange(&'static ParamDef, Vec<&'q DateValue>),
}

/// How many resources a condition is likely to leave (lower: fewer), without
/// statistics: it decides which condition collects ids through its index and
/// which merely check each candidate.
fn rank(p: &Predicate) -> u8 {
    const COARSE: [&str; 10] = [
        "status",
        "gender",
        "intent",
        "active",
        "category",
        "priority",
        "_tag",
        "_security",
        "deceased",
        "use",
    ];
    match p {
        Predicate::Id { not: false, .. } => 0,
        Predicate::Index { not: true, .. } | Predicate::Missing { .. } => 9,
        Predicate::Id { not: true, .. } => 9,
        Predicate::Index { param, test, .. } => match test {
            Test::Reference(_) | Test::ReferenceIdentifier(_) | Test::OfType(_) => 2,
            Test::Token(_) if COARSE.contains(&param.code.as_str()) => 7,
            Test::Token(_) => 2,
            Test::String(StringMode::Exact, _) => 2,
            Test::String(StringMode::StartsWith, v) if v.iter().all(|s| s.chars().count() >= 3) => {
                3
            }
            Test::Date(v) if v.iter().all(narrow) => 3,
            Test::Uri(..) => 3,
            Test::String(StringMode::Contains, _) | Test::TokenText(_) => 6,
            _ => 5,
        },
        Predicate::Chain { .. } | Predicate::Composite { .. } => 3,
        Predicate::Has { .. } => 4,
        Predicate::LastUpdated(_) => 6,
        Predicate::AllOf(ps) => ps.iter().map(rank).min().unwrap_or(5),
        Predicate::AnyOf(ps) => ps.iter().map(rank).max().unwrap_or(5).saturating_add(1),
    }
}

const DAY_MS: i64 = 86_400_000;

/// An equality test at day precision or finer.
fn narrow(d: &DateValue) -> bool {
    matches!(d.prefix, Prefix::Eq) && d.range.hi - d.range.lo <= DAY_MS
}

fn units(query: &SearchQuery) -> Vec<(u8, Unit<'_>)> {
    let mut out: Vec<(u8, Unit<'_>)> = Vec::new();
    let mut ranges: Vec<(&'static ParamDef, Vec<&DateValue>)> = Vec::new();
    for p in &query.predicates {
        if let Predicate::Index {
            param,
            test: Test::Date(values),
            not: false,
        } = p
        {
            if param.single_valued && values.len() == 1 {
                match ranges.iter_mut().find(|(d, _)| d.code == param.code) {
                    Some((_, v)) => v.push(&values[0]),
                    None => ranges.push((param, vec![&values[0]])),
                }
                continue;
            }
        }
        out.push((rank(p), Unit::One(p)));
    }
    for (param, values) in ranges {
        let lo = values
            .iter()
            .filter(|v| matches!(v.prefix, Prefix::Gt | Prefix::Ge | Prefix::Sa | Prefix::Eq))
            .map(|v| v.range.lo)
            .max();
        let hi = values
            .iter()
            .filter(|v| matches!(v.prefix, Prefix::Lt | Prefix::Le | Prefix::Eb | Prefix::Eq))
            .map(|v| v.range.hi)
            .min();
        let r = match (lo, hi) {
            (Some(lo), Some(hi)) if hi - lo <= DAY_MS => 1,
            (Some(lo), Some(hi)) if hi - lo <= 31 * DAY_MS => 3,
            (Some(_), Some(_)) => 4,
            _ => 5,
        };
        out.push((r, Unit::DateRange(param, values)));
    }
    // Stable: equal ranks keep the client's order.
    out.sort_by_key(|(r, _)| *r);
    out
}

/// From this rank on a condition is checked per candidate rather than
/// collected (unless it is the only or the most selective one).
const COARSE_RANK: u8 = 5;

/// Where a search's candidate rows come from.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Source {
    /// `resources r`: every column of the head row is at hand.
    Resources,
    /// The driving predicate's own index rows, as `r` (`res_type`, `res_id`
    /// only; select `DISTINCT r.res_id`, as a resource may have several
    /// matching rows). Index rows exist only for live current versions (they
    /// are deleted with the version they were extracted from), so candidates
    /// are counted and ordered without reading `resources` at all.
    Index,
}

impl Source {
    /// `SELECT ` or `SELECT DISTINCT `.
    fn select(self) -> &'static str {
        match self {
            Source::Resources => "SELECT ",
            Source::Index => "SELECT DISTINCT ",
        }
    }
}

/// Whether `p` reads a column only `resources` has.
fn needs_head(p: &Predicate) -> bool {
    match p {
        Predicate::LastUpdated(_) => true,
        Predicate::AnyOf(ps) | Predicate::AllOf(ps) => ps.iter().any(needs_head),
        _ => false,
    }
}

/// A plain lookup of one parameter's index rows, which can be a search's row
/// source (read through the parameter table's lookup index).
fn lookup(unit: &Unit<'_>) -> bool {
    match unit {
        Unit::DateRange(..) => true,
        // Absolute-URL references are found through their own partial index,
        // not the lookup index the row source reads.
        Unit::One(Predicate::Index {
            test: Test::Reference(values),
            not: false,
            ..
        }) => !values.iter().any(|v| v.url),
        Unit::One(p) => matches!(
            p,
            Predicate::Index { not: false, .. }
                | Predicate::Chain { .. }
                | Predicate::Composite { .. }
        ),
    }
}

/// The index rows of the driving predicate when it is a plain lookup and
/// nothing needs the head row; `resources` otherwise.
fn source_of(query: &SearchQuery) -> Source {
    let units = units(query);
    let indexed = !query.predicates.iter().any(needs_head)
        && !query
            .sort
            .iter()
            .any(|s| matches!(s.key, SortKey::LastUpdated))
        && units.first().is_some_and(|(_, u)| lookup(u));
    if indexed {
        Source::Index
    } else {
        Source::Resources
    }
}

/// `FROM … r WHERE <predicates>` over current, live resources of the type;
/// the most selective predicate drives. From [`Source::Index`]: `FROM
/// idx_… r WHERE (<driver>) AND <others>`; from [`Source::Resources`]: `FROM
/// resources r WHERE <scope> AND r.deleted = 0 AND <predicates>`.
fn push_selection(sql: &mut Sql, a: &mut Aliases, query: &SearchQuery, source: Source) {
    let ty = query.resource_type;
    let units = units(query);
    let driver = units.first().map_or(COARSE_RANK, |(r, _)| *r);
    let indexed = source == Source::Index;
    sql.push(" FROM ");
    if !indexed {
        sql.push("resources r WHERE ");
        scope_filter(sql, "r", ty);
        sql.push(" AND r.deleted = 0");
    }
    for (i, (rank, unit)) in units.into_iter().enumerate() {
        if indexed && i == 0 {
            // The driver, as the row source.
            a.source = true;
        } else {
            sql.push(" AND ");
        }
        // After a very selective first condition (an id, one day) the others
        // check its few candidates. Otherwise selective conditions collect
        // their ids, which the planner intersects in memory, and coarse ones
        // (`status=active`, which would collect most of the table) check.
        a.correlated = i > 0 && (driver <= 1 || rank >= COARSE_RANK);
        match unit {
            Unit::One(p) => predicate(sql, a, p, "r", ty),
            Unit::DateRange(param, values) => {
                let t = open_rows(sql, a, "t", "r", false, "idx_date", ty, &param.code);
                for v in values {
                    sql.push(" AND ");
                    date_condition(
                        sql,
                        &format!("{t}.lo"),
                        &format!("{t}.hi"),
                        v,
                        Some((ty, &param.code)),
                    );
                }
                sql.push(")");
            }
        }
        a.correlated = false;
        a.source = false;
    }
}

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

/// Up to `limit` current matches of a conditional write's criteria (by id).
pub(super) fn matches_for_write(
    conn: &mut Conn,
    query: &SearchQuery,
    limit: usize,
) -> StorageResult<Vec<rows::Found>> {
    let mut sql = Sql::new();
    let mut a = Aliases::for_conn(conn);
    sql.push("SELECT r.res_id, r.version, r.last_updated, r.content");
    push_selection(&mut sql, &mut a, query, Source::Resources);
    sql.push(" ORDER BY r.res_id LIMIT ")
        .int(i64::try_from(limit).unwrap_or(i64::MAX));
    conn.load::<rows::Found>(&sql)
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
fn page(
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

fn cursor_of(row: &rows::Sorted, sort: &[SortSpec], backwards: bool) -> Cursor {
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
fn total(conn: &mut Conn, query: &SearchQuery) -> StorageResult<Option<i64>> {
    match query.total {
        TotalMode::Accurate => Ok(Some(count(conn, query)?)),
        TotalMode::Estimate => count_capped(conn, query, TOTAL_CAP),
        TotalMode::None => Ok(None),
    }
}

/// At most this many ids of one condition are read to be intersected in
/// memory (see [`intersect_lookups`]).
const INTERSECT_CAP: usize = 10_000;

/// The predicates of `query` that make up `unit`.
fn unit_predicates<'q>(query: &'q SearchQuery, unit: &Unit<'_>) -> Vec<&'q Predicate> {
    query
        .predicates
        .iter()
        .filter(|p| match unit {
            Unit::One(u) => std::ptr::eq(*p, *u),
            // Mirrors `units`: every single-valued date test on the parameter.
            Unit::DateRange(param, _) => matches!(
                p,
                Predicate::Index { param: q, test: Test::Date(v), not: false }
                    if q.code == param.code && q.single_valued && v.len() == 1
            ),
        })
        .collect()
}

/// Several selective lookups AND-ed (`actor=…&date=ge…&date=lt…`) would be
/// intersected by SQLite through temporary b-trees at about a microsecond a
/// row. Instead each one's ids are read from its covering lookup index (at
/// most [`INTERSECT_CAP`]; a lookup with more stays a condition, checked per
/// candidate) and intersected here; the search goes on as `_id` in the
/// intersection AND the remaining conditions. `None`: nothing to intersect
/// (one condition, or a very selective driver such as `_id` or one day).
/// SQLite only: PostgreSQL intersects with hash joins, faster than the extra
/// round trips.
fn intersect_lookups(conn: &mut Conn, query: &SearchQuery) -> StorageResult<Option<SearchQuery>> {
    if conn.dialect() != super::Dialect::Sqlite {
        return Ok(None);
    }
    let units = units(query);
    if units.len() < 2 || units[0].0 <= 1 {
        return Ok(None);
    }
    let candidates: Vec<&Unit<'_>> = units
        .iter()
        .filter(|(rank, u)| *rank < COARSE_RANK && lookup(u))
        .map(|(_, u)| u)
        .collect();
    if candidates.len() < 2 {
        return Ok(None);
    }
    let mut ids: Option<std::collections::HashSet<String>> = None;
    let mut resolved: Vec<&Predicate> = Vec::new();
    for unit in candidates {
        let preds = unit_predicates(query, unit);
        let mut sub = SearchQuery::new(query.resource_type);
        sub.predicates = preds.iter().map(|p| (*p).clone()).collect();
        let mut sql = Sql::new();
        let mut a = Aliases::for_conn(conn);
        // One row with the ids joined (a row per id costs more to fetch than
        // to find); duplicates (a resource with several matching rows) are
        // merged in the set.
        sql.push("SELECT group_concat(x.res_id, ',') AS ids, COUNT(*) AS n FROM (SELECT r.res_id");
        push_selection(&mut sql, &mut a, &sub, Source::Index);
        sql.push(" LIMIT ")
            .int(i64::try_from(INTERSECT_CAP + 1).unwrap_or(i64::MAX))
            .push(") x");
        let Some(found) = conn.load::<rows::IdList>(&sql)?.pop() else {
            continue;
        };
        if usize::try_from(found.n).map_or(true, |n| n > INTERSECT_CAP) {
            continue;
        }
        resolved.extend(preds);
        let text = found.ids.unwrap_or_default();
        let these = text.split(',').filter(|s| !s.is_empty());
        let now = match ids.take() {
            None => these.map(str::to_owned).collect(),
            Some(mut have) => {
                let these: std::collections::HashSet<&str> = these.collect();
                have.retain(|id| these.contains(id.as_str()));
                have
            }
        };
        let empty = now.is_empty();
        ids = Some(now);
        if empty {
            break;
        }
    }
    let Some(ids) = ids else {
        return Ok(None);
    };
    let mut ids: Vec<String> = ids.into_iter().collect();
    ids.sort_unstable();
    let mut out = query.clone();
    out.predicates = query
        .predicates
        .iter()
        .filter(|p| !resolved.iter().any(|r| std::ptr::eq(*r, *p)))
        .cloned()
        .collect();
    out.predicates.push(Predicate::Id { ids, not: false });
    Ok(Some(out))
}

pub(super) fn run(conn: &mut Conn, query: &SearchQuery) -> StorageResult<SearchPage> {
    let intersected = intersect_lookups(conn, query)?;
    let query = intersected.as_ref().unwrap_or(query);
    let mut out = SearchPage {
        resources: Vec::new(),
        included: Vec::new(),
        include_truncated: false,
        total: None,
        next: None,
        previous: None,
    };
    if query.count == 0 {
        out.total = total(conn, query)?;
        return Ok(out);
    }
    let sort = &query.sort;
    let (found, more) = page(conn, query, sort)?;
    // A first page that holds every match is its own count.
    out.total = match query.total {
        TotalMode::None => None,
        _ if query.cursor.is_none() && !more => Some(found.len() as i64),
        _ => total(conn, query)?,
    };
    let backwards = query.cursor.as_ref().is_some_and(|c| c.backwards);
    // Forward: `more` means a next page. Backwards: `more` means a previous one,
    // and there is always a next page (the one we came from).
    let (has_next, has_prev) = match (&query.cursor, backwards) {
        (None, _) => (more, false),
        (Some(_), false) => (more, true),
        (Some(_), true) => (true, more),
    };
    if has_next {
        out.next = found.last().map(|r| cursor_of(r, sort, false));
    }
    if has_prev {
        out.previous = found.first().map(|r| cursor_of(r, sort, true));
    }
    for f in found {
        out.resources.push(stored(
            query.resource_type,
            &f.res_id,
            f.version,
            f.last_updated,
            f.content,
        )?);
    }
    if !query.include.is_empty() || !query.revinclude.is_empty() {
        includes(conn, query, &mut out)?;
    }
    Ok(out)
}

fn key(r: &StoredResource) -> (ResourceType, String) {
    (r.resource_type, r.id.as_str().to_owned())
}

fn load_by_ids(
    conn: &mut Conn,
    ty: ResourceType,
    ids: &[String],
) -> StorageResult<Vec<StoredResource>> {
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let mut sql = Sql::new();
        sql.push("SELECT r.res_id, r.version, r.last_updated, r.content FROM resources r WHERE ");
        scope_filter(&mut sql, "r", ty);
        sql.push(" AND r.deleted = 0 AND r.res_id IN (")
            .text_list(chunk)
            .push(") ORDER BY r.res_id");
        for f in conn.load::<rows::Found>(&sql)? {
            out.push(stored(ty, &f.res_id, f.version, f.last_updated, f.content)?);
        }
    }
    Ok(out)
}

/// The reference parameters an include spec follows.
fn include_params(spec: &IncludeSpec) -> Vec<&'static ParamDef> {
    match spec.param {
        Some(p) => vec![p],
        None => registry::registry()
            .for_type(spec.source)
            .filter(|p| p.kind == ParamKind::Reference)
            .collect(),
    }
}

/// Follows `_include` (forward) and `_revinclude` (reverse) from `from`.
fn follow(
    conn: &mut Conn,
    from: &[StoredResource],
    spec: &IncludeSpec,
    reverse: bool,
) -> StorageResult<Vec<StoredResource>> {
    let mut out = Vec::new();
    if from.is_empty() {
        return Ok(out);
    }
    for param in include_params(spec) {
        if !reverse {
            let ids: Vec<&str> = from
                .iter()
                .filter(|r| r.resource_type == spec.source)
                .map(|r| r.id.as_str())
                .collect();
            for chunk in ids.chunks(CHUNK) {
                let mut sql = Sql::new();
                sql.push("SELECT DISTINCT x.target_type, x.target_id FROM ");
                by_owner(
                    &mut sql,
                    conn.dialect() == super::Dialect::Sqlite,
                    "idx_reference",
                    "x",
                );
                sql.push(" WHERE x.res_type = ")
                    .text(spec.source.as_str())
                    .push(" AND (x.param || '') = ")
                    .text(&param.code)
                    .push(" AND x.target_type <> ''");
                if let Some(t) = spec.target {
                    sql.push(" AND x.target_type = ").text(t.as_str());
                }
                sql.push(" AND x.res_id IN (").text_list(chunk).push(")");
                let targets = conn.load::<rows::Target>(&sql)?;
                let mut by_type: std::collections::BTreeMap<ResourceType, Vec<String>> =
                    Default::default();
                for t in targets {
                    if let Ok(ty) = t.target_type.parse::<ResourceType>() {
                        by_type.entry(ty).or_default().push(t.target_id);
                    }
                }
                for (ty, ids) in by_type {
                    out.extend(load_by_ids(conn, ty, &ids)?);
                }
            }
        } else {
            // Resources of `spec.source` whose `param` points at any of `from`.
            let mut by_type: std::collections::BTreeMap<ResourceType, Vec<&str>> =
                Default::default();
            for r in from {
                if spec.target.is_none_or(|t| t == r.resource_type) {
                    by_type
                        .entry(r.resource_type)
                        .or_default()
                        .push(r.id.as_str());
                }
            }
            for (ty, ids) in by_type {
                for chunk in ids.chunks(CHUNK) {
                    let mut sql = Sql::new();
                    sql.push("SELECT r.res_id, r.version, r.last_updated, r.content FROM resources r WHERE ");
                    scope_filter(&mut sql, "r", spec.source);
                    sql.push(" AND r.deleted = 0 AND r.res_id IN (SELECT x.res_id FROM idx_reference x WHERE x.res_type = ")
                        .text(spec.source.as_str())
                        .push(" AND x.param = ")
                        .text(&param.code)
                        .push(" AND x.target_type = ")
                        .text(ty.as_str())
                        .push(" AND x.target_id IN (")
                        .text_list(chunk)
                        .push(")) ORDER BY r.res_id LIMIT ")
                        .int((MAX_INCLUDED + 1) as i64);
                    for f in conn.load::<rows::Found>(&sql)? {
                        out.push(stored(
                            spec.source,
                            &f.res_id,
                            f.version,
                            f.last_updated,
                            f.content,
                        )?);
                    }
                }
            }
        }
    }
    Ok(out)
}

fn includes(conn: &mut Conn, query: &SearchQuery, out: &mut SearchPage) -> StorageResult<()> {
    let mut seen: std::collections::BTreeSet<(ResourceType, String)> =
        out.resources.iter().map(key).collect();
    let mut frontier: Vec<StoredResource> = out.resources.clone();
    for round in 0..=MAX_ITERATE {
        let mut next = Vec::new();
        let specs = query
            .include
            .iter()
            .map(|s| (s, false))
            .chain(query.revinclude.iter().map(|s| (s, true)));
        for (spec, reverse) in specs {
            // Plain specs apply to the matches only; :iterate ones to every round.
            if round > 0 && !spec.iterate {
                continue;
            }
            for r in follow(conn, &frontier, spec, reverse)? {
                if seen.insert(key(&r)) {
                    if out.included.len() >= MAX_INCLUDED {
                        out.include_truncated = true;
                        return Ok(());
                    }
                    out.included.push(r.clone());
                    next.push(r);
                }
            }
        }
        if next.is_empty() {
            break;
        }
        frontier = next;
    }
    Ok(())
}

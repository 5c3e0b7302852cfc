//! Typed predicates to SQL conditions: each test on an index table's row (token,
//! string, date and number prefixes, quantity, URI, reference), index lookups
//! that collect ids or probe one candidate's rows, composites, `:missing`,
//! chains and `_has`.

use crate::model::{Instant, ResourceType};
use crate::search::registry::{ParamDef, ParamKind};
use crate::search::rows::index_key;
use crate::search::types::*;
use crate::storage::sql::builder::{Bind, Sql};
use crate::storage::sql::conn::Conn;
use crate::storage::sql::{scope_filter, Dialect};

/// The largest code point: `v <= x < v || MAX_CHAR` is "x starts with v" in
/// binary collation (SQLite BINARY, PostgreSQL "C").
const MAX_CHAR: char = '\u{10FFFF}';

/// Unique table aliases for nested subqueries, and how the next index lookup
/// is written.
#[derive(Default)]
pub(in crate::storage::sql) struct Aliases {
    n: usize,
    /// The next `open_rows` probes the candidate's own rows (`EXISTS … WHERE
    /// t.res_id = r.res_id`, through the owner index) instead of collecting
    /// every matching id (`r.res_id IN (SELECT …)`). Set for all but the most
    /// selective predicate of a search; taken by the first lookup it reaches.
    pub(super) correlated: bool,
    /// The next `open_rows` is the search's driving row source: it opens
    /// `(SELECT DISTINCT t.res_type, t.res_id FROM table t WHERE …` (see
    /// [`push_selection`](super::plan::push_selection)).
    pub(super) source: bool,
    /// The connection is SQLite (see [`by_owner`]).
    pub(super) sqlite: bool,
}

impl Aliases {
    pub(super) fn for_conn(conn: &Conn) -> Aliases {
        Aliases::for_dialect(conn.dialect() == Dialect::Sqlite)
    }

    pub(in crate::storage::sql) fn for_dialect(sqlite: bool) -> Aliases {
        Aliases {
            sqlite,
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
pub(super) fn date_condition(
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
pub(in crate::storage::sql) fn predicate(
    sql: &mut Sql,
    a: &mut Aliases,
    pred: &Predicate,
    alias: &str,
    ty: ResourceType,
) {
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
pub(super) fn by_owner(sql: &mut Sql, sqlite: bool, table: &str, t: &str) {
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
pub(super) fn open_rows(
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

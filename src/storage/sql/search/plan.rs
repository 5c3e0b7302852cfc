//! The plan of a search: its AND-ed units (date ranges on one single-valued
//! parameter merged), their selectivity rank, the row source (the driver's index
//! rows or `resources`), the `FROM … WHERE` selection, and on SQLite the
//! in-memory intersection of several selective lookups.

use super::predicate::{date_condition, open_rows, predicate, Aliases};
use crate::search::registry::ParamDef;
use crate::search::types::*;
use crate::storage::sql::builder::Sql;
use crate::storage::sql::conn::Conn;
use crate::storage::sql::{rows, scope_filter, Dialect};
use crate::storage::StorageResult;

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
pub(super) enum Source {
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
    pub(super) fn select(self) -> &'static str {
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
pub(super) fn source_of(query: &SearchQuery) -> Source {
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
pub(super) fn push_selection(sql: &mut Sql, a: &mut Aliases, query: &SearchQuery, source: Source) {
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
pub(super) fn intersect_lookups(
    conn: &mut Conn,
    query: &SearchQuery,
) -> StorageResult<Option<Intersected>> {
    if conn.dialect() != Dialect::Sqlite {
        return Ok(None);
    }
    let chains_resolved = resolve_chains(conn, query)?;
    let query = chains_resolved.as_ref().unwrap_or(query);
    let units = units(query);
    if units.len() < 2 || units[0].0 <= 1 {
        return Ok(None);
    }
    let candidates: Vec<(u8, &Unit<'_>)> = units
        .iter()
        .filter(|(_, u)| lookup(u))
        .map(|(r, u)| (*r, u))
        .collect();
    if candidates.iter().filter(|(r, _)| *r < COARSE_RANK).count() < 2 {
        return Ok(None);
    }
    let mut ids: Option<std::collections::HashSet<String>> = None;
    let mut resolved: Vec<&Predicate> = Vec::new();
    for (rank, unit) in candidates {
        // A coarse condition (`status=free`) is worth reading only when the
        // selective ones still leave many candidates (each would be probed),
        // and only while it matches at most a few times as many.
        let cap = match (&ids, rank >= COARSE_RANK) {
            (_, false) => INTERSECT_CAP,
            (Some(have), true) if have.len() >= COARSE_INTERSECT_MIN => {
                INTERSECT_CAP.min(have.len() * 4)
            }
            _ => continue,
        };
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
            .int(i64::try_from(cap + 1).unwrap_or(i64::MAX))
            .push(") x");
        let Some(found) = conn.load::<rows::IdList>(&sql)?.pop() else {
            continue;
        };
        if usize::try_from(found.n).map_or(true, |n| n > cap) {
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
    // Every condition resolved: the ids (from live index rows) are the
    // matches themselves.
    let exact = out.predicates.is_empty().then_some(ids.len());
    out.predicates.push(Predicate::Id { ids, not: false });
    Ok(Some(Intersected { query: out, exact }))
}

/// Most targets a chain is resolved to before the search (see [`resolve_chains`]).
const CHAIN_TARGETS_CAP: usize = 200;

/// A chain (`schedule.actor:Location.organization.identifier=…`) whose inner
/// search finds few targets becomes a plain reference test on them: the
/// nested `IN` subqueries cost SQLite about four times the lookup of the
/// resolved ids. `None`: no chain to resolve.
fn resolve_chains(conn: &mut Conn, query: &SearchQuery) -> StorageResult<Option<SearchQuery>> {
    if !query
        .predicates
        .iter()
        .any(|p| matches!(p, Predicate::Chain { .. }))
    {
        return Ok(None);
    }
    let mut out = query.clone();
    let mut changed = false;
    for p in out.predicates.iter_mut() {
        let Predicate::Chain { param, targets } = p else {
            continue;
        };
        let mut values = Vec::new();
        let mut small = true;
        for (ty, inner) in targets.iter() {
            let mut sub = SearchQuery::new(*ty);
            sub.predicates = vec![(**inner).clone()];
            let mut sql = Sql::new();
            let mut a = Aliases::for_conn(conn);
            sql.push(
                "SELECT group_concat(x.res_id, ',') AS ids, COUNT(*) AS n FROM (SELECT r.res_id",
            );
            push_selection(&mut sql, &mut a, &sub, Source::Resources);
            sql.push(" LIMIT ")
                .int(i64::try_from(CHAIN_TARGETS_CAP + 1).unwrap_or(i64::MAX))
                .push(") x");
            let Some(found) = conn.load::<rows::IdList>(&sql)?.pop() else {
                small = false;
                break;
            };
            if usize::try_from(found.n).map_or(true, |n| n > CHAIN_TARGETS_CAP) {
                small = false;
                break;
            }
            for id in found
                .ids
                .unwrap_or_default()
                .split(',')
                .filter(|s| !s.is_empty())
            {
                values.push(ReferenceValue {
                    target_type: Some(*ty),
                    id: id.to_owned(),
                    url: false,
                });
            }
        }
        // (No target at all: the chain stays, and finds nothing quickly.)
        if !small || values.is_empty() {
            continue;
        }
        changed = true;
        *p = Predicate::Index {
            param,
            test: Test::Reference(values),
            not: false,
        };
    }
    Ok(changed.then_some(out))
}

/// Below this many candidates left, probing each beats reading a coarse
/// condition's ids.
const COARSE_INTERSECT_MIN: usize = 256;

/// A search rewritten as `_id` in the intersection AND what is left.
pub(super) struct Intersected {
    pub query: SearchQuery,
    /// `Some(n)`: nothing is left, so exactly these `n` ids match.
    pub exact: Option<usize>,
}

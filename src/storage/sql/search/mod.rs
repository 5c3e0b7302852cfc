//! Search on the SQL backends: index rows in, typed predicates to SQL, sorting
//! with keyset paging, counting, and `_include` / `_revinclude`.
//!
//! Every predicate becomes `alias.res_id [NOT] IN (SELECT … FROM idx_… WHERE
//! res_type = ? AND param = ? AND …)`, so both planners drive lookups from the
//! index tables' `(res_type, param, value)` indexes. Chains and `_has` nest the
//! same shape through `idx_reference`. Sorting uses correlated `MIN`/`MAX`
//! subqueries per key; paging is keyset on (sort keys…, res_id) in both
//! directions, so pages stay stable while data changes.
//!
//! This module holds the entry points ([`run`] for a search page,
//! [`matches_for_write`] for conditional writes); the work is in `index_rows`
//! (index rows in and out, date widths), `predicate` (predicates to SQL
//! conditions), `plan` (the units of a search, their rank, the row source and
//! the in-memory intersection), `page` (sort keys, keyset paging, counts and
//! totals) and `include` (`_include` / `_revinclude`).

mod include;
mod index_rows;
mod page;
mod plan;
mod predicate;

pub(super) use index_rows::{delete_indexes, insert_indexes, insert_indexes_many};

use super::builder::Sql;
use super::conn::Conn;
use super::read::stored;
use super::rows;
use crate::search::types::*;
use crate::storage::{SearchPage, StorageResult};
use include::includes;
use page::{cursor_of, total};
use plan::{intersect_lookups, push_selection, Source};
pub(super) use predicate::{predicate, Aliases};

/// Ids (or index rows) per statement in chunked inserts, deletes and loads.
const CHUNK: usize = 200;

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

/// One page of `query`'s matches (which carry the caller's restriction: the
/// service ANDs it in) and their includes (under `ctx`'s restriction).
pub(super) fn run(
    conn: &mut Conn,
    query: &SearchQuery,
    ctx: &crate::context::RequestContext,
) -> StorageResult<SearchPage> {
    let mut intersected = intersect_lookups(conn, query)?;
    let exact = intersected.as_ref().and_then(|i| i.exact);
    if let Some(i) = intersected.as_mut().filter(|i| i.exact.is_some()) {
        // The first page in id order needs only its own ids (and one more).
        if i.query.cursor.is_none() && i.query.sort.is_empty() && i.query.count > 0 {
            if let Some(Predicate::Id { ids, .. }) = i.query.predicates.last_mut() {
                ids.truncate(i.query.count + 1);
            }
        }
    }
    let query = intersected.as_ref().map_or(query, |i| &i.query);
    let mut out = SearchPage {
        resources: Vec::new(),
        included: Vec::new(),
        include_truncated: false,
        total: None,
        next: None,
        previous: None,
    };
    let known = |mode: TotalMode| match mode {
        TotalMode::None => None,
        TotalMode::Accurate => exact.map(|n| n as i64),
        // Known for free: exact beyond the estimate's cap too.
        TotalMode::Estimate => exact.map(|n| n as i64),
    };
    if query.count == 0 {
        out.total = match exact {
            Some(_) => known(query.total),
            None => total(conn, query)?,
        };
        return Ok(out);
    }
    let sort = &query.sort;
    let (found, more) = page::page(conn, query, sort)?;
    // A first page that holds every match is its own count.
    out.total = match query.total {
        TotalMode::None => None,
        _ if query.cursor.is_none() && !more => Some(found.len() as i64),
        mode if exact.is_some() => known(mode),
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
        includes(conn, query, &mut out, ctx)?;
    }
    Ok(out)
}

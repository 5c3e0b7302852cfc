//! `_include` and `_revinclude`: the reference targets (or sources) of a page's
//! matches, `:iterate` rounds, at most [`MAX_INCLUDED`] resources.

use super::predicate::by_owner;
use super::CHUNK;
use crate::context::RequestContext;
use crate::model::ResourceType;
use crate::search::registry::{self, ParamDef, ParamKind};
use crate::search::types::*;
use crate::storage::sql::builder::Sql;
use crate::storage::sql::conn::Conn;
use crate::storage::sql::read::stored;
use crate::storage::sql::{caller_scope, rows, Dialect};
use crate::storage::{SearchPage, StorageResult, StoredResource};

/// Most resources `_include`/`_revinclude` may add to one page.
pub const MAX_INCLUDED: usize = 1000;
const MAX_ITERATE: usize = 3;

fn key(r: &StoredResource) -> (ResourceType, String) {
    (r.resource_type, r.id.as_str().to_owned())
}

fn load_by_ids(
    conn: &mut Conn,
    ty: ResourceType,
    ids: &[String],
    ctx: &RequestContext,
) -> StorageResult<Vec<StoredResource>> {
    let sqlite = conn.dialect() == Dialect::Sqlite;
    let mut out = Vec::new();
    for chunk in ids.chunks(CHUNK) {
        let mut sql = Sql::new();
        sql.push("SELECT r.res_id, r.version, r.last_updated, r.content FROM resources r WHERE ");
        caller_scope(&mut sql, sqlite, "r", ty, ctx);
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
    ctx: &RequestContext,
) -> StorageResult<Vec<StoredResource>> {
    let sqlite = conn.dialect() == Dialect::Sqlite;
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
                    conn.dialect() == Dialect::Sqlite,
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
                    out.extend(load_by_ids(conn, ty, &ids, ctx)?);
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
                    caller_scope(&mut sql, sqlite, "r", spec.source, ctx);
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

pub(super) fn includes(
    conn: &mut Conn,
    query: &SearchQuery,
    out: &mut SearchPage,
    ctx: &RequestContext,
) -> StorageResult<()> {
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
            for r in follow(conn, &frontier, spec, reverse, ctx)? {
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

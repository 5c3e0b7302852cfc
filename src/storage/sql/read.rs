//! Reads of head and version rows: the current version of a resource, one
//! version, the head row (locked `FOR UPDATE` on PostgreSQL when a write asks),
//! and the conversion of a stored row into a [`StoredResource`].

use super::builder::Sql;
use super::conn::Conn;
use super::{rows, scope_filter, Dialect};
use crate::model::{Instant, LogicalId, ResourceType, VersionId};
use crate::storage::{StorageError, StorageResult, StoredResource};

pub(super) fn stored(
    ty: ResourceType,
    id: &str,
    version: i64,
    last_updated: i64,
    content: Option<String>,
) -> StorageResult<StoredResource> {
    Ok(StoredResource {
        resource_type: ty,
        id: LogicalId::parse(id).ok_or_else(|| {
            StorageError::Internal(anyhow::anyhow!("stored id is not a valid id"))
        })?,
        version,
        last_updated: Instant(last_updated),
        content,
    })
}

pub(super) fn read_head(
    conn: &mut Conn,
    ty: ResourceType,
    id: &LogicalId,
    for_update: bool,
) -> StorageResult<Option<rows::Head>> {
    let mut sql = Sql::new();
    sql.push("SELECT version, last_updated, deleted, content FROM resources r WHERE ");
    scope_filter(&mut sql, "r", ty);
    sql.push(" AND r.res_id = ").text(id.as_str());
    if for_update && conn.dialect() == Dialect::Postgres {
        sql.push(" FOR UPDATE");
    }
    Ok(conn.load::<rows::Head>(&sql)?.into_iter().next())
}

/// The content of version row `v`. A version's content is stored once: the
/// current version's lives in its head row in `resources` (the version row holds
/// NULL until the version is superseded, when `write_version` copies it down);
/// a deletion has none anywhere. Rows written before this rule carry their
/// content themselves, which the COALESCE also reads.
pub(super) const VERSION_CONTENT: &str = "COALESCE(v.content, (SELECT r.content FROM resources r WHERE r.res_type = v.res_type AND r.res_id = v.res_id AND r.version = v.version)) AS content";

pub(super) fn read_current(
    conn: &mut Conn,
    ty: ResourceType,
    id: &LogicalId,
) -> StorageResult<StoredResource> {
    let head = read_head(conn, ty, id, false)?.ok_or(StorageError::NotFound)?;
    if head.version == 0 {
        return Err(StorageError::NotFound);
    }
    if head.deleted != 0 {
        return Err(StorageError::Gone {
            version: head.version,
            last_updated: Instant(head.last_updated),
        });
    }
    stored(
        ty,
        id.as_str(),
        head.version,
        head.last_updated,
        head.content,
    )
}

pub(super) fn read_version(
    conn: &mut Conn,
    ty: ResourceType,
    id: &LogicalId,
    version: VersionId,
) -> StorageResult<StoredResource> {
    let mut sql = Sql::new();
    sql.push("SELECT seq, res_type, res_id, version, last_updated, method, ")
        .push(VERSION_CONTENT)
        .push(" FROM resource_versions v WHERE ");
    scope_filter(&mut sql, "v", ty);
    sql.push(" AND v.res_id = ")
        .text(id.as_str())
        .push(" AND v.version = ")
        .int(version);
    let row = conn
        .load::<rows::VersionRow>(&sql)?
        .into_iter()
        .next()
        .ok_or(StorageError::NotFound)?;
    if row.content.is_none() {
        return Err(StorageError::Gone {
            version: row.version,
            last_updated: Instant(row.last_updated),
        });
    }
    stored(ty, id.as_str(), row.version, row.last_updated, row.content)
}

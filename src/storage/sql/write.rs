//! Head and version writes: create (conditional or not, one or many at once),
//! update and delete, each writing the head row, the version row and the index
//! rows in one transaction; meta stamping and serialisation on the way in; the
//! bulk id probe and advisory locks of transactions.

use super::builder::{Bind, Sql};
use super::conn::Conn;
use super::read::{read_head, stored};
use super::{rows, scope_filter, search, Dialect};
use crate::model::{Instant, LogicalId, ResourceType, VersionId};
use crate::search::rows::IndexRow;
use crate::storage::{
    drop_off_thread, stamp_meta, strip_server_meta, CreateMethod, CreateRequest, DeleteRequest,
    Precondition, StorageError, StorageResult, StoredResource, UpdateRequest, WriteKind,
    WriteOutcome,
};

/// Makes sure a head row exists (a `version = 0` placeholder if new) and locks it.
fn lock_head(conn: &mut Conn, ty: ResourceType, id: &LogicalId) -> StorageResult<rows::Head> {
    let mut sql = Sql::new();
    sql.push("INSERT INTO resources (res_type, res_id, version, last_updated, deleted, content) VALUES (")
        .text(ty.as_str())
        .push(", ")
        .text(id.as_str())
        .push(", 0, 0, 1, NULL) ON CONFLICT (res_type, res_id) DO NOTHING");
    conn.exec(&sql)?;
    read_head(conn, ty, id, true)?.ok_or_else(|| {
        StorageError::Internal(anyhow::anyhow!("head row vanished inside a transaction"))
    })
}

struct VersionWrite<'a> {
    ty: ResourceType,
    id: &'a LogicalId,
    version: VersionId,
    at: Instant,
    method: &'static str,
    content: Option<String>,
}

/// Writes one version: the head row, the version row, and replaces index rows.
/// `fresh` means the head row does not exist yet (a create with a new id): it is
/// inserted rather than updated and there are no old index rows to remove.
fn write_version(
    conn: &mut Conn,
    w: VersionWrite<'_>,
    indexes: &[IndexRow],
    fresh: bool,
) -> StorageResult<()> {
    let mut sql = Sql::prepared();
    if fresh {
        sql.push("INSERT INTO resources (res_type, res_id, version, last_updated, deleted, content) VALUES (")
            .text(w.ty.as_str())
            .push(", ")
            .text(w.id.as_str())
            .push(", ")
            .int(w.version)
            .push(", ")
            .int(w.at.0)
            .push(", ")
            .int(i64::from(w.content.is_none()))
            .push(", ")
            .bind(Bind::OptText(w.content))
            .push(")");
    } else {
        // The version being superseded gets its content: until now it was
        // only in the head row (see `VERSION_CONTENT`).
        let mut keep = Sql::prepared();
        keep.push("UPDATE resource_versions SET content = (SELECT r.content FROM resources r WHERE r.res_type = ")
            .text(w.ty.as_str())
            .push(" AND r.res_id = ")
            .text(w.id.as_str())
            .push(") WHERE res_type = ")
            .text(w.ty.as_str())
            .push(" AND res_id = ")
            .text(w.id.as_str())
            .push(" AND content IS NULL AND version = (SELECT r.version FROM resources r WHERE r.res_type = ")
            .text(w.ty.as_str())
            .push(" AND r.res_id = ")
            .text(w.id.as_str())
            .push(")");
        conn.exec(&keep)?;
        sql.push("UPDATE resources SET version = ")
            .int(w.version)
            .push(", last_updated = ")
            .int(w.at.0)
            .push(", deleted = ")
            .int(i64::from(w.content.is_none()))
            .push(", content = ")
            .bind(Bind::OptText(w.content))
            .push(" WHERE res_type = ")
            .text(w.ty.as_str())
            .push(" AND res_id = ")
            .text(w.id.as_str());
    }
    conn.exec(&sql)?;

    let mut sql = Sql::prepared();
    sql.push("INSERT INTO resource_versions (res_type, res_id, version, last_updated, method, content) VALUES (")
        .text(w.ty.as_str())
        .push(", ")
        .text(w.id.as_str())
        .push(", ")
        .int(w.version)
        .push(", ")
        .int(w.at.0)
        .push(", ")
        .text(w.method)
        .push(", NULL)");
    conn.exec(&sql)?;

    if !fresh {
        search::delete_indexes(conn, w.ty, &[w.id])?;
    }
    search::insert_indexes(conn, w.ty, w.id, indexes)
}

fn serialize(resource: &serde_json::Value) -> StorageResult<String> {
    serde_json::to_string(resource).map_err(|e| StorageError::Internal(anyhow::Error::new(e)))
}

/// Stable 64-bit FNV-1a hash (for advisory-lock keys).
fn fnv1a(s: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in s.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h as i64
}

pub(super) fn do_create(conn: &mut Conn, req: CreateRequest) -> StorageResult<WriteOutcome> {
    conn.write_tx(|conn| create_in(conn, req, None))
}

/// A create inside an open write transaction; `id` is a pre-assigned id (bundles
/// assign ids before writing so references between entries can be rewritten).
pub(super) fn create_in(
    conn: &mut Conn,
    req: CreateRequest,
    id: Option<LogicalId>,
) -> StorageResult<WriteOutcome> {
    {
        if let Some(cond) = &req.if_none_exist {
            if conn.dialect() == Dialect::Postgres {
                let mut sql = Sql::new();
                // The one key of every conditional path (see `SearchQuery::selection_key`).
                let key = super::conditional_lock_key(cond);
                sql.push("SELECT pg_advisory_xact_lock(")
                    .int(fnv1a(&key))
                    .push(")");
                conn.exec(&sql)?;
            }
            let found = search::matches_for_write(conn, cond, 2)?;
            match found.len() {
                0 => {}
                1 => {
                    let f = found.into_iter().next().ok_or(StorageError::NotFound)?;
                    return Ok(WriteOutcome {
                        kind: WriteKind::Existing,
                        stored: Some(stored(
                            req.resource_type,
                            &f.res_id,
                            f.version,
                            f.last_updated,
                            f.content,
                        )?),
                    });
                }
                _ => {
                    return Err(StorageError::PreconditionFailed(
                        "If-None-Exist criteria match more than one resource".into(),
                    ))
                }
            }
        }
        let id = id.unwrap_or_else(LogicalId::generate);
        let at = Instant::now();
        let mut resource = req.content.resource;
        set_id(&mut resource, &id);
        stamp_meta(&mut resource, 1, at);
        let content = serialize(&resource)?;
        write_version(
            conn,
            VersionWrite {
                ty: req.resource_type,
                id: &id,
                version: 1,
                at,
                method: "POST",
                content: Some(content.clone()),
            },
            &req.content.indexes,
            true,
        )?;
        Ok(WriteOutcome {
            kind: WriteKind::Created,
            stored: Some(StoredResource {
                resource_type: req.resource_type,
                id: id.clone(),
                version: 1,
                last_updated: at,
                content: Some(content),
            }),
        })
    }
}

type Serialized = (ResourceType, LogicalId, String, Vec<IndexRow>);

/// Sets id and meta and serialises each resource; large batches on two threads
/// (the writer holds the write lock meanwhile, so this is on the critical path).
fn stamp_and_serialize(
    mut reqs: Vec<(CreateRequest, LogicalId)>,
    at: Instant,
) -> StorageResult<Vec<Serialized>> {
    let run = |reqs: Vec<(CreateRequest, LogicalId)>| -> StorageResult<Vec<Serialized>> {
        reqs.into_iter()
            .map(|(req, id)| {
                let mut resource = req.content.resource;
                set_id(&mut resource, &id);
                stamp_meta(&mut resource, 1, at);
                let content = serialize(&resource)?;
                Ok((req.resource_type, id, content, req.content.indexes))
            })
            .collect()
    };
    if reqs.len() < 64 {
        return run(reqs);
    }
    let second = reqs.split_off(reqs.len() / 2);
    let (mut first, second) = std::thread::scope(|s| {
        let other = s.spawn(|| run(second));
        (run(reqs), other.join())
    });
    let second = second
        .map_err(|_| StorageError::Internal(anyhow::anyhow!("serialisation thread panicked")))??;
    if let Ok(v) = &mut first {
        v.extend(second);
    }
    first
}

/// Many plain creates (fresh ids, no conditions) with multi-row INSERTs: the
/// bulk path of transaction Bundles and imports.
pub(super) fn create_many_in(
    conn: &mut Conn,
    reqs: Vec<(CreateRequest, LogicalId)>,
    method: CreateMethod,
) -> StorageResult<Vec<WriteOutcome>> {
    let method = match method {
        CreateMethod::Post => "POST",
        CreateMethod::Put => "PUT",
    };
    const ROWS: usize = 100;
    let at = Instant::now();
    let mut prepared = stamp_and_serialize(reqs, at)?;
    for chunk in prepared.chunks(ROWS) {
        for (table, method) in [("resources", None), ("resource_versions", Some(method))] {
            let mut sql = Sql::prepared();
            sql.push("INSERT INTO ").push(table);
            match method {
                None => {
                    sql.push(" (res_type, res_id, version, last_updated, deleted, content) VALUES ")
                }
                Some(_) => {
                    sql.push(" (res_type, res_id, version, last_updated, method, content) VALUES ")
                }
            };
            for (i, (ty, id, content, _)) in chunk.iter().enumerate() {
                if i > 0 {
                    sql.push(", ");
                }
                sql.push("(")
                    .text(ty.as_str())
                    .push(", ")
                    .text(id.as_str())
                    .push(", 1, ")
                    .int(at.0)
                    .push(", ");
                // The version row's content stays NULL: see `VERSION_CONTENT`.
                match method {
                    None => sql.push("0, ").text(content),
                    Some(m) => sql.text(m).push(", NULL"),
                };
                sql.push(")");
            }
            conn.exec(&sql)?;
        }
    }
    let items: Vec<(ResourceType, &LogicalId, &[IndexRow])> = prepared
        .iter()
        .map(|(ty, id, _, rows)| (*ty, id, rows.as_slice()))
        .collect();
    search::insert_indexes_many(conn, &items)?;
    let rows: Vec<Vec<IndexRow>> = prepared
        .iter_mut()
        .map(|p| std::mem::take(&mut p.3))
        .collect();
    let large = rows.len() > 64;
    drop_off_thread(rows, large);
    Ok(prepared
        .into_iter()
        .map(|(ty, id, content, _)| WriteOutcome {
            kind: WriteKind::Created,
            stored: Some(StoredResource {
                resource_type: ty,
                id,
                version: 1,
                last_updated: at,
                content: Some(content),
            }),
        })
        .collect())
}

fn set_id(resource: &mut serde_json::Value, id: &LogicalId) {
    if let Some(obj) = resource.as_object_mut() {
        obj.insert("id".into(), serde_json::Value::String(id.to_string()));
    }
}

fn same_content(stored: &str, incoming: &serde_json::Value) -> bool {
    match serde_json::from_str::<serde_json::Value>(stored) {
        Ok(mut old) => {
            strip_server_meta(&mut old);
            &old == incoming
        }
        Err(_) => false,
    }
}

pub(super) fn do_update(conn: &mut Conn, req: UpdateRequest) -> StorageResult<WriteOutcome> {
    conn.write_tx(|conn| update_in(conn, req))
}

pub(super) fn update_in(conn: &mut Conn, req: UpdateRequest) -> StorageResult<WriteOutcome> {
    {
        let head = lock_head(conn, req.resource_type, &req.id)?;
        let exists = head.version > 0 && head.deleted == 0;
        match req.precondition {
            Precondition::None => {}
            Precondition::VersionIs(v) => {
                if !exists || head.version != v {
                    return Err(StorageError::VersionConflict {
                        current: exists.then_some(head.version),
                    });
                }
            }
            Precondition::MustNotExist => {
                if exists {
                    return Err(StorageError::PreconditionFailed(
                        "If-None-Match: * but the resource exists".into(),
                    ));
                }
            }
        }
        let mut resource = req.content.resource.clone();
        set_id(&mut resource, &req.id);
        strip_server_meta(&mut resource);
        if exists {
            if let Some(old) = &head.content {
                if same_content(old, &resource) {
                    return Ok(WriteOutcome {
                        kind: WriteKind::Unchanged,
                        stored: Some(stored(
                            req.resource_type,
                            req.id.as_str(),
                            head.version,
                            head.last_updated,
                            head.content.clone(),
                        )?),
                    });
                }
            }
        }
        let version = head.version + 1;
        let at = Instant::now();
        stamp_meta(&mut resource, version, at);
        let content = serialize(&resource)?;
        write_version(
            conn,
            VersionWrite {
                ty: req.resource_type,
                id: &req.id,
                version,
                at,
                method: "PUT",
                content: Some(content.clone()),
            },
            &req.content.indexes,
            false,
        )?;
        Ok(WriteOutcome {
            kind: if exists {
                WriteKind::Updated
            } else {
                WriteKind::Created
            },
            stored: Some(StoredResource {
                resource_type: req.resource_type,
                id: req.id.clone(),
                version,
                last_updated: at,
                content: Some(content),
            }),
        })
    }
}

pub(super) fn do_delete(conn: &mut Conn, req: DeleteRequest) -> StorageResult<WriteOutcome> {
    conn.write_tx(|conn| delete_in(conn, req))
}

pub(super) fn delete_in(conn: &mut Conn, req: DeleteRequest) -> StorageResult<WriteOutcome> {
    {
        let Some(head) = read_head(conn, req.resource_type, &req.id, true)? else {
            if let Precondition::VersionIs(_) = req.precondition {
                return Err(StorageError::VersionConflict { current: None });
            }
            return Ok(WriteOutcome {
                kind: WriteKind::NothingToDelete,
                stored: None,
            });
        };
        let exists = head.version > 0 && head.deleted == 0;
        if let Precondition::VersionIs(v) = req.precondition {
            if !exists || head.version != v {
                return Err(StorageError::VersionConflict {
                    current: exists.then_some(head.version),
                });
            }
        }
        if !exists {
            return Ok(WriteOutcome {
                kind: WriteKind::NothingToDelete,
                stored: None,
            });
        }
        let version = head.version + 1;
        let at = Instant::now();
        write_version(
            conn,
            VersionWrite {
                ty: req.resource_type,
                id: &req.id,
                version,
                at,
                method: "DELETE",
                content: None,
            },
            &[],
            false,
        )?;
        Ok(WriteOutcome {
            kind: WriteKind::Deleted,
            stored: Some(StoredResource {
                resource_type: req.resource_type,
                id: req.id.clone(),
                version,
                last_updated: at,
                content: None,
            }),
        })
    }
}

/// Which of `ids` (of type `ty`) have a head row, in chunks of 500 ids.
pub(super) fn existing_ids(
    conn: &mut Conn,
    ty: ResourceType,
    ids: &[&LogicalId],
) -> StorageResult<std::collections::HashSet<String>> {
    let mut out = std::collections::HashSet::new();
    for chunk in ids.chunks(500) {
        let mut sql = Sql::new();
        sql.push("SELECT r.res_id AS res_id FROM resources r WHERE ");
        scope_filter(&mut sql, "r", ty);
        sql.push(" AND r.res_id IN (")
            .text_list(chunk.iter().map(|id| id.as_str()))
            .push(")");
        out.extend(
            conn.load::<rows::ResId>(&sql)?
                .into_iter()
                .map(|r| r.res_id),
        );
    }
    Ok(out)
}

/// [`TxOps::lock`](crate::storage::TxOps::lock): a transaction-scoped advisory
/// lock on PostgreSQL; nothing on SQLite, whose writes are already serial.
pub(super) fn advisory_lock(conn: &mut Conn, key: &str) -> StorageResult<()> {
    if conn.dialect() == Dialect::Postgres {
        let mut sql = Sql::new();
        sql.push("SELECT pg_advisory_xact_lock(")
            .int(fnv1a(key))
            .push(")");
        conn.exec(&sql)?;
    }
    Ok(())
}

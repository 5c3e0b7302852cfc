//! `Reindex` for the SQL backend: resumable batches that replace index rows,
//! each committing the job's cursor (`Type/id`) in the same transaction.

use async_trait::async_trait;

use super::{jobs, search, Conn, Dialect, Sql, SqlBackend};
use crate::model::{LogicalId, ResourceType};
use crate::search::rows::IndexRow;
use crate::storage::{
    Extractor, Lease, Progress, Reindex, ReindexStep, RequestContext, ResourceKey, StorageError,
    StorageResult,
};

#[derive(diesel::QueryableByName)]
struct Row {
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
    #[diesel(sql_type = diesel::sql_types::Nullable<diesel::sql_types::Text>)]
    content: Option<String>,
}

fn key(res_type: &str, res_id: &str) -> StorageResult<ResourceKey> {
    let ty = res_type
        .parse::<ResourceType>()
        .map_err(|_| StorageError::Internal(anyhow::anyhow!("unknown stored type")))?;
    let id = LogicalId::parse(res_id)
        .ok_or_else(|| StorageError::Internal(anyhow::anyhow!("invalid stored id")))?;
    Ok((ty, id))
}

/// `AND r.res_type IN (…)` when `types` is not empty.
fn types_filter(sql: &mut Sql, types: &[ResourceType]) {
    if types.is_empty() {
        return;
    }
    sql.push(" AND r.res_type IN (")
        .text_list(types.iter().map(|t| t.as_str()))
        .push(")");
}

/// The whole of a batch's arguments (one transaction's worth).
struct Batch {
    lease: Lease,
    types: Vec<ResourceType>,
    after: Option<ResourceKey>,
    limit: usize,
    done_before: i64,
    extract: Extractor,
}

fn batch(conn: &mut Conn, b: Batch) -> StorageResult<ReindexStep> {
    let Batch {
        lease,
        types,
        after,
        limit,
        done_before,
        extract,
    } = b;
    let types = &types[..];
    let mut sql = Sql::new();
    sql.push("SELECT r.res_type, r.res_id, r.content FROM resources r WHERE r.deleted = 0");
    types_filter(&mut sql, types);
    if let Some((ty, id)) = &after {
        sql.push(" AND (r.res_type > ")
            .text(ty.as_str())
            .push(" OR (r.res_type = ")
            .text(ty.as_str())
            .push(" AND r.res_id > ")
            .text(id.as_str())
            .push("))");
    }
    sql.push(" ORDER BY r.res_type, r.res_id LIMIT ")
        .int(limit.max(1) as i64);
    if conn.dialect() == Dialect::Postgres {
        // Writers of these resources wait until the batch commits.
        sql.push(" FOR UPDATE");
    }
    let rows = conn.load::<Row>(&sql)?;
    let Some(last) = rows.last() else {
        return Ok(ReindexStep {
            done: 0,
            last: None,
        });
    };
    let last = key(&last.res_type, &last.res_id)?;

    let mut items: Vec<(ResourceType, LogicalId, Vec<IndexRow>)> = Vec::with_capacity(rows.len());
    for r in &rows {
        let (ty, id) = key(&r.res_type, &r.res_id)?;
        let value: serde_json::Value = serde_json::from_str(r.content.as_deref().unwrap_or("null"))
            .map_err(|e| StorageError::Internal(anyhow::Error::new(e)))?;
        items.push((ty, id, extract(ty, &value)));
    }
    // Old rows go per type, in chunks of ids.
    let mut by_type: std::collections::BTreeMap<ResourceType, Vec<&LogicalId>> =
        std::collections::BTreeMap::new();
    for (ty, id, _) in &items {
        by_type.entry(*ty).or_default().push(id);
    }
    for (ty, ids) in &by_type {
        search::delete_indexes(conn, *ty, ids)?;
    }
    let refs: Vec<(ResourceType, &LogicalId, &[IndexRow])> = items
        .iter()
        .map(|(ty, id, rows)| (*ty, id, rows.as_slice()))
        .collect();
    search::insert_indexes_many(conn, &refs)?;
    let progress = Progress {
        cursor: Some(format!("{}/{}", last.0, last.1)),
        done_units: done_before.saturating_add(items.len() as i64),
        total_units: None,
    };
    if !jobs::checkpoint_tx(conn, &lease, &progress)? {
        // Another instance holds the job now: this batch rolls back.
        return Err(StorageError::LeaseLost);
    }
    Ok(ReindexStep {
        done: items.len(),
        last: Some(last),
    })
}

#[async_trait]
impl Reindex for SqlBackend {
    async fn reindex_total(
        &self,
        _ctx: &RequestContext,
        types: &[ResourceType],
    ) -> StorageResult<u64> {
        let types = types.to_vec();
        self.blocking(move |mut conn| {
            let mut sql = Sql::new();
            sql.push("SELECT COUNT(*) AS n FROM resources r WHERE r.deleted = 0");
            types_filter(&mut sql, &types);
            Ok(conn.count(&sql)?.max(0) as u64)
        })
        .await
    }

    async fn reindex_batch(
        &self,
        _ctx: &RequestContext,
        lease: &Lease,
        types: &[ResourceType],
        after: Option<ResourceKey>,
        limit: usize,
        done_before: i64,
        extract: Extractor,
    ) -> StorageResult<ReindexStep> {
        let b = Batch {
            lease: lease.clone(),
            types: types.to_vec(),
            after,
            limit,
            done_before,
            extract,
        };
        self.blocking(move |mut conn| conn.write_tx(|conn| batch(conn, b)))
            .await
    }
}

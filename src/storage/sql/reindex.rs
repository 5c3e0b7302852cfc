//! `Reindex` for the SQL backend: resumable batches that replace index rows.

use async_trait::async_trait;

use super::{search, Conn, Dialect, Sql, SqlBackend};
use crate::model::{LogicalId, ResourceType};
use crate::search::rows::IndexRow;
use crate::storage::{Extractor, Reindex, ReindexStep, ResourceKey, StorageError, StorageResult};

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

fn batch(
    conn: &mut Conn,
    job: &str,
    types: &[ResourceType],
    after: Option<ResourceKey>,
    limit: usize,
    extract: &Extractor,
) -> StorageResult<ReindexStep> {
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
    save_cursor(conn, job, Some(&last))?;
    Ok(ReindexStep {
        done: items.len(),
        last: Some(last),
    })
}

fn save_cursor(conn: &mut Conn, job: &str, at: Option<&ResourceKey>) -> StorageResult<()> {
    let mut sql = Sql::new();
    sql.push("DELETE FROM reindex_state WHERE name = ")
        .text(job);
    conn.exec(&sql)?;
    if let Some((ty, id)) = at {
        let mut sql = Sql::new();
        sql.push("INSERT INTO reindex_state (name, res_type, res_id) VALUES (")
            .text(job)
            .push(", ")
            .text(ty.as_str())
            .push(", ")
            .text(id.as_str())
            .push(")");
        conn.exec(&sql)?;
    }
    Ok(())
}

#[derive(diesel::QueryableByName)]
struct Cursor {
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_type: String,
    #[diesel(sql_type = diesel::sql_types::Text)]
    res_id: String,
}

#[async_trait]
impl Reindex for SqlBackend {
    async fn reindex_total(&self, types: &[ResourceType]) -> StorageResult<u64> {
        let types = types.to_vec();
        self.blocking(move |mut conn| {
            let mut sql = Sql::new();
            sql.push("SELECT COUNT(*) AS n FROM resources r WHERE r.deleted = 0");
            types_filter(&mut sql, &types);
            Ok(conn.count(&sql)?.max(0) as u64)
        })
        .await
    }

    async fn reindex_cursor(&self, job: &str) -> StorageResult<Option<ResourceKey>> {
        let job = job.to_owned();
        self.blocking(move |mut conn| {
            let mut sql = Sql::new();
            sql.push("SELECT res_type, res_id FROM reindex_state WHERE name = ")
                .text(&job);
            match conn.load::<Cursor>(&sql)?.first() {
                Some(c) => Ok(Some(key(&c.res_type, &c.res_id)?)),
                None => Ok(None),
            }
        })
        .await
    }

    async fn reindex_batch(
        &self,
        job: &str,
        types: &[ResourceType],
        after: Option<ResourceKey>,
        limit: usize,
        extract: Extractor,
    ) -> StorageResult<ReindexStep> {
        let job = job.to_owned();
        let types = types.to_vec();
        self.blocking(move |mut conn| {
            conn.write_tx(|conn| batch(conn, &job, &types, after, limit, &extract))
        })
        .await
    }

    async fn reindex_clear(&self, job: &str) -> StorageResult<()> {
        let job = job.to_owned();
        self.blocking(move |mut conn| conn.write_tx(|conn| save_cursor(conn, &job, None)))
            .await
    }
}

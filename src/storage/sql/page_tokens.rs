//! Server-side page tokens (`POST [type]/_search` links): each page's
//! parameters stored under a random token in `page_tokens` until it expires
//! (expired rows are swept on every write).

use super::builder::Sql;
use super::{rows, SqlBackend};
use crate::model::{Instant, ResourceType};
use crate::storage::StorageResult;

/// Stores each of `params` for `ttl` under a new token; returns the tokens.
pub(super) async fn put(
    backend: &SqlBackend,
    ty: ResourceType,
    params: Vec<String>,
    ttl: std::time::Duration,
) -> StorageResult<Vec<String>> {
    let now = Instant::now().0;
    let expires = now.saturating_add(i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX));
    let tokens: Vec<String> = params
        .iter()
        .map(|_| uuid::Uuid::new_v4().simple().to_string())
        .collect();
    let out = tokens.clone();
    backend
        .blocking(move |mut conn| {
            conn.write_tx(|conn| {
                let mut sweep = Sql::prepared();
                sweep
                    .push("DELETE FROM page_tokens WHERE expires_at < ")
                    .int(now);
                conn.exec(&sweep)?;
                for (token, p) in tokens.iter().zip(&params) {
                    let mut sql = Sql::prepared();
                    sql.push(
                        "INSERT INTO page_tokens (token, res_type, params, expires_at) VALUES (",
                    )
                    .text(token)
                    .push(", ")
                    .text(ty.as_str())
                    .push(", ")
                    .text(p)
                    .push(", ")
                    .int(expires)
                    .push(")");
                    conn.exec(&sql)?;
                }
                Ok(())
            })
        })
        .await?;
    Ok(out)
}

/// The type and parameters stored under `token`, if it has not expired.
pub(super) async fn get(
    backend: &SqlBackend,
    token: &str,
) -> StorageResult<Option<(ResourceType, String)>> {
    let token = token.to_owned();
    let now = Instant::now().0;
    backend
        .blocking(move |mut conn| {
            let mut sql = Sql::new();
            sql.push("SELECT res_type, params FROM page_tokens WHERE token = ")
                .text(&token)
                .push(" AND expires_at >= ")
                .int(now);
            Ok(conn
                .load::<rows::PageToken>(&sql)?
                .into_iter()
                .next()
                .and_then(|r| Some((r.res_type.parse().ok()?, r.params))))
        })
        .await
}

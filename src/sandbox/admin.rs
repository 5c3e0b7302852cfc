//! `/admin`: fault injection, counters and reset (no SSP headers), and the
//! hostile answers the `hostile` fault gives.

use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::web::{self, Bytes};
use actix_web::HttpResponse;
use chrono::Utc;
use futures_util::stream;
use serde_json::{json, Value};

use super::outcome::GpcError;
use super::store::{Hostile, Store};
use super::{Sandbox, FHIR_JSON};

/// The size of the `huge` body: 64 MiB.
pub const HUGE_BYTES: usize = 64 * 1024 * 1024;

fn admin_error(message: String) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": message }))
}

pub async fn get_faults(sb: web::Data<Sandbox>) -> HttpResponse {
    HttpResponse::Ok().json(sb.lock().faults.to_json())
}

/// Applies a faults update; fields left out keep their value.
pub fn apply_faults(store: &mut Store, update: &Value) -> Result<(), String> {
    let obj = update
        .as_object()
        .ok_or_else(|| "the body must be a JSON object".to_string())?;
    let mut next = store.faults.clone();
    for (key, value) in obj {
        match key.as_str() {
            "latency_ms" => {
                next.latency_ms = value
                    .as_u64()
                    .ok_or("latency_ms must be a non-negative integer")?;
            }
            "error_rate" => {
                let rate = value.as_f64().ok_or("error_rate must be a number")?;
                if !(0.0..=1.0).contains(&rate) {
                    return Err("error_rate must be between 0 and 1".into());
                }
                next.error_rate = rate;
            }
            "down" => next.down = value.as_bool().ok_or("down must be a boolean")?,
            "hostile" => {
                next.hostile = match value {
                    Value::Null => None,
                    Value::String(s) => Some(Hostile::parse(s).ok_or_else(|| {
                        format!(
                            "hostile {s:?} is not one of invalid-json, wrong-type, huge, redirect, drip"
                        )
                    })?),
                    _ => return Err("hostile must be null or a string".into()),
                };
            }
            other => return Err(format!("unknown field {other}")),
        }
    }
    if next.error_rate != store.faults.error_rate {
        store.fault_seq = 0;
    }
    store.faults = next;
    Ok(())
}

pub async fn put_faults(sb: web::Data<Sandbox>, body: Bytes) -> HttpResponse {
    let update: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return admin_error(format!("the body is not JSON: {e}")),
    };
    let mut store = sb.lock();
    match apply_faults(&mut store, &update) {
        Ok(()) => HttpResponse::Ok().json(store.faults.to_json()),
        Err(e) => admin_error(e),
    }
}

pub async fn stats(sb: web::Data<Sandbox>) -> HttpResponse {
    HttpResponse::Ok().json(sb.lock().stats.to_json())
}

pub async fn reset(sb: web::Data<Sandbox>) -> HttpResponse {
    let mut store = sb.lock();
    *store = Store::new(sb.opts.clone(), Utc::now());
    HttpResponse::Ok().json(json!({"reset": true, "faults": store.faults.to_json()}))
}

/// The `hostile` fault's answer to any `/fhir` request; `expects_bundle`
/// says whether the request would have had a Bundle back.
pub fn hostile(kind: Hostile, expects_bundle: bool) -> HttpResponse {
    match kind {
        Hostile::InvalidJson => HttpResponse::Ok()
            .content_type(FHIR_JSON)
            .body(r#"{"resourceType": "Bundle", "type": "searchset", "entry": [{"resource": {"resourceType": "#),
        Hostile::WrongType => {
            let body = if expects_bundle {
                GpcError::internal("hostile sandbox: an OperationOutcome with 200").to_resource()
            } else {
                json!({"resourceType": "Bundle", "id": uuid::Uuid::new_v4().to_string(), "type": "searchset", "total": 0})
            };
            HttpResponse::Ok().content_type(FHIR_JSON).body(body.to_string())
        }
        Hostile::Huge => {
            let head = Bytes::from_static(
                br#"{"resourceType": "Bundle", "type": "searchset", "entry": [], "padding": ""#,
            );
            let tail = Bytes::from_static(br#""}"#);
            let chunk = Bytes::from(vec![b'x'; 64 * 1024]);
            let mut fill = HUGE_BYTES - head.len() - tail.len();
            let mut parts = vec![head];
            while fill > 0 {
                let n = fill.min(chunk.len());
                parts.push(chunk.slice(..n));
                fill -= n;
            }
            parts.push(tail);
            HttpResponse::Ok()
                .content_type(FHIR_JSON)
                .streaming(stream::iter(parts.into_iter().map(Ok::<_, std::io::Error>)))
        }
        Hostile::Redirect => HttpResponse::build(StatusCode::FOUND)
            .insert_header(("Location", "http://evil.example/"))
            .finish(),
        Hostile::Drip => {
            let body = Bytes::from(
                GpcError::internal("hostile sandbox: one byte per second")
                    .to_resource()
                    .to_string(),
            );
            let len = body.len() as u64;
            let drip = stream::unfold((body, 0usize), |(body, i)| async move {
                if i >= body.len() {
                    return None;
                }
                if i > 0 {
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                let byte = body.slice(i..i + 1);
                Some((Ok::<_, std::io::Error>(byte), (body, i + 1)))
            });
            HttpResponse::Ok()
                .content_type(FHIR_JSON)
                .no_chunking(len)
                .streaming(drip)
        }
    }
}

//! Transfer codings at the HTTP edge: which request `Content-Encoding`s the body
//! extractors decode (anything else is a 415, never read as plain), the body read
//! deadline, and response compression (gzip or br, by `Accept-Encoding`, above a
//! size threshold so small answers stay cheap).

use std::future::Future;
use std::io::Write as _;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use actix_web::body::{to_bytes, BoxBody, MessageBody};
use actix_web::dev::{Payload, ServiceRequest, ServiceResponse};
use actix_web::error::PayloadError;
use actix_web::http::header::{self, HeaderMap, HeaderValue};
use actix_web::rt::time::{sleep, Sleep};
use actix_web::web::Bytes;
use actix_web::HttpMessage as _;
use futures_util::Stream;

/// Request body codings the extractors decode (actix-web's `compress-gzip` and
/// `compress-brotli` features).
const DECODED: [&str; 5] = ["identity", "gzip", "x-gzip", "deflate", "br"];

/// Why the request's `Content-Encoding` cannot be accepted, if it cannot.
pub fn unsupported_content_encoding(headers: &HeaderMap) -> Option<String> {
    let codings: Vec<String> = headers
        .get_all(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or("\u{fffd}"))
        .flat_map(|v| v.split(','))
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect();
    match codings.as_slice() {
        [] => None,
        [one] if DECODED.contains(&one.as_str()) => None,
        [_] => Some(
            "Unsupported Content-Encoding: request bodies may be identity, gzip, deflate or br"
                .into(),
        ),
        _ => Some("Only one Content-Encoding may be applied to a request body".into()),
    }
}

/// Whether the request announces a body.
pub fn has_body(headers: &HeaderMap) -> bool {
    headers.contains_key(header::TRANSFER_ENCODING)
        || headers
            .get(header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
}

/// Replaces the request's payload with one that fails once `limit` has passed
/// since the request arrived; the returned flag says whether it did.
pub fn deadline_payload(req: &mut ServiceRequest, limit: Duration) -> Arc<AtomicBool> {
    let expired = Arc::new(AtomicBool::new(false));
    let inner = req.take_payload();
    let timed = DeadlinePayload {
        inner,
        deadline: Box::pin(sleep(limit)),
        expired: expired.clone(),
    };
    req.set_payload(Payload::from(
        Box::pin(timed) as Pin<Box<dyn Stream<Item = Result<Bytes, PayloadError>>>>
    ));
    expired
}

struct DeadlinePayload {
    inner: Payload,
    deadline: Pin<Box<Sleep>>,
    expired: Arc<AtomicBool>,
}

impl Stream for DeadlinePayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = &mut *self;
        if let Poll::Ready(item) = Pin::new(&mut this.inner).poll_next(cx) {
            return Poll::Ready(item);
        }
        if this.deadline.as_mut().poll(cx).is_ready() {
            this.expired.store(true, Ordering::Relaxed);
            return Poll::Ready(Some(Err(PayloadError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request body timeout",
            )))));
        }
        Poll::Pending
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Coding {
    Brotli,
    Gzip,
}

/// The response coding for an `Accept-Encoding` value: br preferred over gzip at
/// equal quality; `*` stands for both; `q=0` refuses.
pub fn choose_coding(accept: &str) -> Option<Coding> {
    let mut best: Option<(f32, u8, Coding)> = None;
    let mut consider = |q: f32, c: Coding| {
        let rank = if c == Coding::Brotli { 2 } else { 1 };
        if q > 0.0 && best.is_none_or(|(bq, br, _)| q > bq || (q == bq && rank > br)) {
            best = Some((q, rank, c));
        }
    };
    let mut explicit: Vec<&str> = Vec::new();
    let mut star: Option<f32> = None;
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let name = pieces.next().unwrap_or("").trim();
        let q = pieces
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f32>().ok())
            .unwrap_or(1.0);
        let name_lc = name.to_ascii_lowercase();
        match name_lc.as_str() {
            "br" => {
                explicit.push("br");
                consider(q, Coding::Brotli)
            }
            "gzip" | "x-gzip" => {
                explicit.push("gzip");
                consider(q, Coding::Gzip)
            }
            "*" => star = Some(q),
            _ => {}
        }
    }
    if let Some(q) = star {
        if !explicit.contains(&"br") {
            consider(q, Coding::Brotli);
        }
        if !explicit.contains(&"gzip") {
            consider(q, Coding::Gzip);
        }
    }
    best.map(|(_, _, c)| c)
}

fn encode(coding: Coding, data: &[u8]) -> std::io::Result<Vec<u8>> {
    match coding {
        Coding::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(
                Vec::with_capacity(data.len() / 4),
                flate2::Compression::fast(),
            );
            enc.write_all(data)?;
            enc.finish()
        }
        Coding::Brotli => {
            let mut out = Vec::with_capacity(data.len() / 4);
            {
                let mut enc = brotli::CompressorWriter::new(&mut out, 16 * 1024, 4, 22);
                enc.write_all(data)?;
                enc.flush()?;
            }
            Ok(out)
        }
    }
}

/// Compresses a complete response body of at least `min_bytes` when the client
/// accepts gzip or br. Streaming bodies, empty ones and already-encoded ones pass.
pub async fn compress(
    res: ServiceResponse<BoxBody>,
    accept: &str,
    min_bytes: usize,
) -> ServiceResponse<BoxBody> {
    let status = res.status();
    if status == actix_web::http::StatusCode::NO_CONTENT
        || status == actix_web::http::StatusCode::NOT_MODIFIED
        || res.headers().contains_key(header::CONTENT_ENCODING)
    {
        return res;
    }
    let size = match res.response().body().size() {
        actix_web::body::BodySize::Sized(n) => n as usize,
        _ => return res,
    };
    if size < min_bytes.max(1) {
        return res;
    }
    let Some(coding) = choose_coding(accept) else {
        return res;
    };
    let (req, response) = res.into_parts();
    let (mut head, body) = response.into_parts();
    let bytes = match to_bytes(body).await {
        Ok(b) => b,
        Err(_) => {
            let response = head.set_body(BoxBody::new(Bytes::new()));
            return ServiceResponse::new(req, response);
        }
    };
    // Compression is CPU work: off the async worker for large bodies.
    let encoded = if bytes.len() > 256 * 1024 {
        let input = bytes.clone();
        actix_web::rt::task::spawn_blocking(move || encode(coding, &input))
            .await
            .ok()
            .and_then(Result::ok)
    } else {
        encode(coding, &bytes).ok()
    };
    let headers = head.headers_mut();
    headers.append(header::VARY, HeaderValue::from_static("accept-encoding"));
    let body = match encoded {
        Some(enc) => {
            headers.insert(
                header::CONTENT_ENCODING,
                HeaderValue::from_static(match coding {
                    Coding::Brotli => "br",
                    Coding::Gzip => "gzip",
                }),
            );
            headers.remove(header::CONTENT_LENGTH);
            Bytes::from(enc)
        }
        None => bytes,
    };
    ServiceResponse::new(req, head.set_body(BoxBody::new(body)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codings_are_negotiated() {
        assert_eq!(choose_coding("gzip, deflate, br"), Some(Coding::Brotli));
        assert_eq!(choose_coding("gzip"), Some(Coding::Gzip));
        assert_eq!(choose_coding("br;q=0.5, gzip"), Some(Coding::Gzip));
        assert_eq!(choose_coding("br;q=0, gzip;q=0"), None);
        assert_eq!(choose_coding("identity"), None);
        assert_eq!(choose_coding("*"), Some(Coding::Brotli));
        assert_eq!(choose_coding("*;q=0.1, br;q=0"), Some(Coding::Gzip));
        assert_eq!(choose_coding(""), None);
    }

    #[test]
    fn only_decoded_request_codings_pass() {
        let mut h = HeaderMap::new();
        assert!(unsupported_content_encoding(&h).is_none());
        for ok in ["gzip", "identity", "br", "Deflate"] {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(ok));
            assert!(unsupported_content_encoding(&h).is_none(), "{ok}");
        }
        for bad in ["zstd", "compress", "garbage", "gzip, br"] {
            h.insert(header::CONTENT_ENCODING, HeaderValue::from_static(bad));
            assert!(unsupported_content_encoding(&h).is_some(), "{bad}");
        }
    }
}

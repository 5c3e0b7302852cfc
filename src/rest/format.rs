//! Wire formats and HTTP headers: content negotiation (`Accept`, `_format`,
//! `Content-Type`), body decoding (strict JSON or XML via fhirbolt), response
//! encoding (`_pretty`, XML), `Prefer`, and the version headers
//! (`ETag`, `If-Match`, `If-None-Match`, `If-Modified-Since`).

use actix_web::http::header::{self, HeaderMap};
use actix_web::HttpRequest;
use serde_json::Value;

use super::error::{ApiError, OoIssue};
use crate::model::VersionId;

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";
pub const FHIR_XML: &str = "application/fhir+xml; charset=utf-8";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Json,
    Xml,
}

/// How the response is to be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Output {
    pub format: Format,
    pub pretty: bool,
}

fn mime_format(mime: &str) -> Option<Format> {
    let essence = mime
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    match essence.as_str() {
        "json" | "application/json" | "application/fhir+json" | "application/json+fhir" => {
            Some(Format::Json)
        }
        "xml"
        | "text/xml"
        | "application/xml"
        | "application/fhir+xml"
        | "application/xml+fhir" => Some(Format::Xml),
        _ => None,
    }
}

/// First value of a query parameter (decoded), without parsing the rest.
pub fn query_param(req: &HttpRequest, name: &str) -> Option<String> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(req.query_string())
        .ok()?
        .into_iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v)
}

/// Picks the response format: `_format` wins over `Accept`; JSON by default.
pub fn negotiate(req: &HttpRequest) -> Result<Output, ApiError> {
    let pretty = query_param(req, "_pretty").as_deref() == Some("true");
    if let Some(f) = query_param(req, "_format") {
        return mime_format(&f)
            .map(|format| Output { format, pretty })
            .ok_or_else(|| ApiError::NotAcceptable(format!("Unsupported _format '{f}'")));
    }
    let Some(accept) = req
        .headers()
        .get(header::ACCEPT)
        .and_then(|v| v.to_str().ok())
    else {
        return Ok(Output {
            format: Format::Json,
            pretty,
        });
    };
    let mut best: Option<(f32, Format)> = None;
    for part in accept.split(',') {
        let mut pieces = part.split(';');
        let mime = pieces.next().unwrap_or("").trim().to_ascii_lowercase();
        let q = pieces
            .filter_map(|p| p.trim().strip_prefix("q="))
            .find_map(|q| q.parse::<f32>().ok())
            .unwrap_or(1.0);
        if q <= 0.0 {
            continue;
        }
        let format = match mime.as_str() {
            "*/*" | "application/*" | "" => Some(Format::Json),
            "text/*" => Some(Format::Xml),
            m => mime_format(m),
        };
        if let Some(f) = format {
            if best.map(|(bq, _)| q > bq).unwrap_or(true) {
                best = Some((q, f));
            }
        }
    }
    best.map(|(_, format)| Output { format, pretty })
        .ok_or_else(|| {
            ApiError::NotAcceptable(
                "None of the Accept media types is supported; use application/fhir+json or application/fhir+xml"
                    .into(),
            )
        })
}

/// Decodes a request body as a FHIR resource (JSON by default, XML by Content-Type).
pub fn decode_body(req: &HttpRequest, body: &[u8]) -> Result<Value, ApiError> {
    let content_type = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok());
    let format = match content_type {
        None => Format::Json,
        Some(ct) => {
            if let Some(charset) = ct
                .split(';')
                .skip(1)
                .filter_map(|p| p.trim().strip_prefix("charset="))
                .next()
            {
                if !charset.trim_matches('"').eq_ignore_ascii_case("utf-8") {
                    return Err(ApiError::UnsupportedMediaType(format!(
                        "Unsupported charset '{charset}'; bodies must be UTF-8"
                    )));
                }
            }
            mime_format(ct).ok_or_else(|| {
                ApiError::UnsupportedMediaType(format!(
                    "Unsupported Content-Type '{}'; use application/fhir+json or application/fhir+xml",
                    ct.split(';').next().unwrap_or(ct)
                ))
            })?
        }
    };
    if body.is_empty() {
        return Err(ApiError::bad_request(
            "required",
            "The request body is empty",
        ));
    }
    match format {
        Format::Json => fhir_structure::check::parse_json(body).map_err(|issue| {
            ApiError::BadRequest(vec![OoIssue {
                severity: "error",
                code: "structure",
                diagnostics: issue.message,
                expression: (!issue.expression.is_empty()).then_some(issue.expression),
                details: None,
            }])
        }),
        Format::Xml => {
            let text = std::str::from_utf8(body).map_err(|_| {
                ApiError::bad_request("structure", "The XML body is not valid UTF-8")
            })?;
            fhirbolt_shim::xml_to_json(text)
                .map_err(|e| ApiError::bad_request("structure", e.to_string()))
        }
    }
}

/// Serialises a resource for the response.
pub fn encode(value: &Value, out: Output) -> Result<(String, &'static str), ApiError> {
    match out.format {
        Format::Json => {
            let text = if out.pretty {
                serde_json::to_string_pretty(value)
            } else {
                serde_json::to_string(value)
            }
            .map_err(|e| ApiError::Internal(e.into()))?;
            Ok((text, FHIR_JSON))
        }
        Format::Xml => {
            let xml = fhirbolt_shim::json_to_xml(value)
                .map_err(|e| ApiError::Internal(anyhow::anyhow!("XML encoding failed: {e}")))?;
            Ok((xml, FHIR_XML))
        }
    }
}

/// Encodes stored JSON text, reusing it verbatim when no transformation is needed.
pub fn encode_stored(content: &str, out: Output) -> Result<(String, &'static str), ApiError> {
    if out.format == Format::Json && !out.pretty {
        return Ok((content.to_owned(), FHIR_JSON));
    }
    let value: Value = serde_json::from_str(content).map_err(|e| ApiError::Internal(e.into()))?;
    encode(&value, out)
}

/// `Prefer: return=…`.
pub use crate::service::ReturnPref;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Prefer {
    pub return_pref: ReturnPref,
    pub lenient: bool,
}

/// `Prefer` (RFC 7240). `return` and `handling` are understood; a bad value of
/// either, `respond-async` (not supported) and, under the default
/// `handling=strict`, any preference the server does not know are 400s rather
/// than silently ignored.
pub fn prefer(headers: &HeaderMap) -> Result<Prefer, ApiError> {
    let mut p = Prefer {
        return_pref: ReturnPref::Representation,
        lenient: false,
    };
    let mut unknown: Vec<String> = Vec::new();
    for value in headers.get_all("prefer") {
        let value = value.to_str().map_err(|_| {
            ApiError::bad_request("invalid", "The Prefer header is not valid ASCII")
        })?;
        for pref in value.split(',') {
            let main = pref.split(';').next().unwrap_or("").trim();
            if main.is_empty() {
                continue;
            }
            let (name, val) = match main.split_once('=') {
                Some((n, v)) => (n.trim(), v.trim().trim_matches('"')),
                None => (main, ""),
            };
            match name.to_ascii_lowercase().as_str() {
                "return" => {
                    p.return_pref = match val {
                        "minimal" => ReturnPref::Minimal,
                        "representation" => ReturnPref::Representation,
                        "OperationOutcome" => ReturnPref::OperationOutcome,
                        _ => {
                            return Err(ApiError::bad_request(
                                "invalid",
                                "Prefer: return must be minimal, representation or OperationOutcome",
                            ))
                        }
                    }
                }
                "handling" => {
                    p.lenient = match val {
                        "lenient" => true,
                        "strict" => false,
                        _ => {
                            return Err(ApiError::bad_request(
                                "invalid",
                                "Prefer: handling must be strict or lenient",
                            ))
                        }
                    }
                }
                "respond-async" => {
                    return Err(ApiError::bad_request(
                        "not-supported",
                        "Prefer: respond-async is not supported: this server answers every request synchronously",
                    ))
                }
                _ => unknown.push(name.to_owned()),
            }
        }
    }
    if !unknown.is_empty() && !p.lenient {
        return Err(ApiError::bad_request(
            "not-supported",
            format!(
                "Unsupported Prefer preference(s): {}; this server understands return= and handling= (add handling=lenient to have others ignored)",
                unknown.join(", ")
            ),
        ));
    }
    Ok(p)
}

pub fn etag(version: VersionId) -> String {
    format!("W/\"{version}\"")
}

/// Parses an entity tag holding a version: `W/"3"` or `"3"`.
pub use crate::model::parse_etag;

/// `If-Match`: None when absent; an error when present but not a version tag.
pub fn if_match(headers: &HeaderMap) -> Result<Option<VersionId>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(v) => {
            let text = v.to_str().unwrap_or("");
            parse_etag(text).map(Some).ok_or_else(|| {
                ApiError::bad_request("invalid", "If-Match must be a version ETag such as W/\"3\"")
            })
        }
    }
}

/// `If-None-Match` values on a read: does any of them name `version` (or `*`)?
pub fn if_none_match_hits(headers: &HeaderMap, version: VersionId) -> bool {
    headers
        .get_all(header::IF_NONE_MATCH)
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|tag| tag.trim() == "*" || parse_etag(tag) == Some(version))
}

/// `If-Modified-Since` as whole seconds since the epoch, if present and valid.
pub fn if_modified_since(headers: &HeaderMap) -> Option<i64> {
    let text = headers.get(header::IF_MODIFIED_SINCE)?.to_str().ok()?;
    let t = httpdate::parse_http_date(text).ok()?;
    let secs = t.duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    i64::try_from(secs).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    fn out(req: TestRequest) -> Result<Format, ApiError> {
        negotiate(&req.to_http_request()).map(|o| o.format)
    }

    #[test]
    fn negotiation_prefers_format_param_then_accept() {
        assert_eq!(out(TestRequest::default()).unwrap(), Format::Json);
        assert_eq!(
            out(TestRequest::default().insert_header(("Accept", "application/fhir+xml"))).unwrap(),
            Format::Xml
        );
        assert_eq!(
            out(TestRequest::default()
                .insert_header(("Accept", "text/html,application/xhtml+xml,*/*;q=0.8")))
            .unwrap(),
            Format::Json
        );
        assert_eq!(
            out(TestRequest::with_uri("/x?_format=xml")
                .insert_header(("Accept", "application/json")))
            .unwrap(),
            Format::Xml
        );
        assert_eq!(
            out(TestRequest::default().insert_header((
                "Accept",
                "application/fhir+json;q=0.5, application/fhir+xml"
            )))
            .unwrap(),
            Format::Xml
        );
        assert!(out(TestRequest::default().insert_header(("Accept", "text/plain"))).is_err());
        assert!(out(TestRequest::with_uri("/x?_format=html")).is_err());
    }

    #[test]
    fn etags_parse_weak_and_strong() {
        assert_eq!(parse_etag("W/\"3\""), Some(3));
        assert_eq!(parse_etag("\"12\""), Some(12));
        assert_eq!(parse_etag("3"), None);
        assert_eq!(parse_etag("W/\"0\""), None);
        assert_eq!(parse_etag("W/\"x\""), None);
    }

    #[test]
    fn prefer_header_is_parsed() {
        let req = TestRequest::default()
            .insert_header(("Prefer", "return=minimal, handling=lenient"))
            .to_http_request();
        let p = prefer(req.headers()).unwrap();
        assert_eq!(p.return_pref, ReturnPref::Minimal);
        assert!(p.lenient);
        for bad in [
            "return=everything",
            "handling=loose",
            "respond-async",
            "wait=10",
        ] {
            let req = TestRequest::default()
                .insert_header(("Prefer", bad))
                .to_http_request();
            assert!(prefer(req.headers()).is_err(), "{bad}");
        }
        let req = TestRequest::default()
            .insert_header(("Prefer", "wait=10; x=1, handling=lenient"))
            .to_http_request();
        assert!(prefer(req.headers()).unwrap().lenient);
    }
}

//! SMART on FHIR endpoints: discovery (`.well-known/smart-configuration`),
//! our Backend Services token endpoint and its JWKS.
//! (Placeholder while the token endpoint is built: each answers 501.)

use actix_web::HttpRequest;

use super::super::error::ApiError;
use super::{label, ApiResult};

pub async fn configuration(req: HttpRequest) -> ApiResult {
    label(&req, "smart-configuration", None);
    Err(ApiError::NotImplemented(
        "SMART discovery is not available yet".into(),
    ))
}

pub async fn token(req: HttpRequest, _body: actix_web::web::Bytes) -> ApiResult {
    label(&req, "token", None);
    Err(ApiError::NotImplemented(
        "The token endpoint is not available yet".into(),
    ))
}

pub async fn jwks(req: HttpRequest) -> ApiResult {
    label(&req, "jwks", None);
    Err(ApiError::NotImplemented(
        "The JWKS is not available yet".into(),
    ))
}

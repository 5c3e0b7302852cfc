//! The FHIR R4 upstream adapter: any R4 server (another fhirbridge, HAPI, a
//! supplier's R4 API) as the system of record for the configured types.
//! Plain R4 REST: `Patient?identifier=`, `[type]?patient=`, `Slot?status=free`
//! with `_include=Slot:schedule`, create, versioned update (`If-Match`), and
//! repeat requests as a conditional create on the request's identifier
//! (`If-None-Exist`), so a retried delivery never makes a second Task.
//! Only the first page of a search is read (`_count` = the page limit);
//! more is a 502 rather than a silently short answer.

use std::sync::Arc;

use async_trait::async_trait;
use serde_json::Value;

use super::adapter::{enc, Adapter, Upstream, UpstreamError, Window};
use super::config::{SupplierConfig, SupplierKind};
use super::gpconnect::{answer, expect, NHS_NUMBER};
use super::http::{Client, Request, Response};

const FHIR_JSON: &str = "application/fhir+json";
const PAGE: usize = 500;

pub struct FhirUpstream {
    cfg: Arc<SupplierConfig>,
    client: Client,
    token: Option<String>,
}

impl FhirUpstream {
    pub fn new(cfg: Arc<SupplierConfig>, client: Client, token: Option<String>) -> FhirUpstream {
        FhirUpstream { cfg, client, token }
    }

    async fn call(
        &self,
        method: &'static str,
        path: &str,
        body: Option<Value>,
        extra: &[(&str, String)],
    ) -> Upstream<(Response, Value)> {
        let mut headers = vec![("Accept".to_owned(), FHIR_JSON.to_owned())];
        if let Some(t) = &self.token {
            headers.push(("Authorization".to_owned(), format!("Bearer {t}")));
        }
        if body.is_some() {
            headers.push(("Content-Type".to_owned(), FHIR_JSON.to_owned()));
        }
        for (k, v) in extra {
            headers.push(((*k).to_owned(), v.clone()));
        }
        let req = Request {
            method,
            url: format!("{}/{}", self.cfg.base_url.trim_end_matches('/'), path),
            headers,
            body: body.map(|b| b.to_string().into_bytes()),
        };
        answer(self.client.send(req).await?)
    }

    async fn search(&self, query: &str) -> Upstream<Vec<Value>> {
        let (_, b) = self
            .call("GET", &format!("{query}&_count={PAGE}"), None, &[])
            .await?;
        expect(&b, "Bundle")?;
        let has_next = b.get("link").and_then(Value::as_array).is_some_and(|l| {
            l.iter()
                .any(|k| k.get("relation").and_then(Value::as_str) == Some("next"))
        });
        if has_next {
            return Err(UpstreamError::Bad(format!(
                "the upstream answered more than {PAGE} matches"
            )));
        }
        let mut out = Vec::new();
        for e in b
            .get("entry")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Some(r) = e.get("resource") {
                if r.get("resourceType").and_then(Value::as_str) != Some("OperationOutcome") {
                    out.push(r.clone());
                }
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl Adapter for FhirUpstream {
    fn kind(&self) -> SupplierKind {
        SupplierKind::Fhir
    }

    async fn find_patient(&self, nhs: &str) -> Upstream<Option<String>> {
        let found = self
            .search(&format!(
                "Patient?identifier={}",
                enc(&format!("{NHS_NUMBER}|{nhs}"))
            ))
            .await?;
        Ok(found
            .iter()
            .find(|p| p.get("resourceType").and_then(Value::as_str) == Some("Patient"))
            .and_then(|p| p.get("id").and_then(Value::as_str))
            .map(str::to_owned))
    }

    async fn record(&self, _nhs: &str, remote_patient: &str) -> Upstream<Vec<Value>> {
        let p = enc(remote_patient);
        let mut out = self
            .search(&format!(
                "MedicationRequest?patient={p}&_include=MedicationRequest:medication"
            ))
            .await?;
        out.extend(
            self.search(&format!("MedicationStatement?patient={p}"))
                .await?,
        );
        out.extend(
            self.search(&format!("AllergyIntolerance?patient={p}"))
                .await?,
        );
        Ok(out)
    }

    async fn appointments(&self, remote_patient: &str, w: &Window) -> Upstream<Vec<Value>> {
        self.search(&format!(
            "Appointment?patient={}&date=ge{}&date=le{}",
            enc(remote_patient),
            enc(&w.from),
            enc(&w.to)
        ))
        .await
    }

    async fn read(&self, ty: &str, id: &str) -> Upstream<Option<Value>> {
        match self
            .call("GET", &format!("{ty}/{}", enc(id)), None, &[])
            .await
        {
            Ok((_, v)) => {
                expect(&v, ty)?;
                Ok(Some(v))
            }
            Err(UpstreamError::Refused {
                status: 404 | 410, ..
            }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    async fn free_slots(&self, w: &Window) -> Upstream<Vec<Value>> {
        self.search(&format!(
            "Slot?status=free&start=ge{}&start=le{}&_include=Slot:schedule&_include:iterate=Schedule:actor",
            enc(&w.from),
            enc(&w.to)
        ))
        .await
    }

    async fn book(&self, appointment: Value) -> Upstream<Value> {
        let (_, v) = self
            .call(
                "POST",
                "Appointment",
                Some(appointment),
                &[("Prefer", "return=representation".into())],
            )
            .await?;
        expect(&v, "Appointment")?;
        Ok(v)
    }

    async fn update_appointment(
        &self,
        id: &str,
        version: &str,
        mut appointment: Value,
        _cancel: bool,
    ) -> Upstream<Value> {
        appointment["id"] = Value::String(id.to_owned());
        let (_, v) = self
            .call(
                "PUT",
                &format!("Appointment/{}", enc(id)),
                Some(appointment),
                &[
                    ("If-Match", format!("W/\"{version}\"")),
                    ("Prefer", "return=representation".into()),
                ],
            )
            .await?;
        expect(&v, "Appointment")?;
        Ok(v)
    }

    async fn request_repeat(&self, task: Value) -> Upstream<Value> {
        let key = task
            .pointer("/identifier/0")
            .and_then(|i| {
                Some(format!(
                    "{}|{}",
                    i.get("system")?.as_str()?,
                    i.get("value")?.as_str()?
                ))
            })
            .ok_or_else(|| {
                UpstreamError::Bad("a repeat request without its idempotency key".into())
            })?;
        let (_, v) = self
            .call(
                "POST",
                "Task",
                Some(task),
                &[
                    ("If-None-Exist", format!("identifier={}", enc(&key))),
                    ("Prefer", "return=representation".into()),
                ],
            )
            .await?;
        expect(&v, "Task")?;
        Ok(v)
    }

    async fn ping(&self) -> Upstream<()> {
        let (_, v) = self.call("GET", "metadata", None, &[]).await?;
        expect(&v, "CapabilityStatement")
    }
}

//! `fhirbridge import PATH...`: loads transaction/batch/collection Bundles and
//! NDJSON files (or folders of them) straight into storage through the same
//! bundle machinery as `POST /fhir`, with a progress line and a summary.
//!
//! - transaction and batch Bundles are processed as sent;
//! - collection/searchset Bundles and NDJSON are cut into transactions of
//!   `chunk` resources (`PUT Type/id` when the resource has an id, else POST);
//!   a chunk that fails is retried entry by entry as a batch, so one bad
//!   resource costs only itself and is reported with its reason.

use std::io::{BufRead, IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use futures_util::StreamExt;
use serde_json::{json, Value};

use crate::config::Settings;
use crate::context::RequestContext;
use crate::service::transaction::BundleOutcome;
use crate::service::{ReturnPref, Service, ServiceError};

/// What one import run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub files: usize,
    pub resources: usize,
    pub failed: usize,
    pub failures: Vec<String>,
    pub seconds: f64,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        if self.seconds > 0.0 {
            self.resources as f64 / self.seconds
        } else {
            0.0
        }
    }
}

/// Every importable file under `paths` (folders recursively, sorted).
pub fn collect_files(paths: &[PathBuf]) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut children: Vec<PathBuf> = std::fs::read_dir(p)?
                .filter_map(Result::ok)
                .map(|e| e.path())
                .collect();
            children.sort();
            for c in children {
                if c.is_dir() {
                    out.extend(collect_files(&[c])?);
                } else if is_importable(&c) {
                    out.push(c);
                }
            }
        } else {
            out.push(p.clone());
        }
    }
    Ok(out)
}

fn is_importable(p: &Path) -> bool {
    matches!(
        p.extension().and_then(|e| e.to_str()),
        Some("json" | "ndjson")
    ) && p.file_name().and_then(|n| n.to_str()) != Some("manifest.json")
}

/// A unit of work: a Bundle to post, and where it came from (for messages).
struct Work {
    origin: String,
    bundle: Value,
    resources: usize,
    /// Retry entry by entry when the whole transaction fails.
    split_on_failure: bool,
}

fn entry_for(resource: Value) -> Value {
    let ty = resource
        .get("resourceType")
        .and_then(Value::as_str)
        .unwrap_or("")
        .to_owned();
    match resource.get("id").and_then(Value::as_str) {
        Some(id) => {
            let url = format!("{ty}/{id}");
            json!({"fullUrl": url, "resource": resource, "request": {"method": "PUT", "url": url}})
        }
        None => json!({"resource": resource, "request": {"method": "POST", "url": ty}}),
    }
}

fn chunks(origin: &str, resources: Vec<Value>, chunk: usize) -> Vec<Work> {
    resources
        .chunks(chunk.max(1))
        .enumerate()
        .map(|(i, c)| Work {
            origin: format!(
                "{origin} (resources {}..{})",
                i * chunk,
                i * chunk + c.len()
            ),
            resources: c.len(),
            bundle: json!({
                "resourceType": "Bundle",
                "type": "transaction",
                "entry": c.iter().cloned().map(entry_for).collect::<Vec<_>>(),
            }),
            split_on_failure: true,
        })
        .collect()
}

/// Reads one file into units of work; errors are reported, not fatal.
fn read_file(path: &Path, chunk: usize) -> Result<Vec<Work>, String> {
    let origin = path.display().to_string();
    if path.extension().and_then(|e| e.to_str()) == Some("ndjson") {
        let f = std::fs::File::open(path).map_err(|e| format!("{origin}: {e}"))?;
        let mut resources = Vec::new();
        for (n, line) in std::io::BufReader::new(f).lines().enumerate() {
            let line = line.map_err(|e| format!("{origin}: {e}"))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: Value = serde_json::from_str(&line)
                .map_err(|e| format!("{origin}:{}: not JSON: {e}", n + 1))?;
            resources.push(v);
        }
        return Ok(chunks(&origin, resources, chunk));
    }
    let bytes = std::fs::read(path).map_err(|e| format!("{origin}: {e}"))?;
    let v: Value =
        serde_json::from_slice(&bytes).map_err(|e| format!("{origin}: not JSON: {e}"))?;
    match (
        v.get("resourceType").and_then(Value::as_str),
        v.get("type").and_then(Value::as_str),
    ) {
        (Some("Bundle"), Some("transaction" | "batch")) => {
            let resources = v
                .get("entry")
                .and_then(Value::as_array)
                .map(Vec::len)
                .unwrap_or(0);
            Ok(vec![Work {
                origin,
                bundle: v,
                resources,
                split_on_failure: false,
            }])
        }
        (Some("Bundle"), _) => {
            let resources: Vec<Value> = v
                .get("entry")
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|e| e.get("resource").cloned())
                        .collect()
                })
                .unwrap_or_default();
            Ok(chunks(&origin, resources, chunk))
        }
        (Some(_), _) => Ok(chunks(&origin, vec![v], chunk)),
        (None, _) => Err(format!("{origin}: not a FHIR resource (no resourceType)")),
    }
}

fn entry_failures(origin: &str, outcome: &BundleOutcome) -> Vec<String> {
    match outcome {
        BundleOutcome::Transaction(_) => Vec::new(),
        BundleOutcome::Batch(results) => results
            .iter()
            .enumerate()
            .filter_map(|(i, r)| {
                r.as_ref()
                    .err()
                    .map(|e| format!("{origin} entry {i}: {}", describe(e)))
            })
            .collect(),
    }
}

async fn run_work(
    service: &Arc<Service>,
    ctx: &RequestContext,
    base: &str,
    w: Work,
) -> (usize, Vec<String>) {
    let is_batch = w.bundle.get("type").and_then(Value::as_str) == Some("batch");
    let (bundle, retry) = if w.split_on_failure {
        (w.bundle.clone(), Some(w.bundle))
    } else {
        (w.bundle, None)
    };
    match service.bundle(ctx, base, bundle, ReturnPref::Minimal).await {
        Ok(resp) if is_batch => {
            let failures = entry_failures(&w.origin, &resp);
            (w.resources - failures.len(), failures)
        }
        Ok(_) => (w.resources, Vec::new()),
        Err(_) if retry.is_some() => {
            let mut b = retry.unwrap_or_default();
            b["type"] = json!("batch");
            match service.bundle(ctx, base, b, ReturnPref::Minimal).await {
                Ok(resp) => {
                    let failures = entry_failures(&w.origin, &resp);
                    (w.resources - failures.len(), failures)
                }
                Err(e) => (0, vec![format!("{}: {}", w.origin, describe(&e))]),
            }
        }
        Err(e) => (0, vec![format!("{}: {}", w.origin, describe(&e))]),
    }
}

fn describe(e: &ServiceError) -> String {
    if let ServiceError::Internal(cause) = e {
        // Over HTTP the middleware logs the cause; here the operator is the client.
        tracing::error!(error = format!("{cause:#}"), "import: internal error");
    }
    let issues: Vec<String> = e
        .issues()
        .iter()
        .filter(|i| i.severity == "error" || i.severity == "fatal")
        .take(5)
        .map(|i| match &i.expression {
            Some(x) => format!("{} ({x})", i.diagnostics),
            None => i.diagnostics.clone(),
        })
        .collect();
    format!("{}: {}", e.http_status(), issues.join("; "))
}

/// How often the progress line is printed when stderr is not a terminal.
const PLAIN_PROGRESS_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// Imports `files` into the store configured by `settings`.
pub async fn import(
    settings: Settings,
    files: Vec<PathBuf>,
    chunk: usize,
    progress: bool,
) -> anyhow::Result<Summary> {
    let backend = crate::open_backend(&settings)?;
    let validation = Arc::new(crate::validation::ValidationService::from_settings(
        &settings.validation,
    )?);
    let base = settings.server.offline_base();
    let service = Arc::new(Service::new(backend, validation, Arc::new(settings)));
    let ctx = RequestContext::system("import", Arc::new(crate::policy::AllowAll));
    let started = Instant::now();
    let mut summary = Summary::default();
    let total_files = files.len();
    summary.files = total_files;
    // Two units in flight: one prepares (parse, checks, index extraction) while
    // the other writes, so both cores work.
    let mut read_errors = Vec::new();
    let works = files.iter().enumerate().flat_map(|(n, path)| {
        let items: Vec<(usize, Work)> = match read_file(path, chunk) {
            Ok(w) => w.into_iter().map(|w| (n, w)).collect(),
            Err(e) => {
                read_errors.push(e);
                Vec::new()
            }
        };
        items
    });
    let service_ref = &service;
    let ctx_ref = &ctx;
    let base_ref = base.as_str();
    let mut results = futures_util::stream::iter(works.map(|(n, w)| async move {
        let count = w.resources;
        let (ok, failures) = run_work(service_ref, ctx_ref, base_ref, w).await;
        (n, count, ok, failures)
    }))
    .buffer_unordered(2);
    let mut files_done = 0;
    // A redrawn bar on a terminal; elsewhere (a log file, a pipe) a plain line
    // every few seconds, so a log does not get one endless line of redraws.
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    while let Some((n, count, ok, failures)) = results.next().await {
        summary.resources += ok;
        summary.failed += count - ok.min(count);
        summary.failures.extend(failures);
        files_done = files_done.max(n + 1);
        if progress {
            let secs = started.elapsed().as_secs_f64();
            let rate = summary.resources as f64 / secs.max(1e-9);
            if tty {
                let width = 30;
                let done = files_done * width / total_files.max(1);
                eprint!(
                    "\r[{}{}] {}/{} files, {} resources, {} failed, {:.0} resources/s   ",
                    "#".repeat(done),
                    " ".repeat(width - done),
                    files_done,
                    total_files,
                    summary.resources,
                    summary.failed,
                    rate
                );
                let _ = std::io::stderr().flush();
            } else if last_line.elapsed() >= PLAIN_PROGRESS_EVERY {
                last_line = Instant::now();
                eprintln!(
                    "import: {}/{} files, {} resources, {} failed, {:.0} resources/s",
                    files_done, total_files, summary.resources, summary.failed, rate
                );
            }
        }
    }
    drop(results);
    summary.failed += read_errors.len();
    summary.failures.extend(read_errors);
    if progress && tty {
        eprintln!();
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn collection_resources_become_put_or_post_entries() {
        let w = chunks(
            "x",
            vec![
                json!({"resourceType": "Patient", "id": "p1"}),
                json!({"resourceType": "Patient"}),
                json!({"resourceType": "Observation", "id": "o1"}),
            ],
            2,
        );
        assert_eq!(w.len(), 2);
        assert_eq!(w[0].bundle["entry"][0]["request"]["method"], "PUT");
        assert_eq!(w[0].bundle["entry"][0]["request"]["url"], "Patient/p1");
        assert_eq!(w[0].bundle["entry"][1]["request"]["method"], "POST");
        assert_eq!(w[1].resources, 1);
    }
}

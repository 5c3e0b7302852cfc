//! `fhirbridge reindex`: rebuilds the search index of stored resources from
//! their content, with the current SearchParameter definitions. Needed after an
//! upgrade that changes what is indexed; safe while the server runs (each batch
//! is one write transaction). Resumable: the cursor is committed with each
//! batch, so a run that is interrupted continues where it stopped.

use std::io::{IsTerminal as _, Write as _};
use std::sync::Arc;
use std::time::Instant;

use crate::config::Settings;
use crate::model::ResourceType;
use crate::storage::{Extractor, ResourceKey};

/// What a run did.
#[derive(Debug, Default)]
pub struct Summary {
    pub resources: u64,
    pub seconds: f64,
    /// Where an earlier, interrupted run had stopped (this run went on from there).
    pub resumed_after: Option<String>,
}

impl Summary {
    pub fn rate(&self) -> f64 {
        self.resources as f64 / self.seconds.max(1e-9)
    }
}

/// The cursor's name: one per set of types, so runs over different sets do
/// not resume each other.
pub fn job_name(types: &[ResourceType]) -> String {
    if types.is_empty() {
        return "reindex".to_owned();
    }
    let mut names: Vec<&str> = types.iter().map(|t| t.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    format!("reindex:{}", names.join(","))
}

/// Reindexes the current resources of `types` (all when empty), `batch` per
/// transaction. `restart` ignores an earlier run's cursor.
pub async fn reindex(
    settings: &Settings,
    types: &[ResourceType],
    batch: usize,
    restart: bool,
    progress: bool,
) -> anyhow::Result<Summary> {
    let backend = crate::open_backend(settings)?;
    let store = backend
        .reindex()
        .ok_or_else(|| anyhow::anyhow!("this storage backend cannot reindex"))?;
    let base = settings.server.offline_base();
    let extract: Extractor = Arc::new(move |ty, v| crate::search::index::extract(ty, v, &base));
    let job = job_name(types);
    let mut summary = Summary::default();
    if restart {
        store.reindex_clear(&job).await?;
    }
    let mut after: Option<ResourceKey> = store.reindex_cursor(&job).await?;
    if let Some((ty, id)) = &after {
        summary.resumed_after = Some(format!("{ty}/{id}"));
    }
    let total = store.reindex_total(types).await?;
    let started = Instant::now();
    // A redrawn line on a terminal; elsewhere a plain line every few seconds.
    let tty = std::io::stderr().is_terminal();
    let mut last_line = Instant::now();
    loop {
        let step = store
            .reindex_batch(&job, types, after.clone(), batch, extract.clone())
            .await?;
        if step.last.is_none() {
            break;
        }
        summary.resources += step.done as u64;
        after = step.last;
        if progress {
            let secs = started.elapsed().as_secs_f64();
            let rate = summary.resources as f64 / secs.max(1e-9);
            if tty {
                eprint!(
                    "\r{} of {} resources reindexed, {rate:.0} resources/s   ",
                    summary.resources, total
                );
                let _ = std::io::stderr().flush();
            } else if last_line.elapsed() >= std::time::Duration::from_secs(5) {
                last_line = Instant::now();
                eprintln!(
                    "reindex: {} of {} resources, {rate:.0} resources/s",
                    summary.resources, total
                );
            }
        }
    }
    store.reindex_clear(&job).await?;
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
    fn job_names_depend_on_the_type_set_only() {
        assert_eq!(job_name(&[]), "reindex");
        assert_eq!(
            job_name(&[ResourceType::Patient, ResourceType::Consent]),
            job_name(&[ResourceType::Consent, ResourceType::Patient])
        );
        assert_eq!(job_name(&[ResourceType::Patient]), "reindex:Patient");
    }
}

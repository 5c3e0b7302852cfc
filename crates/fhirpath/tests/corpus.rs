//! Real-world corpus check: every invariant (`constraint.expression`) of the
//! R4 StructureDefinitions and every SearchParameter expression in
//! `$FHIRPATH_R4_PACKAGE_DIR` must parse, and, when `$FHIRPATH_SYNTHEA_DIR`
//! is set, must evaluate without error on every resource (and every typed
//! element for element-level invariants) of the Synthea bundles there.

use fhirpath::{evaluate, evaluate_node, parse, EvalContext, Expr, Value};
use serde_json::Value as Json;
use std::collections::BTreeMap;
use std::path::Path;

struct Invariant {
    key: String,
    path: String,
    expr: Expr,
}

fn load_dir(dir: &Path, prefix: &str) -> Vec<Json> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map(|rd| rd.filter_map(|e| e.ok()).map(|e| e.path()).collect())
        .unwrap_or_default();
    entries.sort();
    for p in entries {
        let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(prefix) && name.ends_with(".json") {
            if let Ok(t) = std::fs::read_to_string(&p) {
                if let Ok(j) = serde_json::from_str(&t) {
                    out.push(j);
                }
            }
        }
    }
    out
}

#[test]
fn r4_corpus() {
    let pkg = match std::env::var("FHIRPATH_R4_PACKAGE_DIR") {
        Ok(d) => d,
        Err(_) => {
            println!("skipping: FHIRPATH_R4_PACKAGE_DIR not set");
            return;
        }
    };
    let pkg = Path::new(&pkg);
    let mut parse_failures = Vec::new();
    // invariants by element path
    let mut invariants: Vec<Invariant> = Vec::new();
    let mut seen = std::collections::HashSet::new();
    for sd in load_dir(pkg, "StructureDefinition-") {
        let elems = sd
            .pointer("/snapshot/element")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        for el in elems {
            let path = el
                .get("path")
                .and_then(|p| p.as_str())
                .unwrap_or("")
                .to_string();
            for c in el
                .get("constraint")
                .and_then(|c| c.as_array())
                .cloned()
                .unwrap_or_default()
            {
                let key = c
                    .get("key")
                    .and_then(|k| k.as_str())
                    .unwrap_or("")
                    .to_string();
                let src = match c.get("expression").and_then(|e| e.as_str()) {
                    Some(s) => s.to_string(),
                    None => continue,
                };
                if !seen.insert((path.clone(), key.clone())) {
                    continue;
                }
                match parse(&src) {
                    Ok(expr) => invariants.push(Invariant {
                        key,
                        path: path.clone(),
                        expr,
                    }),
                    Err(e) => parse_failures.push(format!("{} {}: `{}` -> {}", path, key, src, e)),
                }
            }
        }
    }
    let mut search: Vec<(Vec<String>, String, Expr)> = Vec::new();
    for sp in load_dir(pkg, "SearchParameter-") {
        let code = sp
            .get("code")
            .and_then(|c| c.as_str())
            .unwrap_or("")
            .to_string();
        let bases: Vec<String> = sp
            .get("base")
            .and_then(|b| b.as_array())
            .map(|a| {
                a.iter()
                    .filter_map(|x| x.as_str().map(String::from))
                    .collect()
            })
            .unwrap_or_default();
        if let Some(src) = sp.get("expression").and_then(|e| e.as_str()) {
            match parse(src) {
                Ok(e) => search.push((bases, code, e)),
                Err(e) => {
                    parse_failures.push(format!("SearchParameter {}: `{}` -> {}", code, src, e))
                }
            }
        }
    }
    println!(
        "parsed {} invariants and {} search parameter expressions; {} parse failures",
        invariants.len(),
        search.len(),
        parse_failures.len()
    );
    for f in &parse_failures {
        println!("  PARSE {}", f);
    }
    assert!(
        parse_failures.is_empty(),
        "some corpus expressions failed to parse"
    );

    let synthea = match std::env::var("FHIRPATH_SYNTHEA_DIR") {
        Ok(d) => d,
        Err(_) => return,
    };
    let limit: usize = std::env::var("FHIRPATH_SYNTHEA_FILES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5);
    let mut by_type: BTreeMap<&str, Vec<&Invariant>> = BTreeMap::new();
    for inv in &invariants {
        by_type.entry(inv.path.as_str()).or_default().push(inv);
    }
    let mut errors: BTreeMap<String, usize> = BTreeMap::new();
    let mut falses: BTreeMap<String, usize> = BTreeMap::new();
    let mut evals = 0usize;
    let mut sp_hits: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let start = std::time::Instant::now();
    let desc = parse("descendants()").expect("parses");
    for bundle in load_dir(Path::new(&synthea), "").into_iter().take(limit) {
        let entries = bundle
            .get("entry")
            .and_then(|e| e.as_array())
            .cloned()
            .unwrap_or_default();
        for e in &entries {
            let res = match e.get("resource") {
                Some(r) => r,
                None => continue,
            };
            let rt = res
                .get("resourceType")
                .and_then(|t| t.as_str())
                .unwrap_or("");
            let ctx = EvalContext::new().bundle(&bundle);
            // resource-level invariants (path == type, and inherited Resource/DomainResource)
            for p in [rt, "DomainResource", "Resource"] {
                for inv in by_type.get(p).into_iter().flatten() {
                    evals += 1;
                    match fhirpath::evaluate_to_bool(&inv.expr, res, &ctx) {
                        Ok(Some(false)) => {
                            *falses
                                .entry(format!("{} {} on {}", inv.path, inv.key, rt))
                                .or_default() += 1
                        }
                        Ok(_) => {}
                        Err(err) => {
                            *errors
                                .entry(format!(
                                    "{} {}: {} -> {}",
                                    inv.path,
                                    inv.key,
                                    inv.expr.source(),
                                    err
                                ))
                                .or_default() += 1
                        }
                    }
                }
            }
            // element-level invariants on every typed descendant
            let nodes = evaluate(&desc, res, &ctx).expect("descendants");
            for n in &nodes {
                let node = match n {
                    Value::Node(nr) => nr,
                    _ => continue,
                };
                let (json, t) = match (node.json(), node.fhir_type()) {
                    (Some(j), t) if !t.is_empty() => (j, t),
                    _ => continue,
                };
                let mut ts = vec![t];
                if t != "Element" {
                    ts.push("Element");
                }
                for ty in ts {
                    for inv in by_type.get(ty).into_iter().flatten() {
                        evals += 1;
                        let ctx = EvalContext::new().resource(res).bundle(&bundle);
                        match evaluate_node(&inv.expr, json, t, &ctx) {
                            Ok(r) => {
                                if let Ok(Some(false)) = fhirpath::collection_to_bool(&r) {
                                    *falses
                                        .entry(format!("{} {} on {}", inv.path, inv.key, rt))
                                        .or_default() += 1;
                                }
                            }
                            Err(err) => {
                                *errors
                                    .entry(format!(
                                        "{} {}: {} -> {}",
                                        inv.path,
                                        inv.key,
                                        inv.expr.source(),
                                        err
                                    ))
                                    .or_default() += 1
                            }
                        }
                    }
                }
            }
            for (bases, code, expr) in &search {
                if bases
                    .iter()
                    .any(|b| b == rt || b == "Resource" || b == "DomainResource")
                {
                    evals += 1;
                    let hit = sp_hits
                        .entry(format!("{} {} ({})", rt, code, expr.source()))
                        .or_default();
                    hit.0 += 1;
                    match evaluate(expr, res, &ctx) {
                        Ok(r) => hit.1 += usize::from(!r.is_empty()),
                        Err(err) => {
                            *errors
                                .entry(format!("search {}: {} -> {}", code, expr.source(), err))
                                .or_default() += 1;
                        }
                    }
                }
            }
        }
    }
    println!("{} evaluations in {:?}", evals, start.elapsed());
    println!("invariants evaluating to false ({}):", falses.len());
    for (k, n) in &falses {
        println!("  {} x{}", k, n);
    }
    println!("search parameters by resource type (evaluated / non-empty):");
    for (k, (n, hits)) in &sp_hits {
        println!("  {:>6} {:>6}  {}", n, hits, k);
    }
    println!("errors ({}):", errors.len());
    for (k, n) in &errors {
        println!("  {} x{}", k, n);
    }
    assert!(errors.is_empty(), "evaluation errors on the corpus");
}

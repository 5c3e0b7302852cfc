//! References inside a transaction: the `fullUrl` → `Type/id` map, rewriting
//! `urn:uuid:` and conditional references wherever they occur (narrative
//! included), and the pre-transaction index extraction on two threads.

use std::collections::HashMap;

use serde_json::Value;

use super::entry::{Entry, Op, Target};

/// `fullUrl` → `Type/id` for everything whose id is known before the
/// transaction (pre-assigned create ids, PUT by id).
pub(super) fn premap(entries: &[Entry]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for e in entries {
        let Some(fu) = &e.full_url else { continue };
        match &e.op {
            Op::Create { ty, id, .. }
            | Op::Update {
                ty,
                target: Target::Id(id),
                ..
            } => {
                map.insert(fu.clone(), format!("{ty}/{id}"));
            }
            _ => {}
        }
    }
    map
}

/// Rewrites with the pre-transaction map and extracts index rows, on two
/// threads (this is the CPU-heavy part of a large transaction).
pub(super) fn pre_extract(entries: &mut [Entry], base: &str) {
    let map = premap(entries);
    let work = |chunk: &mut [Entry]| {
        for e in chunk {
            if let Op::Create { ty, resource, .. } | Op::Update { ty, resource, .. } = &mut e.op {
                if !map.is_empty() {
                    rewrite(resource, &map, false);
                }
                e.indexes = Some(crate::service::write::extract(*ty, resource, base));
            }
        }
    };
    if entries.len() < 64 {
        work(entries);
        return;
    }
    let mid = entries.len() / 2;
    let (a, b) = entries.split_at_mut(mid);
    std::thread::scope(|s| {
        s.spawn(|| work(a));
        work(b);
    });
}

/// Rewrites every string in `v` equal to a key of `map` (and occurrences inside
/// narrative XHTML). Returns how many were rewritten.
pub(super) fn rewrite(v: &mut Value, map: &HashMap<String, String>, in_div: bool) {
    match v {
        Value::String(s) => {
            if let Some(to) = map.get(s.as_str()) {
                *s = to.clone();
            } else if in_div {
                for (from, to) in map {
                    if s.contains(from.as_str()) {
                        *s = s.replace(from.as_str(), to);
                    }
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                rewrite(i, map, false);
            }
        }
        Value::Object(obj) => {
            for (k, child) in obj.iter_mut() {
                rewrite(child, map, k == "div");
            }
        }
        _ => {}
    }
}

/// Conditional references (`Type?criteria`) in `v`, collected once.
pub(super) fn conditional_refs(v: &Value, out: &mut Vec<String>) {
    match v {
        Value::Object(obj) => {
            for (k, child) in obj {
                if k == "reference" {
                    if let Some(s) = child.as_str() {
                        if s.contains('?') && !s.starts_with("urn:") {
                            out.push(s.to_owned());
                        }
                    }
                } else {
                    conditional_refs(child, out);
                }
            }
        }
        Value::Array(items) => {
            for i in items {
                conditional_refs(i, out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn rewrites_references_everywhere() {
        let mut map = HashMap::new();
        map.insert("urn:uuid:1".to_owned(), "Patient/abc".to_owned());
        let mut v = json!({
            "subject": {"reference": "urn:uuid:1"},
            "extension": [{"url": "x", "valueReference": {"reference": "urn:uuid:1"}}],
            "text": {"div": "<div xmlns=\"http://www.w3.org/1999/xhtml\"><a href=\"urn:uuid:1\">p</a></div>"},
            "note": [{"text": "urn:uuid:1 is not rewritten inside free text"}]
        });
        rewrite(&mut v, &map, false);
        assert_eq!(v["subject"]["reference"], "Patient/abc");
        assert_eq!(
            v["extension"][0]["valueReference"]["reference"],
            "Patient/abc"
        );
        assert!(v["text"]["div"].as_str().unwrap().contains("Patient/abc"));
        assert!(v["note"][0]["text"]
            .as_str()
            .unwrap()
            .starts_with("urn:uuid:1"));
    }
}

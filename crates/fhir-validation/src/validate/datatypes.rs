//! Checks tied to one datatype: NHS numbers in Identifiers (system
//! spelling and Modulus 11), `Attachment.size` against its data, and what
//! looks like embedded HTML in markdown.

use serde_json::Value;

use super::location::P;
use super::Run;
use crate::nhs::{nhs_number_valid, NHS_NUMBER_SYSTEM};
use crate::Severity;

impl<'r> Run<'r> {
    /// `Attachment.size` must be the size of the (base64) `data`.
    pub(super) fn attachment_size(&mut self, v: Option<&Value>, path: &P<'_>) {
        let Some(v) = v else { return };
        let (Some(Value::String(data)), Some(size)) = (v.get("data"), v.get("size")) else {
            return;
        };
        let Some(stated) = size
            .as_u64()
            .or_else(|| size.as_str().and_then(|s| s.parse().ok()))
        else {
            return;
        };
        let chars = data.bytes().filter(|b| !b.is_ascii_whitespace()).count() as u64;
        let pad = data
            .trim_end()
            .bytes()
            .rev()
            .take_while(|b| *b == b'=')
            .count() as u64;
        let actual = (chars / 4 * 3).saturating_sub(pad);
        if chars.is_multiple_of(4) && actual != stated {
            self.push_at(Severity::Error, "structure", &P::child(path, "size", None), || {
                format!("Stated Attachment size {stated} does not match the size of the data ({actual})")
            });
        }
    }

    pub(super) fn nhs_number(&mut self, v: Option<&Value>, path: &P<'_>) {
        let Some(v) = v else { return };
        let system = v.get("system").and_then(Value::as_str);
        if let Some(s) = system.filter(|s| *s != NHS_NUMBER_SYSTEM && near_nhs_system(s)) {
            self.push(
                Severity::Error,
                "value",
                &P::child(path, "system", None),
                format!(
                    "Slice 'nhsNumber': system must be {NHS_NUMBER_SYSTEM} (found '{s}', which is not exactly the NHS number system)"
                ),
            );
            return;
        }
        if system != Some(NHS_NUMBER_SYSTEM) {
            return;
        }
        match v.get("value").and_then(Value::as_str) {
            Some(n) if nhs_number_valid(n) => {}
            Some(n) => self.push(
                self.opts.nhs_number,
                "value",
                &P::child(path, "value", None),
                format!("NHS number fails the Modulus 11 check (must be 10 digits with a valid check digit): '{n}'"),
            ),
            None => {}
        }
    }
}

/// A misspelling of the NHS number system: other case, `http`, trailing slash or spaces.
fn near_nhs_system(s: &str) -> bool {
    let norm = |x: &str| {
        let x = x.trim().trim_end_matches('/').to_ascii_lowercase();
        x.strip_prefix("https://")
            .or_else(|| x.strip_prefix("http://"))
            .map(str::to_string)
            .unwrap_or(x)
    };
    norm(s) == norm(NHS_NUMBER_SYSTEM)
}

/// The byte offset of the first `<` that starts what looks like an HTML tag
/// (`<name`, `</name`).
pub(super) fn html_tag_start(s: &str) -> Option<usize> {
    s.match_indices('<').map(|(i, _)| i).find(|&i| {
        let rest = s.get(i + 1..).unwrap_or("");
        let rest = rest.strip_prefix('/').unwrap_or(rest);
        rest.starts_with(|c: char| c.is_ascii_alphabetic())
    })
}

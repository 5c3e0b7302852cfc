//! Native checks of narrative XHTML for the base invariants that FHIRPath
//! delegates to `htmlChecks()` (txt-1, txt-2), and of XML entity references.

/// The XML predefined entities.
const PREDEFINED: &[&str] = &["lt", "gt", "amp", "quot", "apos"];

/// The first entity reference `&name;` in `text` whose name is not an XML
/// predefined entity (character references `&#…;` are fine). Comments and
/// CDATA sections are skipped.
pub(crate) fn undeclared_entity(text: &str) -> Option<&str> {
    let mut rest = text;
    while let Some(i) = rest.find(['&', '<']) {
        let tail = rest.get(i..)?;
        if tail.starts_with("<!--") {
            rest = tail.find("-->").and_then(|e| tail.get(e + 3..))?;
            continue;
        }
        if tail.starts_with("<![CDATA[") {
            rest = tail.find("]]>").and_then(|e| tail.get(e + 3..))?;
            continue;
        }
        if tail.starts_with('<') {
            rest = tail.get(1..)?;
            continue;
        }
        let body = tail.get(1..)?;
        let end = body
            .find(|c: char| {
                !(c.is_ascii_alphanumeric() || c == '#' || c == '_' || c == '-' || c == '.')
            })
            .unwrap_or(body.len());
        let name = body.get(..end)?;
        if body.get(end..).is_some_and(|r| r.starts_with(';'))
            && !name.is_empty()
            && !name.starts_with('#')
            && !PREDEFINED.contains(&name)
        {
            return Some(name);
        }
        rest = body;
    }
    None
}

/// Whether a narrative `div` has some non-whitespace text or an image (txt-2).
pub(crate) fn has_content(div: &str) -> bool {
    if div.contains("<img") {
        return true;
    }
    let mut in_tag = false;
    let mut rest = div;
    while let Some(c) = rest.chars().next() {
        if !in_tag && rest.starts_with("<!--") {
            match rest.find("-->") {
                Some(e) => {
                    rest = rest.get(e + 3..).unwrap_or("");
                    continue;
                }
                None => return false,
            }
        }
        match c {
            '<' => in_tag = true,
            '>' if in_tag => in_tag = false,
            c if !in_tag && !c.is_whitespace() => return true,
            _ => {}
        }
        rest = rest.get(c.len_utf8()..).unwrap_or("");
    }
    false
}

/// The name and attributes of a start tag's text (between `<` and `>`).
fn parse_tag(inner: &str) -> (&str, Vec<(&str, &str)>) {
    let name_end = inner
        .find(|c: char| c.is_whitespace() || c == '/')
        .unwrap_or(inner.len());
    let name = inner.get(..name_end).unwrap_or("");
    let mut attrs = Vec::new();
    let mut a = inner.get(name_end..).unwrap_or("");
    while let Some(eq) = a.find('=') {
        let an = a
            .get(..eq)
            .unwrap_or("")
            .trim()
            .trim_start_matches('/')
            .trim();
        let after = a.get(eq + 1..).unwrap_or("").trim_start();
        let Some(q) = after.chars().next().filter(|c| *c == '"' || *c == '\'') else {
            break;
        };
        let body = after.get(1..).unwrap_or("");
        let close = body.find(q).unwrap_or(body.len());
        attrs.push((an, body.get(..close).unwrap_or("")));
        a = body.get(close + 1..).unwrap_or("");
    }
    (name, attrs)
}

/// The start tags of an XHTML fragment: (element name, attributes).
fn start_tags(div: &str) -> Vec<(&str, Vec<(&str, &str)>)> {
    let mut out = Vec::new();
    let mut rest = div;
    while let Some(i) = rest.find('<') {
        let Some(tail) = rest.get(i + 1..) else { break };
        if tail.starts_with("!--") {
            rest = match tail.find("-->").and_then(|e| tail.get(e + 3..)) {
                Some(r) => r,
                None => break,
            };
            continue;
        }
        if tail.starts_with(['/', '!', '?']) {
            rest = tail;
            continue;
        }
        let end = tail.find('>').unwrap_or(tail.len());
        let inner = tail.get(..end).unwrap_or("");
        rest = tail.get(end..).unwrap_or("");
        let (name, attrs) = parse_tag(inner);
        out.push((name, attrs));
    }
    out
}

/// The languages of the language sections of a narrative: the `div`
/// children of the root `div` with a `lang` or `xml:lang` attribute.
pub(crate) fn language_sections(div: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut rest = div;
    while let Some(i) = rest.find('<') {
        let Some(tail) = rest.get(i + 1..) else { break };
        let end = tail.find('>').unwrap_or(tail.len());
        let inner = tail.get(..end).unwrap_or("");
        rest = tail.get(end..).unwrap_or("");
        if inner.starts_with(['!', '?']) {
            continue;
        }
        if inner.starts_with('/') {
            depth = depth.saturating_sub(1);
            continue;
        }
        let self_closing = inner.ends_with('/');
        if depth == 1 {
            let (name, attrs) = parse_tag(inner);
            if name == "div" {
                if let Some((_, l)) = attrs
                    .into_iter()
                    .find(|(n, _)| matches!(*n, "lang" | "xml:lang"))
                {
                    out.push(l);
                }
            }
        }
        if !self_closing {
            depth += 1;
        }
    }
    out
}

/// Hyperlinks (`a/@href`) that use a scheme browsers cannot follow, or
/// local `#fragment`s that resolve neither to an `id`/`name` in the
/// narrative nor to a contained resource.
pub(crate) fn bad_links(div: &str, contained_ids: &[&str]) -> Vec<String> {
    let tags = start_tags(div);
    let anchors: Vec<&str> = tags
        .iter()
        .flat_map(|(_, attrs)| attrs.iter())
        .filter(|(n, _)| matches!(*n, "id" | "name"))
        .map(|(_, v)| *v)
        .collect();
    let mut out = Vec::new();
    for (name, attrs) in &tags {
        if *name != "a" {
            continue;
        }
        for (an, href) in attrs {
            if *an != "href" {
                continue;
            }
            let href = href.trim();
            if let Some(frag) = href.strip_prefix('#') {
                if !frag.is_empty() && !anchors.contains(&frag) && !contained_ids.contains(&frag) {
                    out.push(format!("Hyperlink '{href}' does not resolve"));
                }
                continue;
            }
            let scheme_end = href.find([':', '/', '?', '#']);
            if let Some(i) =
                scheme_end.filter(|i| href.get(*i..).is_some_and(|r| r.starts_with(':')))
            {
                let scheme = href.get(..i).unwrap_or("").to_ascii_lowercase();
                let ok = matches!(
                    scheme.as_str(),
                    "http"
                        | "https"
                        | "ftp"
                        | "ftps"
                        | "sftp"
                        | "mailto"
                        | "tel"
                        | "sms"
                        | "fax"
                        | "data"
                );
                if !ok && !scheme.is_empty() {
                    out.push(format!(
                        "Hyperlink scheme '{scheme}' in '{href}' is not a valid hyperlinkable scheme"
                    ));
                }
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entities_and_content() {
        assert_eq!(undeclared_entity("a &amp; b &#174; &reg; c"), Some("reg"));
        assert_eq!(
            undeclared_entity("a & b &lt; <!-- &reg; --> <![CDATA[&x;]]>"),
            None
        );
        assert!(!has_content("<div xmlns=\"x\">\n  <p></p>\n</div>"));
        assert!(has_content("<div><p> x </p></div>"));
        assert!(has_content("<div><img src=\"#a\"/></div>"));
        assert!(!has_content("<div><!-- x --></div>"));
        let div = "<div xmlns=\"x\"><a name=\"top\"/><p id='p1'>x</p><a href=\"#top\">t</a>\
                   <a href=\"#p1\">p</a><a href=\"#c1\">c</a><a href=\"#nowhere\">n</a>\
                   <a href=\"urn:uuid:1\">u</a><a href=\"https://x.org/a:b\">h</a><a href=\"Patient/1\">r</a></div>";
        let two = "<div xmlns=\"x\"><div xml:lang=\"de\" lang=\"de\">a<br/></div><div lang=\"en\"><div lang=\"fr\"/></div></div>";
        assert_eq!(language_sections(two), vec!["de", "en"]);
        assert!(language_sections("<div>text</div>").is_empty());
        let bad = bad_links(div, &["c1"]);
        assert_eq!(bad.len(), 2, "{bad:?}");
        assert!(bad[0].contains("#nowhere"));
        assert!(bad[1].contains("'urn'"));
    }

    #[test]
    fn deeply_nested_xhtml_is_scanned_without_recursion() {
        // every check here is a linear scan: nesting depth costs no stack
        let n = 10_000;
        let div = format!(
            "<div xmlns=\"http://www.w3.org/1999/xhtml\">{}<a href=\"#nowhere\">x</a>{}</div>",
            "<div lang=\"en\"><span>".repeat(n),
            "</span></div>".repeat(n)
        );
        assert!(has_content(&div));
        assert_eq!(undeclared_entity(&div), None);
        assert_eq!(language_sections(&div), vec!["en"]);
        assert_eq!(bad_links(&div, &[]).len(), 1);
    }
}

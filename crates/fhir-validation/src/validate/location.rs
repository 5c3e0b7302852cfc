//! Issue locations: [`P`], a FHIRPath location rendered only when an issue
//! is reported, and [`Loc`], what `Run::push` accepts as a location.

/// Something that renders as an issue location.
pub(super) trait Loc {
    fn render(&self) -> String;
}

impl Loc for str {
    fn render(&self) -> String {
        self.to_string()
    }
}

impl Loc for String {
    fn render(&self) -> String {
        self.clone()
    }
}

impl Loc for P<'_> {
    fn render(&self) -> String {
        P::render(self)
    }
}

/// A lazily rendered FHIRPath location.
#[derive(Clone, Copy)]
pub(super) struct P<'a> {
    parent: Option<&'a P<'a>>,
    name: &'a str,
    index: Option<usize>,
}

impl<'a> P<'a> {
    pub(super) fn root(name: &'a str) -> P<'a> {
        P {
            parent: None,
            name,
            index: None,
        }
    }

    pub(super) fn child(parent: &'a P<'a>, name: &'a str, index: Option<usize>) -> P<'a> {
        P {
            parent: Some(parent),
            name,
            index,
        }
    }

    /// Whether the rendered location equals `s` (without rendering it).
    pub(super) fn eq_str(&self, s: &str) -> bool {
        let mut rest = s;
        let mut cur = Some(self);
        let mut need_dot = false;
        while let Some(p) = cur {
            cur = p.parent;
            if p.name.is_empty() {
                continue;
            }
            if need_dot {
                match rest.strip_suffix('.') {
                    Some(r) => rest = r,
                    None => return false,
                }
            }
            if let Some(i) = p.index {
                let Some(r) = rest.strip_suffix(']') else {
                    return false;
                };
                let digits = r.len() - r.trim_end_matches(|c: char| c.is_ascii_digit()).len();
                let (head, num) = r.split_at(r.len() - digits);
                if num.parse::<usize>().ok() != Some(i) {
                    return false;
                }
                match head.strip_suffix('[') {
                    Some(h) => rest = h,
                    None => return false,
                }
            }
            match rest.strip_suffix(p.name) {
                Some(r) => rest = r,
                None => return false,
            }
            need_dot = true;
        }
        rest.is_empty()
    }

    pub(super) fn render(&self) -> String {
        let mut segs = Vec::new();
        let mut cur = Some(self);
        while let Some(p) = cur {
            segs.push(p);
            cur = p.parent;
        }
        let mut out = String::new();
        for p in segs.iter().rev() {
            if p.name.is_empty() {
                continue;
            }
            if !out.is_empty() {
                out.push('.');
            }
            out.push_str(p.name);
            if let Some(i) = p.index {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
        out
    }
}

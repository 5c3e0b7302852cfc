//! Slicing: discriminators (value, pattern, type, profile, exists) and their
//! cached expected values, assignment of items to slices and re-slices
//! (falling back to trial validation), and slice cardinality, closed /
//! openAtEnd and ordered rules; also the discriminator path navigation.

use serde_json::Value;

use super::location::P;
use super::values::{json_equal, pattern_match};
use super::{Entry, Host, Item, Res, Run, MAX_DEPTH, MAX_ISSUES};
use crate::registry::{DiscValue, Profile};
use crate::snapshot::{Elem, Rules};
use crate::terminology;
use crate::Severity;

impl<'r> Run<'r> {
    pub(super) fn slice_counts(
        &mut self,
        prof: &Profile,
        c: &Elem,
        assigned: &[Option<usize>],
        items: &[(usize, Entry<'_>)],
        path: &P<'_>,
    ) {
        let at = P::child(path, &c.name, None);
        let item_at = |i: usize| -> String {
            match items.get(i) {
                Some((_, (_, _, name, idx))) => P::child(path, name, *idx).render(),
                None => at.render(),
            }
        };
        for &s in &c.slices {
            let Some(se) = prof.elem(s) else { continue };
            let name = se.slice_name.as_deref().unwrap_or("");
            // items of a re-slice (`name/sub`) count for the slice too
            let n = assigned
                .iter()
                .filter(|a| {
                    a.is_some_and(|x| {
                        x == s
                            || prof
                                .elem(x)
                                .and_then(|e| e.slice_name.as_deref())
                                .and_then(|n| n.strip_prefix(name))
                                .is_some_and(|r| r.starts_with('/'))
                    })
                })
                .count() as u32;
            if n < se.min {
                self.push(
                    Severity::Error,
                    "required",
                    &at,
                    format!(
                        "Slice '{name}': minimum required = {}, but only found {n} ({})",
                        se.min, c.path
                    ),
                );
            }
            if let Some(max) = se.max {
                if n > max {
                    self.push(
                        Severity::Error,
                        "structure",
                        &at,
                        format!(
                            "Slice '{name}': maximum allowed = {max}, but found {n} ({})",
                            c.path
                        ),
                    );
                }
            }
        }
        let Some(slicing) = &c.slicing else { return };
        match slicing.rules {
            Rules::Closed => {
                for (i, a) in assigned.iter().enumerate() {
                    if a.is_none() {
                        self.push(
                            Severity::Error,
                            "structure",
                            &item_at(i),
                            format!(
                                "{}: the item does not match any slice and the slicing is closed",
                                c.path
                            ),
                        );
                    }
                }
            }
            Rules::OpenAtEnd => {
                let mut seen_open = false;
                for (i, a) in assigned.iter().enumerate() {
                    if a.is_none() {
                        seen_open = true;
                    } else if seen_open {
                        self.push(
                            Severity::Error,
                            "structure",
                            &item_at(i),
                            format!(
                                "{}: sliced item after an unsliced one (slicing is openAtEnd)",
                                c.path
                            ),
                        );
                    }
                }
            }
            Rules::Open => {}
        }
        if slicing.ordered {
            let pos = |s: usize| c.slices.iter().position(|x| *x == s);
            let mut last = 0;
            for (i, a) in assigned.iter().enumerate() {
                if let Some(p) = a.and_then(pos) {
                    if p < last {
                        self.push(
                            Severity::Error,
                            "structure",
                            &item_at(i),
                            format!("{}: slices are out of order (slicing is ordered)", c.path),
                        );
                    }
                    last = last.max(p);
                }
            }
        }
    }

    /// The slice of `c` an item belongs to.
    pub(super) fn match_slice(
        &mut self,
        prof: &Profile,
        c: &Elem,
        item: Item<'_>,
        ty: &str,
        ctx: Res<'_>,
    ) -> Option<usize> {
        let found = self.match_slice_in(prof, c, &c.slices, None, item, ty, ctx)?;
        // re-slices (`name/sub`) of the matched slice: the most specific match wins
        let mut best = found;
        while let Some(name) = prof.elem(best).and_then(|e| e.slice_name.as_deref()) {
            let subs: Vec<usize> = c
                .slices
                .iter()
                .copied()
                .filter(|&r| {
                    prof.elem(r)
                        .and_then(|e| e.slice_name.as_deref())
                        .and_then(|n| n.strip_prefix(name))
                        .is_some_and(|rest| {
                            rest.strip_prefix('/').is_some_and(|r| !r.contains('/'))
                        })
                })
                .collect();
            if subs.is_empty() {
                break;
            }
            match self.match_slice_in(prof, c, &subs, Some(name), item, ty, ctx) {
                Some(r) => best = r,
                None => break,
            }
        }
        Some(best)
    }

    /// The first slice of `slices` the item matches; at the top level
    /// (`parent` None) re-slices are skipped.
    #[allow(clippy::too_many_arguments)]
    fn match_slice_in(
        &mut self,
        prof: &Profile,
        c: &Elem,
        slices: &[usize],
        parent: Option<&str>,
        item: Item<'_>,
        ty: &str,
        ctx: Res<'_>,
    ) -> Option<usize> {
        let discs: &[(String, String)] = c
            .slicing
            .as_ref()
            .map(|s| s.discriminators.as_slice())
            .unwrap_or(&[]);
        for &s in slices {
            let Some(se) = prof.elem(s) else { continue };
            if parent.is_none() && se.slice_name.as_deref().is_some_and(|n| n.contains('/')) {
                continue;
            }
            let mut decided = true;
            let mut ok = true;
            if discs.is_empty() {
                decided = false;
            }
            let values = self.disc_values(prof, s, discs);
            for (k, (kind, dpath)) in discs.iter().enumerate() {
                let expected = values.get(k).and_then(Option::as_ref);
                match self.disc_match(prof, se, kind, dpath, item, ty, ctx, expected) {
                    Some(true) => {}
                    Some(false) => {
                        ok = false;
                        break;
                    }
                    None => {
                        decided = false;
                    }
                }
            }
            if !ok {
                continue;
            }
            if decided {
                return Some(s);
            }
            // trial validation
            if self.trial_conforms(prof, s, item, ty, ctx) {
                return Some(s);
            }
        }
        None
    }

    fn trial_conforms(
        &mut self,
        prof: &Profile,
        s: usize,
        item: Item<'_>,
        ty: &str,
        ctx: Res<'_>,
    ) -> bool {
        if self.issues.len() < MAX_ISSUES && self.extension_url_mismatch(prof, s, item, ty) {
            return false;
        }
        let saved_trial = self.trial;
        let saved_failed = self.failed;
        self.trial = true;
        self.failed = false;
        let empty = P::root("");
        let host = Host {
            dpath: &empty,
            ty: "",
            epath: "",
            base_path: "",
            ext_url: None,
            node: None,
            is_self: false,
        };
        self.visit(prof, s, item, ty, &empty, &empty, &host, ctx, MAX_DEPTH / 2);
        let ok = !self.failed;
        self.trial = saved_trial;
        self.failed = saved_failed;
        ok
    }

    /// Whether a trial validation of `item` against extension slice `s` is
    /// certain to fail because the item's `url` differs from the fixed `url`
    /// of the slice's extension definition (a shortcut for [`Self::trial_conforms`]
    /// that follows exactly the path the full walk would take to that error).
    fn extension_url_mismatch(&self, prof: &Profile, s: usize, item: Item<'_>, ty: &str) -> bool {
        if ty != "Extension" {
            return false;
        }
        let Some(se) = prof.elem(s) else { return false };
        if !se.children.is_empty() || se.content_reference.is_some() || se.holds_resources {
            return false;
        }
        let Some(obj) = item.value.and_then(Value::as_object) else {
            return false;
        };
        let Some(url @ Value::String(_)) = obj.get("url") else {
            return false;
        };
        let Some(tp) = se
            .types
            .iter()
            .find(|t| t.code == "Extension")
            .and_then(|t| t.profiles.first())
        else {
            return false;
        };
        if !tp.contains(':') {
            return false;
        }
        let Some(def) = self.reg.profile_ref(tp) else {
            return false;
        };
        if std::ptr::eq(def, prof) {
            return false;
        }
        let Some(root) = def.elem(0) else {
            return false;
        };
        if root.children.is_empty() {
            return false;
        }
        let Some(uc) = root.child_names.get("url").and_then(|&i| def.elem(i)) else {
            return false;
        };
        if !uc.slices.is_empty() {
            return false;
        }
        match &uc.fixed {
            Some(fixed) => !json_equal(url, fixed),
            None => false,
        }
    }

    /// Evaluates one discriminator: `None` when it cannot be decided.
    #[allow(clippy::too_many_arguments)]
    fn disc_match(
        &mut self,
        prof: &Profile,
        se: &Elem,
        kind: &str,
        dpath: &str,
        item: Item<'_>,
        ty: &str,
        ctx: Res<'_>,
        expected: Option<&DiscValue>,
    ) -> Option<bool> {
        match kind {
            "value" | "pattern" => {
                let dv = expected?;
                let v = item.value?;
                let owned;
                let actual: &[&Value] = match simple_values(v, dpath) {
                    Some(vals) => {
                        // the common case: one plain property, without allocating
                        let Some(expected) = &dv.value else {
                            return Some(vals.is_empty());
                        };
                        if dv.value_set.is_none() {
                            return Some(vals.iter().any(|a| {
                                if dv.fixed {
                                    json_equal(a, expected)
                                } else {
                                    pattern_match(expected, a)
                                }
                            }));
                        }
                        owned = vals.iter().collect::<Vec<&Value>>();
                        &owned
                    }
                    None => {
                        owned = navigate(v, dpath);
                        &owned
                    }
                };
                if let Some(vs) = &dv.value_set {
                    let exp = terminology::expand(self.reg, vs);
                    let mut any_unknown = false;
                    for a in actual {
                        for (sys, code) in terminology::codings(a, "") {
                            match exp.contains(sys, code) {
                                Some(true) => return Some(true),
                                None => any_unknown = true,
                                _ => {}
                            }
                        }
                    }
                    return if any_unknown { None } else { Some(false) };
                }
                let Some(expected) = &dv.value else {
                    // prohibited in the slice (max = 0)
                    return Some(actual.is_empty());
                };
                Some(actual.iter().any(|a| {
                    if dv.fixed {
                        json_equal(a, expected)
                    } else {
                        pattern_match(expected, a)
                    }
                }))
            }
            "type" => {
                let want: Vec<&str> = if dpath == "$this" {
                    se.types.iter().map(|t| t.code.as_str()).collect()
                } else {
                    let sub = find_sub(prof, se, dpath)?;
                    sub.types.iter().map(|t| t.code.as_str()).collect()
                };
                if want.is_empty() {
                    return None;
                }
                let actual_ty = if dpath == "$this" {
                    ty.to_string()
                } else {
                    let v = navigate(item.value?, dpath);
                    let v = v.first()?;
                    v.get("resourceType").and_then(Value::as_str)?.to_string()
                };
                Some(want.iter().any(|w| *w == actual_ty))
            }
            "profile" => {
                let p = dpath.strip_prefix("$this.").unwrap_or(dpath);
                let sub = find_sub(prof, se, p)?;
                let urls: Vec<String> = sub
                    .types
                    .iter()
                    .flat_map(|t| t.profiles.iter().cloned())
                    .collect();
                if urls.is_empty() {
                    return None;
                }
                let values = navigate(item.value?, p);
                let v = *values.first()?;
                for url in urls {
                    let Some(pr) = self.reg.profile_ref(&url) else {
                        continue;
                    };
                    let rt = v.get("resourceType").and_then(Value::as_str);
                    let ok = match rt {
                        Some(rt) => {
                            pr.type_name == rt
                                && self.trial(|me| {
                                    me.resource_at(v, pr, &P::root(""), ctx.entry(v), MAX_DEPTH / 2)
                                })
                        }
                        None => self.trial(|me| {
                            let empty = P::root("");
                            let host = Host {
                                dpath: &empty,
                                ty: "",
                                epath: "",
                                base_path: "",
                                ext_url: None,
                                node: None,
                                is_self: false,
                            };
                            let item = Item {
                                value: Some(v),
                                ext: None,
                            };
                            let ty = pr.type_name.clone();
                            me.visit(
                                pr,
                                0,
                                item,
                                &ty,
                                &empty,
                                &empty,
                                &host,
                                Res::top(v),
                                MAX_DEPTH / 2,
                            );
                        }),
                    };
                    if ok {
                        return Some(true);
                    }
                }
                Some(false)
            }
            "exists" => {
                let sub = find_sub(prof, se, dpath)?;
                let present = item.value.is_some_and(|v| !navigate(v, dpath).is_empty());
                if sub.min >= 1 {
                    Some(present)
                } else if sub.max == Some(0) {
                    Some(!present)
                } else {
                    None
                }
            }
            _ => None,
        }
    }

    /// The fixed/pattern value (or required binding) of the element at `dpath` in slice `se`.
    fn expected_value(&self, prof: &Profile, se: &Elem, dpath: &str) -> Option<DiscValue> {
        if let Some(sub) = find_sub(prof, se, dpath) {
            if let Some(r) = expected_of(prof, sub) {
                return Some(r);
            }
        }
        // an element of another profile (elementdefinition-profile-element)
        if let Some((lp, li)) = self.profile_element(se) {
            let root = lp.elem(li)?;
            let sub = find_sub(lp, root, dpath)?;
            return expected_of(lp, sub);
        }
        // in the slice's type profile (extension slices: url)
        let tp = se.types.first().and_then(|t| t.profiles.first())?;
        if dpath == "url" && se.types.first().is_some_and(|t| t.code == "Extension") {
            return Some(DiscValue {
                value: Some(Value::String(
                    tp.split('|').next().unwrap_or(tp).to_string(),
                )),
                fixed: true,
                value_set: None,
            });
        }
        let p = self.reg.profile_ref(tp)?;
        let root = p.elem(0)?;
        let sub = find_sub(p, root, dpath)?;
        expected_of(p, sub)
    }

    /// The cached expected values of the discriminators for slice `s`.
    fn disc_values<'p>(
        &self,
        prof: &'p Profile,
        s: usize,
        discs: &[(String, String)],
    ) -> &'p [Option<DiscValue>] {
        let Some(c) = prof.cache.get(s) else {
            return &[];
        };
        c.disc.get_or_init(|| {
            let Some(se) = prof.elem(s) else {
                return Vec::new();
            };
            discs
                .iter()
                .map(|(kind, dpath)| {
                    if matches!(kind.as_str(), "value" | "pattern") {
                        self.expected_value(prof, se, dpath)
                    } else {
                        None
                    }
                })
                .collect()
        })
    }
}

/// The fixed/pattern value (or required binding) of an element; for a choice
/// element, of its only type slice.
fn expected_of(prof: &Profile, e: &Elem) -> Option<DiscValue> {
    if e.max == Some(0) {
        return Some(DiscValue {
            value: None,
            fixed: false,
            value_set: None,
        });
    }
    if let Some(f) = &e.fixed {
        return Some(DiscValue {
            value: Some(f.clone()),
            fixed: true,
            value_set: None,
        });
    }
    if let Some(p) = &e.pattern {
        return Some(DiscValue {
            value: Some(p.clone()),
            fixed: false,
            value_set: None,
        });
    }
    if let Some(b) = &e.binding {
        if b.strength == "required" {
            return b.value_set.clone().map(|vs| DiscValue {
                value: None,
                fixed: false,
                value_set: Some(vs),
            });
        }
    }
    if e.name.ends_with("[x]") {
        if let [s] = e.slices.as_slice() {
            let se = prof.elem(*s)?;
            if se.fixed.is_some() || se.pattern.is_some() {
                return expected_of(prof, se);
            }
        }
    }
    None
}

/// Finds the element at a discriminator path below `se` (following the
/// element tree, `extension('url')` and type profiles).
fn find_sub<'p>(prof: &'p Profile, se: &'p Elem, dpath: &str) -> Option<&'p Elem> {
    let dpath = dpath.strip_prefix("$this.").unwrap_or(dpath);
    if dpath == "$this" || dpath.is_empty() {
        return Some(se);
    }
    let mut cur = se;
    for seg in split_disc_path(dpath) {
        let seg = seg.trim();
        if let Some(rest) = seg.strip_prefix("extension(") {
            let url = rest
                .trim_end_matches(')')
                .trim_matches(|c| c == '\'' || c == '"');
            let ext = cur
                .children
                .iter()
                .filter_map(|&i| prof.elem(i))
                .find(|e| e.name == "extension")?;
            // the most specific matching slice (re-slices come last), preferably expanded
            let matching: Vec<&Elem> = ext
                .slices
                .iter()
                .filter_map(|&i| prof.elem(i))
                .filter(|s| s.types.iter().any(|t| t.profiles.iter().any(|p| p == url)))
                .collect();
            cur = matching
                .iter()
                .rev()
                .find(|s| !s.children.is_empty())
                .or(matching.last())
                .copied()?;
            continue;
        }
        if seg.starts_with("resolve(") || seg.starts_with("ofType(") || seg.starts_with("as(") {
            return None;
        }
        let next = cur
            .children
            .iter()
            .filter_map(|&i| prof.elem(i))
            .find(|e| {
                e.name == seg || e.name.strip_suffix("[x]").is_some_and(|stem| seg == stem)
            })?;
        cur = next;
    }
    Some(cur)
}

pub(super) fn split_disc_path(p: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut depth = 0;
    let mut start = 0;
    for (i, ch) in p.char_indices() {
        match ch {
            '(' => depth += 1,
            ')' => depth -= 1,
            '.' if depth == 0 => {
                if let Some(s) = p.get(start..i) {
                    out.push(s);
                }
                start = i + 1;
            }
            _ => {}
        }
    }
    if let Some(s) = p.get(start..) {
        out.push(s);
    }
    out
}

/// The values of a discriminator path that names one plain property
/// (`url`, `system`): `None` for longer paths, functions or choice stems.
fn simple_values<'v>(v: &'v Value, dpath: &str) -> Option<&'v [Value]> {
    let seg = dpath.strip_prefix("$this.").unwrap_or(dpath);
    if seg.is_empty() || seg.contains(['.', '(', '$']) {
        return None;
    }
    let Value::Object(o) = v else {
        return Some(&[]);
    };
    match o.get(seg) {
        Some(Value::Array(a)) => Some(a.as_slice()),
        Some(x) => Some(std::slice::from_ref(x)),
        // maybe a choice stem (`value` for `valueCode`): the general path
        None => None,
    }
}

/// Values at a simple discriminator path (arrays flattened, choice stems matched).
pub(super) fn navigate<'v>(v: &'v Value, dpath: &str) -> Vec<&'v Value> {
    let dpath = dpath.strip_prefix("$this.").unwrap_or(dpath);
    let mut cur: Vec<&Value> = vec![v];
    if dpath == "$this" {
        return cur;
    }
    for seg in split_disc_path(dpath) {
        let mut next = Vec::new();
        if let Some(rest) = seg.strip_prefix("extension(") {
            let url = rest
                .trim_end_matches(')')
                .trim_matches(|c| c == '\'' || c == '"');
            for x in &cur {
                if let Some(Value::Array(a)) = x.get("extension") {
                    next.extend(
                        a.iter()
                            .filter(|e| e.get("url").and_then(Value::as_str) == Some(url)),
                    );
                }
            }
            cur = next;
            continue;
        }
        for x in &cur {
            let Value::Object(o) = x else { continue };
            let found = match o.get(seg) {
                Some(f) => Some(f),
                None => o
                    .iter()
                    .find(|(k, _)| {
                        k.strip_prefix(seg)
                            .is_some_and(|r| r.starts_with(|c: char| c.is_ascii_uppercase()))
                    })
                    .map(|(_, v)| v),
            };
            match found {
                Some(Value::Array(a)) => next.extend(a.iter()),
                Some(f) => next.push(f),
                None => {}
            }
        }
        cur = next;
    }
    cur
}

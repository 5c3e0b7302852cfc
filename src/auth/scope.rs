//! SMART on FHIR clinical scopes, v1 (`patient/*.read`, `user/Patient.write`)
//! and v2 (`patient/*.rs`, `system/Appointment.cu`,
//! `patient/Observation.rs?category=laboratory`), parsed once per token.
//! Scopes that are not clinical (`openid`, `launch/patient`, `fhirUser`,
//! `offline_access`) are kept as they are; a malformed clinical scope grants
//! nothing (failing closed), and [`Scopes::parse_strict`] rejects it.

use std::fmt;

use crate::model::ResourceType;

/// Whose data a scope is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ScopeContext {
    /// One patient: the token's patient context.
    Patient,
    /// What the user (`fhirUser`) may see: across patients.
    User,
    /// A backend system: across patients.
    System,
}

impl ScopeContext {
    pub fn as_str(self) -> &'static str {
        match self {
            ScopeContext::Patient => "patient",
            ScopeContext::User => "user",
            ScopeContext::System => "system",
        }
    }
}

/// One SMART v2 permission letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Action {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Action {
    fn bit(self) -> u8 {
        match self {
            Action::Create => 1,
            Action::Read => 2,
            Action::Update => 4,
            Action::Delete => 8,
            Action::Search => 16,
        }
    }

    pub fn letter(self) -> char {
        match self {
            Action::Create => 'c',
            Action::Read => 'r',
            Action::Update => 'u',
            Action::Delete => 'd',
            Action::Search => 's',
        }
    }
}

/// A set of [`Action`]s.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Perms(u8);

impl Perms {
    pub const ALL: Perms = Perms(31);

    pub fn has(self, a: Action) -> bool {
        self.0 & a.bit() != 0
    }

    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    pub fn intersect(self, o: Perms) -> Perms {
        Perms(self.0 & o.0)
    }

    pub fn union(self, o: Perms) -> Perms {
        Perms(self.0 | o.0)
    }

    /// v2 letters in `cruds` order.
    pub fn letters(self) -> String {
        [
            Action::Create,
            Action::Read,
            Action::Update,
            Action::Delete,
            Action::Search,
        ]
        .into_iter()
        .filter(|a| self.has(*a))
        .map(Action::letter)
        .collect()
    }
}

/// One clinical scope.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Grant {
    pub context: ScopeContext,
    /// `None`: every type (`*`).
    pub resource_type: Option<ResourceType>,
    pub perms: Perms,
    /// A v2 query refinement (`category=laboratory`), as written.
    pub refinement: Option<String>,
}

impl Grant {
    pub fn covers(&self, ty: ResourceType) -> bool {
        self.resource_type.is_none_or(|t| t == ty)
    }

    /// Whether `self` grants everything `other` asks for (for
    /// requested ∩ allowed at the token endpoint).
    pub fn includes(&self, other: &Grant) -> bool {
        self.context == other.context
            && (self.resource_type.is_none() || self.resource_type == other.resource_type)
            && other.perms.intersect(self.perms) == other.perms
            && (self.refinement.is_none() || self.refinement == other.refinement)
    }
}

impl fmt::Display for Grant {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ty = self
            .resource_type
            .map_or_else(|| "*".to_owned(), |t| t.to_string());
        write!(
            f,
            "{}/{}.{}",
            self.context.as_str(),
            ty,
            self.perms.letters()
        )?;
        if let Some(r) = &self.refinement {
            write!(f, "?{r}")?;
        }
        Ok(())
    }
}

/// A token's scopes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Scopes {
    pub grants: Vec<Grant>,
    /// Every other scope (`openid`, `launch/patient`, `fhirUser`, ...).
    pub other: Vec<String>,
}

impl Scopes {
    /// Parses a space-separated scope string; malformed clinical scopes are
    /// dropped (they grant nothing).
    pub fn parse(s: &str) -> Scopes {
        let mut out = Scopes::default();
        for word in s.split_ascii_whitespace() {
            match parse_one(word) {
                Ok(Some(g)) => {
                    if !out.grants.contains(&g) {
                        out.grants.push(g)
                    }
                }
                Ok(None) => out.other.push(word.to_owned()),
                Err(_) => {}
            }
        }
        out
    }

    /// Like [`Scopes::parse`], but a malformed clinical scope is an error
    /// (configuration, token requests).
    pub fn parse_strict(s: &str) -> Result<Scopes, String> {
        let mut out = Scopes::default();
        for word in s.split_ascii_whitespace() {
            match parse_one(word)? {
                Some(g) => {
                    if !out.grants.contains(&g) {
                        out.grants.push(g)
                    }
                }
                None => out.other.push(word.to_owned()),
            }
        }
        Ok(out)
    }

    pub fn has_context(&self, c: ScopeContext) -> bool {
        self.grants.iter().any(|g| g.context == c)
    }

    /// The grants covering `ty` that allow `action`.
    pub fn granting(&self, ty: ResourceType, action: Action) -> impl Iterator<Item = &Grant> {
        self.grants
            .iter()
            .filter(move |g| g.covers(ty) && g.perms.has(action))
    }

    /// The space-separated form (grants in v2 syntax, then the others).
    pub fn to_scope_string(&self) -> String {
        let mut words: Vec<String> = self.grants.iter().map(Grant::to_string).collect();
        words.extend(self.other.iter().cloned());
        words.join(" ")
    }
}

/// `Ok(None)`: not a clinical scope. `Err`: a clinical scope that is malformed.
fn parse_one(word: &str) -> Result<Option<Grant>, String> {
    let Some((ctx, rest)) = word.split_once('/') else {
        return Ok(None);
    };
    let context = match ctx {
        "patient" => ScopeContext::Patient,
        "user" => ScopeContext::User,
        "system" => ScopeContext::System,
        _ => return Ok(None),
    };
    let (body, refinement) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let Some((ty, perms)) = body.split_once('.') else {
        return Err(format!("'{word}' has no permissions (Type.rs)"));
    };
    let resource_type = if ty == "*" {
        None
    } else {
        Some(
            ty.parse::<ResourceType>()
                .map_err(|_| format!("'{word}': unknown resource type '{ty}'"))?,
        )
    };
    let (perms, v2) = match perms {
        "read" => (Perms(Action::Read.bit() | Action::Search.bit()), false),
        "write" => (
            Perms(Action::Create.bit() | Action::Update.bit() | Action::Delete.bit()),
            false,
        ),
        "*" => (Perms::ALL, false),
        letters => (
            parse_letters(letters).ok_or_else(|| {
                format!("'{word}': permissions must be read, write, * or letters of cruds in order")
            })?,
            true,
        ),
    };
    let refinement = match refinement {
        None => None,
        Some(_) if !v2 => {
            return Err(format!("'{word}': query refinements need v2 permissions"));
        }
        Some("") => return Err(format!("'{word}': empty query refinement")),
        Some(q) => Some(q.to_owned()),
    };
    Ok(Some(Grant {
        context,
        resource_type,
        perms,
        refinement,
    }))
}

fn parse_letters(s: &str) -> Option<Perms> {
    const ORDER: [(char, Action); 5] = [
        ('c', Action::Create),
        ('r', Action::Read),
        ('u', Action::Update),
        ('d', Action::Delete),
        ('s', Action::Search),
    ];
    let mut bits = 0u8;
    let mut at = 0;
    for ch in s.chars() {
        let i = ORDER[at..].iter().position(|(c, _)| *c == ch)? + at;
        bits |= ORDER[i].1.bit();
        at = i + 1;
    }
    (bits != 0).then_some(Perms(bits))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn v1_and_v2_forms() {
        let s = Scopes::parse(
            "openid fhirUser launch/patient patient/*.read user/Patient.write \
             system/*.rs patient/Appointment.cruds patient/Observation.rs?category=laboratory",
        );
        assert_eq!(s.other, ["openid", "fhirUser", "launch/patient"]);
        assert_eq!(s.grants.len(), 5);
        assert_eq!(s.grants[0].to_string(), "patient/*.rs");
        assert_eq!(s.grants[1].to_string(), "user/Patient.cud");
        assert_eq!(s.grants[2].to_string(), "system/*.rs");
        assert_eq!(s.grants[3].perms, Perms::ALL);
        assert_eq!(
            s.grants[4].refinement.as_deref(),
            Some("category=laboratory")
        );
        let obs = ResourceType::Observation;
        assert_eq!(s.granting(obs, Action::Read).count(), 3);
        assert_eq!(s.granting(obs, Action::Delete).count(), 0);
    }

    #[test]
    fn malformed_scopes_grant_nothing() {
        for bad in [
            "patient/*.sr",
            "patient/*.rr",
            "patient/*.",
            "patient/*",
            "patient/Nope.rs",
            "patient/*.x",
            "patient/*.read?category=x",
            "patient/*.rs?",
        ] {
            let s = Scopes::parse(bad);
            assert!(s.grants.is_empty(), "{bad}");
            assert!(s.other.is_empty(), "{bad}");
            assert!(Scopes::parse_strict(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn includes_is_requested_within_allowed() {
        let allowed = Scopes::parse("system/*.rs system/Appointment.cu");
        let req = Scopes::parse("system/Patient.r system/Appointment.c system/Patient.d");
        let ok: Vec<_> = req
            .grants
            .iter()
            .filter(|r| allowed.grants.iter().any(|a| a.includes(r)))
            .map(|g| g.to_string())
            .collect();
        assert_eq!(ok, ["system/Patient.r", "system/Appointment.c"]);
    }
}

//! Evaluation context: environment variables, callbacks (terminology,
//! reference resolution, profile validation, tracing), the type provider
//! and evaluation options.

use crate::temporal::DateTime;
use crate::types::TypeProvider;
use crate::value::Value;
use serde_json::Value as Json;
use std::fmt;

/// Terminology operations used by `memberOf()`, `subsumes()` and `subsumedBy()`.
pub trait TerminologyProvider: Send + Sync {
    /// Whether the coded value is in the value set. `value` is the JSON of a
    /// `code`/`string`/`uri` (a JSON string), a `Coding` or a `CodeableConcept`;
    /// `fhir_type` is its FHIR type (may be empty when unknown).
    /// `Ok(None)` means "unknown" (the result is empty).
    fn member_of(
        &self,
        value: &Json,
        fhir_type: &str,
        value_set: &str,
    ) -> Result<Option<bool>, String>;

    /// Whether `code` (a Coding/code JSON) subsumes `other` (or, with
    /// `reverse`, is subsumed by it). Default: unknown.
    fn subsumes(
        &self,
        _code: &Json,
        _other: &Json,
        _reverse: bool,
    ) -> Result<Option<bool>, String> {
        Ok(None)
    }
}

/// Resolves references that are not contained in the resource or an
/// enclosing Bundle (e.g. from a store the caller has preloaded).
pub trait ReferenceResolver: Send + Sync {
    /// Returns the resource a (relative, absolute or canonical) reference points to.
    fn resolve(&self, reference: &str) -> Option<&Json>;
}

/// Checks profile conformance for `conformsTo()`.
pub trait ProfileValidator: Send + Sync {
    /// `Ok(Some(b))` when the validator knows the profile; `Ok(None)` to fall
    /// back to the built-in check (base resource profiles only).
    fn conforms_to(
        &self,
        resource: &Json,
        fhir_type: &str,
        profile: &str,
    ) -> Result<Option<bool>, String>;
}

/// Receives the output of `trace()`.
pub trait Tracer: Send + Sync {
    /// Called with the trace name and the traced collection.
    fn trace(&self, name: &str, values: &[Value<'_>]);
}

/// Everything an evaluation needs besides the expression and the input.
pub struct EvalContext<'a> {
    pub(crate) resource: Option<&'a Json>,
    pub(crate) root_resource: Option<&'a Json>,
    pub(crate) bundle: Option<&'a Json>,
    pub(crate) variables: Vec<(String, Vec<Value<'a>>)>,
    pub(crate) types: &'a dyn TypeProvider,
    pub(crate) terminology: Option<&'a dyn TerminologyProvider>,
    pub(crate) resolver: Option<&'a dyn ReferenceResolver>,
    pub(crate) validator: Option<&'a dyn ProfileValidator>,
    pub(crate) tracer: Option<&'a dyn Tracer>,
    pub(crate) now: Option<DateTime>,
    pub(crate) strict: bool,
    pub(crate) reference_stubs: bool,
    pub(crate) max_collection: usize,
}

impl fmt::Debug for EvalContext<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EvalContext")
            .field(
                "variables",
                &self.variables.iter().map(|v| &v.0).collect::<Vec<_>>(),
            )
            .field("typed", &self.types.is_typed())
            .field("strict", &self.strict)
            .finish()
    }
}

impl Default for EvalContext<'_> {
    fn default() -> Self {
        Self::new()
    }
}

impl<'a> EvalContext<'a> {
    /// A context using the default type provider ([`crate::default_types`]).
    pub fn new() -> Self {
        Self::with_types(crate::default_types())
    }

    /// A context using a specific type provider.
    pub fn with_types(types: &'a dyn TypeProvider) -> Self {
        EvalContext {
            resource: None,
            root_resource: None,
            bundle: None,
            variables: Vec::new(),
            types,
            terminology: None,
            resolver: None,
            validator: None,
            tracer: None,
            now: None,
            strict: false,
            reference_stubs: true,
            max_collection: 1_000_000,
        }
    }

    /// Sets `%resource` (defaults to the evaluation input).
    pub fn resource(mut self, r: &'a Json) -> Self {
        self.resource = Some(r);
        self
    }

    /// Sets `%rootResource` (defaults to `%resource`).
    pub fn root_resource(mut self, r: &'a Json) -> Self {
        self.root_resource = Some(r);
        self
    }

    /// An enclosing Bundle used by `resolve()` (matched by `fullUrl` or `type/id`).
    pub fn bundle(mut self, b: &'a Json) -> Self {
        self.bundle = Some(b);
        self
    }

    /// Defines `%name`.
    pub fn variable(mut self, name: impl Into<String>, value: Vec<Value<'a>>) -> Self {
        let name = name.into();
        self.variables.retain(|(n, _)| *n != name);
        self.variables.push((name, value));
        self
    }

    /// Defines `%name` as a string.
    pub fn string_variable(self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.variable(name, vec![Value::String(value.into())])
    }

    /// Sets the type provider.
    pub fn types(mut self, t: &'a dyn TypeProvider) -> Self {
        self.types = t;
        self
    }

    /// Sets the terminology callback for `memberOf()`/`subsumes()`.
    pub fn terminology(mut self, t: &'a dyn TerminologyProvider) -> Self {
        self.terminology = Some(t);
        self
    }

    /// Sets the resolver for references not found locally.
    pub fn resolver(mut self, r: &'a dyn ReferenceResolver) -> Self {
        self.resolver = Some(r);
        self
    }

    /// Sets the profile validator for `conformsTo()`.
    pub fn validator(mut self, v: &'a dyn ProfileValidator) -> Self {
        self.validator = Some(v);
        self
    }

    /// Sets the `trace()` sink.
    pub fn tracer(mut self, t: &'a dyn Tracer) -> Self {
        self.tracer = Some(t);
        self
    }

    /// Fixes the value of `now()`/`today()`/`timeOfDay()`.
    pub fn now(mut self, now: DateTime) -> Self {
        self.now = Some(now);
        self
    }

    /// Strict mode: unknown elements, type-name mismatches at the path
    /// start, choice elements addressed by their expanded name
    /// (`valueQuantity`), ordered functions on unordered collections and
    /// non-boolean `iif` criteria are errors.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }

    /// Whether `resolve()` on a reference it cannot find returns a stub typed
    /// from the reference (`Patient/1` -> a `Patient` with no content), so that
    /// `resolve() is Patient` works without fetching. Default: on.
    pub fn reference_stubs(mut self, on: bool) -> Self {
        self.reference_stubs = on;
        self
    }

    /// Maximum size of any intermediate collection (guards `repeat`,
    /// `descendants` and `combine` blow-ups). Default 1,000,000.
    pub fn max_collection(mut self, n: usize) -> Self {
        self.max_collection = n;
        self
    }
}

//! FHIRPath (N1 normative + FHIR R4 additions) evaluator over
//! `serde_json::Value` FHIR resources.
//!
//! ```
//! let patient = serde_json::json!({"resourceType": "Patient", "name": [{"family": "Chalmers"}]});
//! let expr = fhirpath::parse("name.exists() or identifier.exists()").unwrap();
//! let ctx = fhirpath::EvalContext::new();
//! assert_eq!(fhirpath::evaluate_to_bool(&expr, &patient, &ctx).unwrap(), Some(true));
//! ```
//!
//! Expressions are parsed once into an [`Expr`] (immutable, `Send + Sync`)
//! and evaluated many times. Results are [`Value`]s; elements of the input
//! are returned as [`Value::Node`] holding a [`NodeRef`] that borrows the
//! JSON and carries the FHIR type (from the [`TypeProvider`], by default the
//! R4 model when available).

#![forbid(unsafe_code)]

mod context;
mod decimal;
mod eval;
mod functions;
mod model;
mod ops;
mod parser;
mod quantity;
mod temporal;
mod types;
mod value;

pub use context::{EvalContext, ProfileValidator, ReferenceResolver, TerminologyProvider, Tracer};
pub use decimal::Decimal;
pub use functions::quantity_of;
pub use parser::ParseError;
pub use quantity::Quantity;
pub use temporal::{DateTime, Precision, Time};
pub use types::{ElementType, TypeProvider, UntypedProvider, UNTYPED};
pub use value::{literal_repr, NodeRef, TypeInfo, Value};

use serde_json::Value as Json;
use std::fmt;

/// An evaluation error (type errors, singleton violations, unknown types,
/// missing callbacks, resource limits).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct EvalError {
    /// Human-readable description.
    pub message: String,
}

impl EvalError {
    pub(crate) fn new(m: impl Into<String>) -> Self {
        EvalError { message: m.into() }
    }
}

impl fmt::Display for EvalError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for EvalError {}

/// A parsed FHIRPath expression; reusable and shareable across threads.
pub struct Expr {
    ast: parser::Ast,
    src: String,
}

impl fmt::Debug for Expr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Expr").field(&self.src).finish()
    }
}

impl Expr {
    /// The source text.
    pub fn source(&self) -> &str {
        &self.src
    }
}

/// Parses an expression.
pub fn parse(src: &str) -> Result<Expr, ParseError> {
    Ok(Expr {
        ast: parser::parse_ast(src)?,
        src: src.to_string(),
    })
}

/// The type provider used by [`EvalContext::new`]: the R4 model from
/// `fhir-structure` when available, else the untyped fallback.
pub fn default_types() -> &'static dyn TypeProvider {
    model::default_provider()
}

/// Evaluates `expr` with `resource` as the input (`%context`, `$this`, and
/// by default `%resource`/`%rootResource`). The input's type is taken from
/// its `resourceType`.
pub fn evaluate<'a>(
    expr: &Expr,
    resource: &'a Json,
    ctx: &EvalContext<'a>,
) -> Result<Vec<Value<'a>>, EvalError> {
    let input = [eval::resource_node(resource)];
    evaluate_values(expr, &input, ctx)
}

/// Evaluates `expr` on an element that is not a resource root (e.g. an
/// invariant on `Patient.contact`), giving its FHIR type explicitly.
pub fn evaluate_node<'a>(
    expr: &Expr,
    node: &'a Json,
    fhir_type: &'a str,
    ctx: &EvalContext<'a>,
) -> Result<Vec<Value<'a>>, EvalError> {
    let input = [Value::Node(NodeRef::new(node, fhir_type))];
    evaluate_values(expr, &input, ctx)
}

/// Evaluates `expr` on an arbitrary input collection.
pub fn evaluate_values<'a>(
    expr: &Expr,
    input: &[Value<'a>],
    ctx: &EvalContext<'a>,
) -> Result<Vec<Value<'a>>, EvalError> {
    let ev = eval::Evaluator::new(ctx, input);
    let frame = eval::Frame {
        this: input,
        index: None,
        total: None,
    };
    ev.eval(&expr.ast, frame)
}

/// Evaluates an invariant: empty -> `None`; a single Boolean -> its value;
/// a single non-Boolean item -> `Some(true)`; several items -> error.
pub fn evaluate_to_bool<'a>(
    expr: &Expr,
    resource: &'a Json,
    ctx: &EvalContext<'a>,
) -> Result<Option<bool>, EvalError> {
    let r = evaluate(expr, resource, ctx)?;
    collection_to_bool(&r)
}

/// Singleton-evaluation of a result collection as a Boolean.
pub fn collection_to_bool(r: &[Value<'_>]) -> Result<Option<bool>, EvalError> {
    match r {
        [] => Ok(None),
        [v] => Ok(Some(match v {
            Value::Boolean(b) => *b,
            Value::Node(n) => n.json().and_then(|j| j.as_bool()).unwrap_or(true),
            _ => true,
        })),
        _ => Err(EvalError::new(format!(
            "expected a single Boolean, got {} items",
            r.len()
        ))),
    }
}

/// A configured evaluator: a type provider plus convenience methods.
#[derive(Clone, Copy)]
pub struct Engine {
    types: &'static dyn TypeProvider,
}

impl fmt::Debug for Engine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Engine")
            .field("typed", &self.types.is_typed())
            .finish()
    }
}

impl Default for Engine {
    fn default() -> Self {
        Self::r4()
    }
}

impl Engine {
    /// Engine using the FHIR R4 type model (falls back to untyped when the
    /// model is unavailable).
    pub fn r4() -> Engine {
        Engine {
            types: default_types(),
        }
    }

    /// Engine without an element model (types come from JSON and choice suffixes).
    pub fn untyped() -> Engine {
        Engine { types: &UNTYPED }
    }

    /// Engine with a custom type provider.
    pub fn with_types(types: &'static dyn TypeProvider) -> Engine {
        Engine { types }
    }

    /// The engine's type provider.
    pub fn types(&self) -> &'static dyn TypeProvider {
        self.types
    }

    /// A fresh context using this engine's types.
    pub fn context<'a>(&self) -> EvalContext<'a> {
        EvalContext::with_types(self.types)
    }

    /// Parses an expression.
    pub fn parse(&self, src: &str) -> Result<Expr, ParseError> {
        parse(src)
    }

    /// Evaluates with a default context.
    pub fn evaluate<'a>(
        &self,
        expr: &Expr,
        resource: &'a Json,
    ) -> Result<Vec<Value<'a>>, EvalError> {
        evaluate(expr, resource, &self.context())
    }

    /// Evaluates an invariant with a default context.
    pub fn evaluate_to_bool(
        &self,
        expr: &Expr,
        resource: &Json,
    ) -> Result<Option<bool>, EvalError> {
        evaluate_to_bool(expr, resource, &self.context())
    }
}

#[cfg(test)]
mod tests;

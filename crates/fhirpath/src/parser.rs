//! Lexer and Pratt parser producing the FHIRPath abstract syntax tree.

use crate::decimal::Decimal;
use crate::quantity::{calendar_keyword, Quantity};
use crate::temporal::{DateTime, Time};
use crate::value::Value;
use std::fmt;
use std::sync::OnceLock;

/// Maximum nesting depth of expressions accepted by the parser.
pub const MAX_DEPTH: u32 = 96;
/// Maximum depth of the syntax tree (bounds evaluation recursion and drop).
pub const MAX_AST_DEPTH: u32 = 128;

/// A syntax (or static semantic) error with the byte offset where it was detected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParseError {
    /// Human-readable description.
    pub message: String,
    /// Byte offset into the expression.
    pub position: usize,
}

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} (at offset {})", self.message, self.position)
    }
}

impl std::error::Error for ParseError {}

#[derive(Clone, Debug, PartialEq)]
enum Tok {
    Ident(String),
    QIdent(String),
    Str(String),
    Num(String),
    Date(String),
    Time(String),
    Var(String),
    Special(String),
    Punct(&'static str),
    Eof,
}

struct Lexer<'s> {
    src: &'s str,
    b: &'s [u8],
    i: usize,
}

const PUNCTS: &[&str] = &[
    "<=", ">=", "!=", "!~", ".", "[", "]", "(", ")", "{", "}", ",", "+", "-", "*", "/", "&", "|",
    "=", "~", "<", ">",
];

impl<'s> Lexer<'s> {
    fn err<T>(&self, msg: impl Into<String>, pos: usize) -> Result<T, ParseError> {
        Err(ParseError {
            message: msg.into(),
            position: pos,
        })
    }

    fn skip_ws(&mut self) -> Result<(), ParseError> {
        loop {
            while self.i < self.b.len() && self.b[self.i].is_ascii_whitespace() {
                self.i += 1;
            }
            if self.b[self.i..].starts_with(b"//") {
                while self.i < self.b.len() && self.b[self.i] != b'\n' {
                    self.i += 1;
                }
            } else if self.b[self.i..].starts_with(b"/*") {
                let start = self.i;
                match self.src[self.i + 2..].find("*/") {
                    Some(p) => self.i += 2 + p + 2,
                    None => return self.err("unterminated comment", start),
                }
            } else {
                return Ok(());
            }
        }
    }

    fn read_quoted(&mut self, q: u8) -> Result<String, ParseError> {
        let start = self.i;
        self.i += 1;
        let mut out = String::new();
        loop {
            let rest = &self.src[self.i..];
            let mut chars = rest.chars();
            let c = match chars.next() {
                Some(c) => c,
                None => return self.err("unterminated string", start),
            };
            self.i += c.len_utf8();
            if c as u32 == q as u32 {
                return Ok(out);
            }
            if c == '\\' {
                let e = match self.src[self.i..].chars().next() {
                    Some(e) => e,
                    None => return self.err("unterminated escape", start),
                };
                self.i += e.len_utf8();
                match e {
                    '\'' | '"' | '`' | '\\' | '/' => out.push(e),
                    'f' => out.push('\u{c}'),
                    'n' => out.push('\n'),
                    'r' => out.push('\r'),
                    't' => out.push('\t'),
                    'u' => {
                        let hex = self.src.get(self.i..self.i + 4).unwrap_or("");
                        let cp = u32::from_str_radix(hex, 16)
                            .ok()
                            .filter(|_| hex.len() == 4)
                            .ok_or_else(|| ParseError {
                                message: "invalid \\u escape".into(),
                                position: self.i,
                            })?;
                        self.i += 4;
                        match char::from_u32(cp) {
                            Some(ch) => out.push(ch),
                            None => out.push('\u{fffd}'),
                        }
                    }
                    other => {
                        return self.err(format!("invalid escape \\{}", other), self.i - 1);
                    }
                }
            } else {
                out.push(c);
            }
        }
    }

    fn digits(&mut self) -> usize {
        let s = self.i;
        while self.i < self.b.len() && self.b[self.i].is_ascii_digit() {
            self.i += 1;
        }
        self.i - s
    }

    fn lex_time_part(&mut self) {
        // hh(:mm(:ss(.fff)?)?)?
        if self.digits() != 2 {
            return;
        }
        for _ in 0..2 {
            if self.b.get(self.i) == Some(&b':')
                && self.b.get(self.i + 1).is_some_and(|c| c.is_ascii_digit())
            {
                self.i += 1;
                self.digits();
            } else {
                return;
            }
        }
        if self.b.get(self.i) == Some(&b'.')
            && self.b.get(self.i + 1).is_some_and(|c| c.is_ascii_digit())
        {
            self.i += 1;
            self.digits();
        }
    }

    fn lex_datetime(&mut self, start: usize) -> Result<Tok, ParseError> {
        // after '@'
        if self.b.get(self.i) == Some(&b'T') {
            self.i += 1;
            let s = self.i;
            self.lex_time_part();
            return Ok(Tok::Time(self.src[s..self.i].to_string()));
        }
        let s = self.i;
        if self.digits() != 4 {
            return self.err("invalid date literal", start);
        }
        for _ in 0..2 {
            if self.b.get(self.i) == Some(&b'-')
                && self.b.get(self.i + 1).is_some_and(|c| c.is_ascii_digit())
            {
                self.i += 1;
                self.digits();
            } else {
                break;
            }
        }
        if self.b.get(self.i) == Some(&b'T') {
            self.i += 1;
            if self.b.get(self.i).is_some_and(|c| c.is_ascii_digit()) {
                self.lex_time_part();
                match self.b.get(self.i) {
                    Some(b'Z') => self.i += 1,
                    Some(b'+') | Some(b'-')
                        if self.b.get(self.i + 1).is_some_and(|c| c.is_ascii_digit()) =>
                    {
                        self.i += 1;
                        self.digits();
                        if self.b.get(self.i) == Some(&b':') {
                            self.i += 1;
                            self.digits();
                        }
                    }
                    _ => {}
                }
            }
            let text = self.src[s..self.i].to_string();
            return Ok(Tok::Date(text));
        }
        Ok(Tok::Date(self.src[s..self.i].to_string()))
    }

    fn next(&mut self) -> Result<(Tok, usize), ParseError> {
        self.skip_ws()?;
        let start = self.i;
        let c = match self.b.get(self.i) {
            Some(c) => *c,
            None => return Ok((Tok::Eof, start)),
        };
        let tok = match c {
            b'\'' => Tok::Str(self.read_quoted(b'\'')?),
            b'`' => Tok::QIdent(self.read_quoted(b'`')?),
            b'"' => Tok::QIdent(self.read_quoted(b'"')?),
            b'@' => {
                self.i += 1;
                self.lex_datetime(start)?
            }
            b'%' => {
                self.i += 1;
                match self.b.get(self.i) {
                    Some(b'`') => Tok::Var(self.read_quoted(b'`')?),
                    Some(b'\'') => Tok::Var(self.read_quoted(b'\'')?),
                    Some(c) if c.is_ascii_alphabetic() || *c == b'_' => {
                        let s = self.i;
                        while self.i < self.b.len()
                            && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_')
                        {
                            self.i += 1;
                        }
                        Tok::Var(self.src[s..self.i].to_string())
                    }
                    _ => return self.err("invalid environment variable", start),
                }
            }
            b'$' => {
                self.i += 1;
                let s = self.i;
                while self.i < self.b.len() && self.b[self.i].is_ascii_alphanumeric() {
                    self.i += 1;
                }
                let name = &self.src[s..self.i];
                match name {
                    "this" | "index" | "total" => Tok::Special(name.to_string()),
                    _ => return self.err(format!("unknown special variable ${}", name), start),
                }
            }
            b'0'..=b'9' => {
                self.digits();
                if self.b.get(self.i) == Some(&b'.')
                    && self.b.get(self.i + 1).is_some_and(|c| c.is_ascii_digit())
                {
                    self.i += 1;
                    self.digits();
                }
                let text = self.src[start..self.i].to_string();
                if self.b.get(self.i) == Some(&b'L') {
                    self.i += 1;
                }
                Tok::Num(text)
            }
            c if c.is_ascii_alphabetic() || c == b'_' => {
                while self.i < self.b.len()
                    && (self.b[self.i].is_ascii_alphanumeric() || self.b[self.i] == b'_')
                {
                    self.i += 1;
                }
                Tok::Ident(self.src[start..self.i].to_string())
            }
            _ => {
                let rest = &self.src[self.i..];
                match PUNCTS.iter().find(|p| rest.starts_with(**p)) {
                    Some(p) => {
                        self.i += p.len();
                        Tok::Punct(p)
                    }
                    None => {
                        let ch = rest.chars().next().unwrap_or('?');
                        return self.err(format!("unexpected character '{}'", ch), start);
                    }
                }
            }
        };
        Ok((tok, start))
    }
}

/// Binary operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum BinOp {
    Mul,
    Div,
    IntDiv,
    Mod,
    Add,
    Sub,
    Concat,
    Union,
    Lt,
    Le,
    Gt,
    Ge,
    Eq,
    Ne,
    Equiv,
    NotEquiv,
    In,
    Contains,
    And,
    Or,
    Xor,
    Implies,
}

/// A type specifier such as `Quantity`, `FHIR.Patient`, `System.String`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct TypeSpec {
    pub namespace: Option<String>,
    pub name: String,
}

macro_rules! funcs {
    ($($name:literal => $v:ident ($min:expr, $max:expr)),* $(,)?) => {
        /// Built-in functions.
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        pub(crate) enum Func { $($v),* }
        fn lookup_func(name: &str) -> Option<(Func, usize, usize)> {
            let name = match name {
                "toLong" => "toInteger",
                "convertsToLong" => "convertsToInteger",
                "htmlchecks" => "htmlChecks",
                n => n,
            };
            match name {
                $($name => Some((Func::$v, $min, $max)),)*
                _ => None,
            }
        }
    };
}

funcs! {
    "empty" => Empty(0, 0),
    "exists" => Exists(0, 1),
    "all" => All(1, 1),
    "allTrue" => AllTrue(0, 0),
    "anyTrue" => AnyTrue(0, 0),
    "allFalse" => AllFalse(0, 0),
    "anyFalse" => AnyFalse(0, 0),
    "subsetOf" => SubsetOf(1, 1),
    "supersetOf" => SupersetOf(1, 1),
    "count" => Count(0, 0),
    "distinct" => Distinct(0, 0),
    "isDistinct" => IsDistinct(0, 0),
    "where" => Where(1, 1),
    "select" => Select(1, 1),
    "repeat" => Repeat(1, 1),
    "ofType" => OfType(1, 1),
    "as" => As(1, 1),
    "is" => Is(1, 1),
    "single" => Single(0, 0),
    "first" => First(0, 0),
    "last" => Last(0, 0),
    "tail" => Tail(0, 0),
    "skip" => Skip(1, 1),
    "take" => Take(1, 1),
    "intersect" => Intersect(1, 1),
    "exclude" => Exclude(1, 1),
    "union" => Union(1, 1),
    "combine" => Combine(1, 1),
    "iif" => Iif(2, 3),
    "toBoolean" => ToBoolean(0, 0),
    "convertsToBoolean" => ConvertsToBoolean(0, 0),
    "toInteger" => ToInteger(0, 0),
    "convertsToInteger" => ConvertsToInteger(0, 0),
    "toDecimal" => ToDecimal(0, 0),
    "convertsToDecimal" => ConvertsToDecimal(0, 0),
    "toString" => ToStringF(0, 0),
    "convertsToString" => ConvertsToString(0, 0),
    "toDate" => ToDate(0, 0),
    "convertsToDate" => ConvertsToDate(0, 0),
    "toDateTime" => ToDateTime(0, 0),
    "convertsToDateTime" => ConvertsToDateTime(0, 0),
    "toTime" => ToTime(0, 0),
    "convertsToTime" => ConvertsToTime(0, 0),
    "toQuantity" => ToQuantity(0, 1),
    "convertsToQuantity" => ConvertsToQuantity(0, 1),
    "indexOf" => IndexOf(1, 1),
    "lastIndexOf" => LastIndexOf(1, 1),
    "substring" => Substring(1, 2),
    "startsWith" => StartsWith(1, 1),
    "endsWith" => EndsWith(1, 1),
    "contains" => ContainsStr(1, 1),
    "upper" => Upper(0, 0),
    "lower" => Lower(0, 0),
    "replace" => Replace(2, 2),
    "matches" => Matches(1, 2),
    "matchesFull" => MatchesFull(1, 2),
    "replaceMatches" => ReplaceMatches(2, 3),
    "length" => Length(0, 0),
    "toChars" => ToChars(0, 0),
    "trim" => Trim(0, 0),
    "split" => Split(1, 1),
    "join" => Join(0, 1),
    "encode" => Encode(1, 1),
    "decode" => Decode(1, 1),
    "escape" => Escape(1, 1),
    "unescape" => Unescape(1, 1),
    "abs" => Abs(0, 0),
    "ceiling" => Ceiling(0, 0),
    "exp" => Exp(0, 0),
    "floor" => Floor(0, 0),
    "ln" => Ln(0, 0),
    "log" => Log(1, 1),
    "power" => Power(1, 1),
    "round" => Round(0, 1),
    "sqrt" => Sqrt(0, 0),
    "truncate" => Truncate(0, 0),
    "children" => Children(0, 0),
    "descendants" => Descendants(0, 0),
    "trace" => Trace(1, 2),
    "now" => Now(0, 0),
    "today" => Today(0, 0),
    "timeOfDay" => TimeOfDay(0, 0),
    "aggregate" => Aggregate(1, 2),
    "sort" => Sort(0, 16),
    "type" => Type(0, 0),
    "not" => Not(0, 0),
    "extension" => Extension(1, 1),
    "hasValue" => HasValue(0, 0),
    "getValue" => GetValue(0, 0),
    "resolve" => Resolve(0, 0),
    "memberOf" => MemberOf(1, 1),
    "conformsTo" => ConformsTo(1, 1),
    "htmlChecks" => HtmlChecks(0, 0),
    "elementDefinition" => ElementDefinition(0, 0),
    "slice" => Slice(2, 2),
    "checkModifiers" => CheckModifiers(1, 1),
    "subsumes" => Subsumes(1, 1),
    "subsumedBy" => SubsumedBy(1, 1),
    "lowBoundary" => LowBoundary(0, 1),
    "highBoundary" => HighBoundary(0, 1),
    "precision" => Precision(0, 0),
    "comparable" => Comparable(1, 1),
    "defineVariable" => DefineVariable(1, 2),
}

/// A function invocation.
#[derive(Debug)]
pub(crate) struct Call {
    pub base: Option<Ast>,
    pub func: Func,
    pub args: Vec<Ast>,
    /// Type argument of `is`/`as`/`ofType`.
    pub ty: Option<TypeSpec>,
    /// Lazily compiled regular expression for a literal pattern argument.
    pub regex: OnceLock<Option<regex::Regex>>,
}

/// Expression tree.
#[derive(Debug)]
pub(crate) enum Ast {
    Lit(Value<'static>),
    Empty,
    Ident(String),
    Member(Box<Ast>, String),
    Call(Box<Call>),
    This,
    Index,
    Total,
    Var(String),
    Indexer(Box<Ast>, Box<Ast>),
    Neg(Box<Ast>),
    Bin(BinOp, Box<Ast>, Box<Ast>),
    TypeOp(bool, Box<Ast>, TypeSpec),
}

struct Parser<'s> {
    lex: Lexer<'s>,
    tok: Tok,
    pos: usize,
    depth: u32,
}

fn infix_op(t: &Tok) -> Option<(BinOp, u8)> {
    let op = match t {
        Tok::Punct(p) => match *p {
            "*" => BinOp::Mul,
            "/" => BinOp::Div,
            "+" => BinOp::Add,
            "-" => BinOp::Sub,
            "&" => BinOp::Concat,
            "|" => BinOp::Union,
            "<" => BinOp::Lt,
            "<=" => BinOp::Le,
            ">" => BinOp::Gt,
            ">=" => BinOp::Ge,
            "=" => BinOp::Eq,
            "!=" => BinOp::Ne,
            "~" => BinOp::Equiv,
            "!~" => BinOp::NotEquiv,
            _ => return None,
        },
        Tok::Ident(s) => match s.as_str() {
            "div" => BinOp::IntDiv,
            "mod" => BinOp::Mod,
            "in" => BinOp::In,
            "contains" => BinOp::Contains,
            "and" => BinOp::And,
            "or" => BinOp::Or,
            "xor" => BinOp::Xor,
            "implies" => BinOp::Implies,
            _ => return None,
        },
        _ => return None,
    };
    let bp = match op {
        BinOp::Implies => 2,
        BinOp::Or | BinOp::Xor => 4,
        BinOp::And => 6,
        BinOp::In | BinOp::Contains => 8,
        BinOp::Eq | BinOp::Ne | BinOp::Equiv | BinOp::NotEquiv => 10,
        BinOp::Lt | BinOp::Le | BinOp::Gt | BinOp::Ge => 12,
        BinOp::Union => 14,
        BinOp::Add | BinOp::Sub | BinOp::Concat => 18,
        BinOp::Mul | BinOp::Div | BinOp::IntDiv | BinOp::Mod => 20,
    };
    Some((op, bp))
}

const TYPE_BP: u8 = 16;
const UNARY_BP: u8 = 22;

impl<'s> Parser<'s> {
    fn advance(&mut self) -> Result<Tok, ParseError> {
        let (t, p) = self.lex.next()?;
        let old = std::mem::replace(&mut self.tok, t);
        self.pos = p;
        Ok(old)
    }

    fn err<T>(&self, msg: impl Into<String>) -> Result<T, ParseError> {
        Err(ParseError {
            message: msg.into(),
            position: self.pos,
        })
    }

    fn expect(&mut self, p: &'static str) -> Result<(), ParseError> {
        if self.tok == Tok::Punct(p) {
            self.advance()?;
            Ok(())
        } else {
            self.err(format!("expected '{}' but found {:?}", p, self.tok))
        }
    }

    fn check_depth(&self, d: u32) -> Result<(), ParseError> {
        if d > MAX_AST_DEPTH {
            self.err("expression too deeply nested or too long a chain")
        } else {
            Ok(())
        }
    }

    fn expr(&mut self, min_bp: u8) -> Result<(Ast, u32), ParseError> {
        self.depth += 1;
        if self.depth > MAX_DEPTH {
            return self.err("expression nested too deeply");
        }
        let (mut lhs, mut d) = self.prefix()?;
        loop {
            self.check_depth(d)?;
            match &self.tok {
                Tok::Punct(".") => {
                    self.advance()?;
                    let (l, nd) = self.invocation(lhs, d)?;
                    lhs = l;
                    d = nd;
                    continue;
                }
                Tok::Punct("[") => {
                    self.advance()?;
                    let (idx, id) = self.expr(0)?;
                    self.expect("]")?;
                    lhs = Ast::Indexer(Box::new(lhs), Box::new(idx));
                    d = d.max(id) + 1;
                    continue;
                }
                Tok::Ident(s) if s == "is" || s == "as" => {
                    if TYPE_BP < min_bp {
                        break;
                    }
                    let is = s == "is";
                    self.advance()?;
                    let ty = self.type_spec()?;
                    lhs = Ast::TypeOp(is, Box::new(lhs), ty);
                    d += 1;
                    continue;
                }
                _ => {}
            }
            let (op, bp) = match infix_op(&self.tok) {
                Some(x) => x,
                None => break,
            };
            if bp < min_bp {
                break;
            }
            self.advance()?;
            let rbp = if op == BinOp::Implies { bp } else { bp + 1 };
            let (rhs, rd) = self.expr(rbp)?;
            lhs = Ast::Bin(op, Box::new(lhs), Box::new(rhs));
            d = d.max(rd) + 1;
        }
        self.check_depth(d)?;
        self.depth -= 1;
        Ok((lhs, d))
    }

    fn type_spec(&mut self) -> Result<TypeSpec, ParseError> {
        let first = match self.advance()? {
            Tok::Ident(s) | Tok::QIdent(s) => s,
            t => return self.err(format!("expected type name, found {:?}", t)),
        };
        if self.tok == Tok::Punct(".") {
            self.advance()?;
            let second = match self.advance()? {
                Tok::Ident(s) | Tok::QIdent(s) => s,
                t => return self.err(format!("expected type name, found {:?}", t)),
            };
            return Ok(TypeSpec {
                namespace: Some(first),
                name: second,
            });
        }
        Ok(TypeSpec {
            namespace: None,
            name: first,
        })
    }

    fn prefix(&mut self) -> Result<(Ast, u32), ParseError> {
        match &self.tok {
            Tok::Punct("-") => {
                self.advance()?;
                let (e, d) = self.expr(UNARY_BP)?;
                Ok(match e {
                    Ast::Lit(Value::Integer(i)) if i != i64::MIN => {
                        (Ast::Lit(Value::Integer(-i)), d)
                    }
                    Ast::Lit(Value::Decimal(x)) => (Ast::Lit(Value::Decimal(x.neg())), d),
                    e => (Ast::Neg(Box::new(e)), d + 1),
                })
            }
            Tok::Punct("+") => {
                self.advance()?;
                self.expr(UNARY_BP)
            }
            _ => self.term_inner(),
        }
    }

    fn term_inner(&mut self) -> Result<(Ast, u32), ParseError> {
        let pos = self.pos;
        let tok = self.advance()?;
        match tok {
            Tok::Num(text) => {
                let lit = if text.contains('.') {
                    match Decimal::parse(&text) {
                        Some(d) => Value::Decimal(d),
                        None => return self.err_at("invalid number", pos),
                    }
                } else {
                    match text.parse::<i64>() {
                        Ok(i) => Value::Integer(i),
                        Err(_) => match Decimal::parse(&text) {
                            Some(d) => Value::Decimal(d),
                            None => return self.err_at("invalid number", pos),
                        },
                    }
                };
                // quantity?
                let unit = match &self.tok {
                    Tok::Str(u) => Some(u.clone()),
                    Tok::Ident(w) if calendar_keyword(w).is_some() => Some(w.clone()),
                    _ => None,
                };
                if let Some(u) = unit {
                    self.advance()?;
                    let v = match lit {
                        Value::Integer(i) => Decimal::from_i64(i),
                        Value::Decimal(d) => d,
                        _ => Decimal::from_i64(0),
                    };
                    return Ok((Ast::Lit(Value::Quantity(Box::new(Quantity::new(v, &u)))), 1));
                }
                Ok((Ast::Lit(lit), 1))
            }
            Tok::Str(s) => Ok((Ast::Lit(Value::String(s)), 1)),
            Tok::Date(text) => {
                if text.contains('T') {
                    match DateTime::parse_datetime(&text, true) {
                        Some(d) => Ok((Ast::Lit(Value::DateTime(d)), 1)),
                        None => self.err_at(format!("invalid date-time literal @{}", text), pos),
                    }
                } else {
                    match DateTime::parse_date(&text) {
                        Some(d) => Ok((Ast::Lit(Value::Date(d)), 1)),
                        None => self.err_at(format!("invalid date literal @{}", text), pos),
                    }
                }
            }
            Tok::Time(text) => match Time::parse(&text, false) {
                Some(t) => Ok((Ast::Lit(Value::Time(t)), 1)),
                None => self.err_at(format!("invalid time literal @T{}", text), pos),
            },
            Tok::Var(v) => Ok((Ast::Var(v), 1)),
            Tok::Special(s) => Ok((
                match s.as_str() {
                    "this" => Ast::This,
                    "index" => Ast::Index,
                    _ => Ast::Total,
                },
                1,
            )),
            Tok::Punct("(") => {
                let e = self.expr(0)?;
                self.expect(")")?;
                Ok(e)
            }
            Tok::Punct("{") => {
                self.expect("}")?;
                Ok((Ast::Empty, 1))
            }
            Tok::Ident(s) if (s == "true" || s == "false") && self.tok != Tok::Punct("(") => {
                Ok((Ast::Lit(Value::Boolean(s == "true")), 1))
            }
            t @ (Tok::Ident(_) | Tok::QIdent(_)) => {
                // put it back by handling invocation directly
                self.invocation_from(None, 0, t, pos)
            }
            Tok::Eof => self.err_at("unexpected end of expression", pos),
            t => self.err_at(format!("unexpected token {:?}", t), pos),
        }
    }

    fn err_at<T>(&self, msg: impl Into<String>, pos: usize) -> Result<T, ParseError> {
        Err(ParseError {
            message: msg.into(),
            position: pos,
        })
    }

    fn invocation(&mut self, base: Ast, base_depth: u32) -> Result<(Ast, u32), ParseError> {
        let pos = self.pos;
        let t = self.advance()?;
        self.invocation_from(Some(base), base_depth, t, pos)
    }

    fn invocation_from(
        &mut self,
        base: Option<Ast>,
        base_depth: u32,
        t: Tok,
        pos: usize,
    ) -> Result<(Ast, u32), ParseError> {
        let (name, quoted) = match t {
            Tok::Ident(s) => (s, false),
            Tok::QIdent(s) => (s, true),
            Tok::Special(s) if base.is_some() && s == "this" => {
                // `x.$this` is unusual but harmless
                return Ok((base.unwrap_or(Ast::This), base_depth));
            }
            t => return self.err_at(format!("expected identifier, found {:?}", t), pos),
        };
        if !quoted && self.tok == Tok::Punct("(") {
            self.advance()?;
            let mut args = Vec::new();
            let mut depth = base_depth;
            if self.tok != Tok::Punct(")") {
                loop {
                    let (a, ad) = self.expr(0)?;
                    depth = depth.max(ad);
                    args.push(a);
                    if self.tok == Tok::Punct(",") {
                        self.advance()?;
                        continue;
                    }
                    break;
                }
            }
            self.expect(")")?;
            let (func, min, max) = match lookup_func(&name) {
                Some(f) => f,
                None => return self.err_at(format!("unknown function '{}'", name), pos),
            };
            if args.len() < min || args.len() > max {
                return self.err_at(
                    format!(
                        "function '{}' takes {}..{} arguments, got {}",
                        name,
                        min,
                        max,
                        args.len()
                    ),
                    pos,
                );
            }
            let mut ty = None;
            if matches!(func, Func::Is | Func::As | Func::OfType) {
                ty = Some(match args.first().and_then(ast_to_type) {
                    Some(t) => t,
                    None => return self.err_at(format!("'{}' requires a type name", name), pos),
                });
            }
            return Ok((
                Ast::Call(Box::new(Call {
                    base,
                    func,
                    args,
                    ty,
                    regex: OnceLock::new(),
                })),
                depth + 1,
            ));
        }
        Ok(match base {
            Some(b) => (Ast::Member(Box::new(b), name), base_depth + 1),
            None => (Ast::Ident(name), 1),
        })
    }
}

fn ast_to_type(a: &Ast) -> Option<TypeSpec> {
    match a {
        Ast::Ident(n) => Some(TypeSpec {
            namespace: None,
            name: n.clone(),
        }),
        Ast::Member(b, n) => match b.as_ref() {
            Ast::Ident(ns) => Some(TypeSpec {
                namespace: Some(ns.clone()),
                name: n.clone(),
            }),
            _ => None,
        },
        _ => None,
    }
}

pub(crate) fn parse_ast(src: &str) -> Result<Ast, ParseError> {
    let mut p = Parser {
        lex: Lexer {
            src,
            b: src.as_bytes(),
            i: 0,
        },
        tok: Tok::Eof,
        pos: 0,
        depth: 0,
    };
    p.advance()?;
    let (e, _) = p.expr(0)?;
    if p.tok != Tok::Eof {
        return p.err(format!("unexpected token {:?} after expression", p.tok));
    }
    Ok(e)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ok(s: &str) -> Ast {
        match parse_ast(s) {
            Ok(a) => a,
            Err(e) => panic!("{}: {}", s, e),
        }
    }

    #[test]
    fn parses_basic() {
        ok("Patient.name.given");
        ok("name.exists() or identifier.exists()");
        ok("2 + 2 // comment");
        ok("@2015-02-04T14:34:28.123.is(DateTime)");
        ok("@2015T.is(DateTime)");
        ok("4 days.convertsToQuantity()");
        ok("10.1 'mg'.convertsToQuantity()");
        ok("Observation.value as Quantity");
        ok("Patient.is(FHIR.`Patient`)");
        ok("%`vs-administrative-gender` = 'x'");
        ok("(1 | 2).exists() implies true");
        ok("name[0].given");
        ok("'\\\\\\/\\f\\r\\n\\t\\\"\\`\\'\\u002a'");
    }

    #[test]
    fn precedence() {
        match ok("-1.convertsToInteger()") {
            Ast::Neg(_) => {}
            other => panic!("{:?}", other),
        }
        match ok("1 | 1 is Integer") {
            Ast::Bin(BinOp::Union, _, r) => assert!(matches!(*r, Ast::TypeOp(true, _, _))),
            other => panic!("{:?}", other),
        }
        match ok("1 + 2 * 3") {
            Ast::Bin(BinOp::Add, _, r) => assert!(matches!(*r, Ast::Bin(BinOp::Mul, _, _))),
            other => panic!("{:?}", other),
        }
    }

    #[test]
    fn errors() {
        assert!(parse_ast("2 + 2 /").is_err());
        assert!(parse_ast("2 + 2 /* not finished").is_err());
        assert!(parse_ast("@T14:34:28Z.is(Time)").is_err());
        assert!(parse_ast("foo(").is_err());
        assert!(parse_ast("name.bogusFunction()").is_err());
        assert!(parse_ast("'unterminated").is_err());
        let deep = "(".repeat(500) + "1" + &")".repeat(500);
        assert!(parse_ast(&deep).is_err());
    }
}

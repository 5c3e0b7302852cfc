//! A QuestionnaireResponse checked against its Questionnaire (R4): items by
//! `linkId` in the form's order, answer types and options, `repeats`,
//! `maxLength`, `enableWhen` (with `enableBehavior`), and — when the
//! response is `completed` or `amended` — every enabled `required` item
//! answered. Messages name linkIds and item text, never answers (they may
//! be patient data).

use serde_json::{Map, Value};

/// One problem, at a FHIRPath-like location in the response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub expression: String,
    pub message: String,
}

/// Deepest item nesting examined (hostile input cannot exhaust the stack).
const MAX_DEPTH: usize = 32;

/// Every problem of `response` against `questionnaire` (empty: valid).
pub fn validate(questionnaire: &Value, response: &Value) -> Vec<Problem> {
    let mut out = Vec::new();
    if questionnaire.get("resourceType").and_then(Value::as_str) != Some("Questionnaire") {
        out.push(problem("Questionnaire", "the form is not a Questionnaire"));
        return out;
    }
    if response.get("resourceType").and_then(Value::as_str) != Some("QuestionnaireResponse") {
        out.push(problem(
            "QuestionnaireResponse",
            "the response is not a QuestionnaireResponse",
        ));
        return out;
    }
    let completed = matches!(
        response.get("status").and_then(Value::as_str),
        Some("completed" | "amended")
    );
    let mut answers: Vec<(String, Value)> = Vec::new();
    collect_answers(response.get("item"), 0, &mut answers);
    let ctx = Ctx {
        completed,
        answers: &answers,
    };
    check_items(
        &ctx,
        items(questionnaire.get("item")),
        response.get("item"),
        "QuestionnaireResponse",
        0,
        &mut out,
    );
    out
}

struct Ctx<'a> {
    completed: bool,
    /// Every answer value in the response, by its item's linkId.
    answers: &'a [(String, Value)],
}

fn problem(expression: impl Into<String>, message: impl Into<String>) -> Problem {
    Problem {
        expression: expression.into(),
        message: message.into(),
    }
}

fn items(v: Option<&Value>) -> &[Value] {
    v.and_then(Value::as_array).map_or(&[], Vec::as_slice)
}

fn link_id(item: &Value) -> &str {
    item.get("linkId").and_then(Value::as_str).unwrap_or("")
}

fn label(def: &Value) -> String {
    match def.get("text").and_then(Value::as_str) {
        Some(t) => format!("'{}' ({t})", link_id(def)),
        None => format!("'{}'", link_id(def)),
    }
}

fn collect_answers(items_v: Option<&Value>, depth: usize, out: &mut Vec<(String, Value)>) {
    if depth > MAX_DEPTH {
        return;
    }
    for item in items(items_v) {
        let id = link_id(item).to_owned();
        for a in items(item.get("answer")) {
            if let Some((_, v)) = value_of(a) {
                out.push((id.clone(), v.clone()));
            }
            collect_answers(a.get("item"), depth + 1, out);
        }
        collect_answers(item.get("item"), depth + 1, out);
    }
}

/// The one `value[x]` of an answer (or enableWhen): (type suffix, value).
fn value_of(v: &Value) -> Option<(&str, &Value)> {
    let obj = v.as_object()?;
    let mut found = obj
        .iter()
        .filter_map(|(k, x)| Some((k.strip_prefix("value")?, x)))
        .filter(|(k, _)| k.chars().next().is_some_and(char::is_uppercase));
    let first = found.next()?;
    found.next().is_none().then_some(first)
}

/// The `answer[x]` keys of an enableWhen: (type suffix, key).
fn answer_key(v: &Map<String, Value>) -> Vec<(String, &str)> {
    v.iter()
        .filter(|(_, x)| !x.is_null())
        .filter_map(|(k, _)| {
            let rest = k.strip_prefix("answer")?;
            rest.chars()
                .next()
                .is_some_and(char::is_uppercase)
                .then(|| (rest.to_owned(), k.as_str()))
        })
        .collect()
}

/// Whether `def` is enabled, given every answer in the response.
fn enabled(ctx: &Ctx<'_>, def: &Value) -> bool {
    let conds = items(def.get("enableWhen"));
    if conds.is_empty() {
        return true;
    }
    let any = def.get("enableBehavior").and_then(Value::as_str) == Some("any");
    let mut results = conds.iter().map(|c| condition(ctx, c));
    if any {
        results.any(|r| r)
    } else {
        results.all(|r| r)
    }
}

/// One enableWhen. `exists` tests presence; `!=` holds when no answer
/// equals (also when the question is unanswered); the other operators hold
/// when some answer compares so.
fn condition(ctx: &Ctx<'_>, c: &Value) -> bool {
    let question = c.get("question").and_then(Value::as_str).unwrap_or("");
    let op = c.get("operator").and_then(Value::as_str).unwrap_or("");
    let given: Vec<&Value> = ctx
        .answers
        .iter()
        .filter(|(q, _)| q == question)
        .map(|(_, v)| v)
        .collect();
    let Some(obj) = c.as_object() else {
        return false;
    };
    let keys = answer_key(obj);
    let Some((ty, key)) = keys.first() else {
        return false;
    };
    let want = &obj[*key];
    if op == "exists" {
        return want.as_bool() == Some(!given.is_empty());
    }
    let cmp = |a: &Value| compare(ty, a, want);
    match op {
        "=" => given
            .iter()
            .any(|a| cmp(a) == Some(std::cmp::Ordering::Equal)),
        "!=" => !given
            .iter()
            .any(|a| cmp(a) == Some(std::cmp::Ordering::Equal)),
        ">" => given
            .iter()
            .any(|a| cmp(a) == Some(std::cmp::Ordering::Greater)),
        "<" => given
            .iter()
            .any(|a| cmp(a) == Some(std::cmp::Ordering::Less)),
        ">=" => given.iter().any(|a| {
            matches!(
                cmp(a),
                Some(std::cmp::Ordering::Greater | std::cmp::Ordering::Equal)
            )
        }),
        "<=" => given.iter().any(|a| {
            matches!(
                cmp(a),
                Some(std::cmp::Ordering::Less | std::cmp::Ordering::Equal)
            )
        }),
        _ => false,
    }
}

fn compare(ty: &str, a: &Value, b: &Value) -> Option<std::cmp::Ordering> {
    match ty {
        "Boolean" => (a.as_bool()? == b.as_bool()?).then_some(std::cmp::Ordering::Equal),
        "Decimal" | "Integer" => a.as_f64()?.partial_cmp(&b.as_f64()?),
        // ISO forms of one precision order as text.
        "Date" | "DateTime" | "Time" | "String" => Some(a.as_str()?.cmp(b.as_str()?)),
        "Coding" => {
            let same = a.get("code") == b.get("code")
                && (b.get("system").is_none() || a.get("system") == b.get("system"));
            same.then_some(std::cmp::Ordering::Equal)
        }
        "Quantity" => {
            let unit = |q: &Value| q.get("code").or_else(|| q.get("unit")).cloned();
            if unit(a) != unit(b) {
                return None;
            }
            a.get("value")?
                .as_f64()?
                .partial_cmp(&b.get("value")?.as_f64()?)
        }
        _ => None,
    }
}

/// The `value[x]` types an item of `item_type` takes.
fn types_for(item_type: &str) -> &'static [&'static str] {
    match item_type {
        "boolean" => &["Boolean"],
        "decimal" => &["Decimal"],
        "integer" => &["Integer"],
        "date" => &["Date"],
        "dateTime" => &["DateTime"],
        "time" => &["Time"],
        "string" | "text" => &["String"],
        "url" => &["Uri"],
        "choice" => &["Coding"],
        "open-choice" => &["Coding", "String"],
        "attachment" => &["Attachment"],
        "reference" => &["Reference"],
        "quantity" => &["Quantity"],
        _ => &[],
    }
}

/// Whether `answer` (of type `ty`) is one of `def`'s answerOptions.
fn in_options(def: &Value, ty: &str, answer: &Value) -> bool {
    let options = items(def.get("answerOption"));
    if options.is_empty() {
        return true;
    }
    options.iter().any(|o| match value_of(o) {
        Some((oty, ov)) if oty == ty => compare(ty, answer, ov) == Some(std::cmp::Ordering::Equal),
        _ => false,
    })
}

fn check_items(
    ctx: &Ctx<'_>,
    defs: &[Value],
    given: Option<&Value>,
    at: &str,
    depth: usize,
    out: &mut Vec<Problem>,
) {
    if depth > MAX_DEPTH {
        out.push(problem(at, "items are nested too deeply"));
        return;
    }
    let given_items = match given {
        None => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => {
            out.push(problem(at, "item must be a list"));
            return;
        }
    };
    // Order and membership.
    let mut last_pos: Option<usize> = None;
    for (i, g) in given_items.iter().enumerate() {
        let here = format!("{at}.item[{i}]");
        let id = link_id(g);
        match defs.iter().position(|d| link_id(d) == id) {
            None => out.push(problem(
                here,
                format!("item '{id}' is not in the Questionnaire at this level"),
            )),
            Some(pos) => {
                if last_pos.is_some_and(|p| pos < p) {
                    out.push(problem(
                        here,
                        format!("item '{id}' is out of the Questionnaire's order"),
                    ));
                }
                last_pos = Some(last_pos.map_or(pos, |p| p.max(pos)));
            }
        }
    }
    for def in defs {
        let id = link_id(def);
        let occurrences: Vec<(usize, &Value)> = given_items
            .iter()
            .enumerate()
            .filter(|(_, g)| link_id(g) == id)
            .collect();
        let repeats = def.get("repeats").and_then(Value::as_bool) == Some(true);
        let ty = def.get("type").and_then(Value::as_str).unwrap_or("");
        if occurrences.len() > 1 && !(repeats && ty == "group") {
            out.push(problem(
                format!("{at}.item[{}]", occurrences[1].0),
                format!("item {} appears more than once", label(def)),
            ));
        }
        let on = enabled(ctx, def);
        for (i, g) in &occurrences {
            let here = format!("{at}.item[{i}]");
            check_item(ctx, def, g, &here, on, depth, out);
        }
        let required = def.get("required").and_then(Value::as_bool) == Some(true);
        if ctx.completed && on && required {
            let answered = occurrences.iter().any(|(_, g)| match ty {
                "group" => true,
                "display" => true,
                _ => !items(g.get("answer")).is_empty(),
            });
            if !answered {
                out.push(problem(
                    at.to_owned(),
                    format!("required item {} is not answered", label(def)),
                ));
            }
        }
        // A required group absent entirely still needs its required items.
        if ctx.completed && on && ty == "group" && occurrences.is_empty() && required {
            check_items(ctx, items(def.get("item")), None, at, depth + 1, out);
        }
    }
}

fn check_item(
    ctx: &Ctx<'_>,
    def: &Value,
    g: &Value,
    here: &str,
    on: bool,
    depth: usize,
    out: &mut Vec<Problem>,
) {
    let ty = def.get("type").and_then(Value::as_str).unwrap_or("");
    let answers = match g.get("answer") {
        None => &[][..],
        Some(Value::Array(a)) => a.as_slice(),
        Some(_) => {
            out.push(problem(here, "answer must be a list"));
            return;
        }
    };
    if !on {
        if !answers.is_empty() || !items(g.get("item")).is_empty() {
            out.push(problem(
                here,
                format!(
                    "item {} is not enabled by the answers given, so it must not be answered",
                    label(def)
                ),
            ));
        }
        return;
    }
    match ty {
        "group" => {
            if !answers.is_empty() {
                out.push(problem(
                    here,
                    format!("group {} takes no answer", label(def)),
                ));
            }
            check_items(
                ctx,
                items(def.get("item")),
                g.get("item"),
                here,
                depth + 1,
                out,
            );
            return;
        }
        "display" => {
            if !answers.is_empty() || !items(g.get("item")).is_empty() {
                out.push(problem(
                    here,
                    format!("display item {} takes no answer", label(def)),
                ));
            }
            return;
        }
        _ => {}
    }
    let repeats = def.get("repeats").and_then(Value::as_bool) == Some(true);
    if answers.len() > 1 && !repeats {
        out.push(problem(
            here,
            format!("item {} takes one answer", label(def)),
        ));
    }
    let allowed = types_for(ty);
    let max_len = def.get("maxLength").and_then(Value::as_u64);
    for (j, a) in answers.iter().enumerate() {
        let at = format!("{here}.answer[{j}]");
        let Some((aty, av)) = value_of(a) else {
            out.push(problem(
                at,
                format!("an answer to {} needs exactly one value[x]", label(def)),
            ));
            continue;
        };
        if !allowed.contains(&aty) {
            out.push(problem(
                at.clone(),
                format!("item {} (type {ty}) cannot take a value{aty}", label(def)),
            ));
            continue;
        }
        let choice = matches!(ty, "choice" | "open-choice");
        // Free text of an open choice is not held to the options.
        if (!choice || aty == "Coding") && !in_options(def, aty, av) {
            out.push(problem(
                at.clone(),
                format!("the answer to {} is not one of its options", label(def)),
            ));
        }
        if let (Some(max), Some(text)) = (max_len, av.as_str()) {
            if text.chars().count() as u64 > max {
                out.push(problem(
                    at.clone(),
                    format!(
                        "the answer to {} is longer than {max} characters",
                        label(def)
                    ),
                ));
            }
        }
        // Items under an answer (a question with sub-questions).
        if !items(a.get("item")).is_empty() {
            check_items(
                ctx,
                items(def.get("item")),
                a.get("item"),
                &at,
                depth + 1,
                out,
            );
        }
    }
}

#[cfg(test)]
mod tests;

//! SIMPLE rules: `{"operator":"AND|OR","conditions":[...]}`, where each condition is
//! `{"attribute","operator","value"}` or a nested group, so `A AND (B OR C)` can be said.
//!
//! A rule is parsed and checked once, at write time (a malformed rule is refused there), into
//! a tree whose values are already typed; evaluating it allocates nothing. At evaluation time
//! a type mismatch (`gt` on a string, `startsWith` on a number) or a missing attribute is a
//! non-match, never an error: targeting must not fail because a client sent an odd context.

use std::collections::HashSet;

use serde_json::{Map, Value};

/// Deepest nesting of groups a rule may use.
pub const MAX_DEPTH: usize = 16;
/// Most conditions one rule may hold.
pub const MAX_CONDITIONS: usize = 1_000;
/// Lists longer than this are matched through a hash set.
const HASHED_LIST_LEN: usize = 16;

/// What a rule is evaluated against: the user id (the special `userId` attribute) and the
/// attributes sent with the evaluation.
#[derive(Clone, Copy, Debug)]
pub struct Context<'a> {
    pub user_id: &'a str,
    pub attributes: &'a Map<String, Value>,
}

/// A parsed SIMPLE rule.
#[derive(Clone, Debug)]
pub struct SimpleRule {
    root: Node,
    conditions: usize,
}

#[derive(Clone, Debug)]
enum Node {
    Group { any: bool, children: Vec<Node> },
    Condition(Condition),
}

#[derive(Clone, Debug)]
struct Condition {
    attribute: Attribute,
    test: Test,
}

#[derive(Clone, Debug)]
enum Attribute {
    UserId,
    Named(String),
}

#[derive(Clone, Debug, PartialEq)]
enum Scalar {
    Str(String),
    Num(f64),
    Bool(bool),
}

#[derive(Clone, Debug)]
enum ScalarList {
    Strings(Vec<String>),
    HashedStrings(HashSet<String>),
    Numbers(Vec<f64>),
    Bools(Vec<bool>),
}

#[derive(Clone, Debug)]
enum Test {
    Eq(Scalar),
    Neq(Scalar),
    Gt(f64),
    Gte(f64),
    Lt(f64),
    Lte(f64),
    In(ScalarList),
    NotIn(ScalarList),
    Contains(Scalar),
    StartsWith(String),
    EndsWith(String),
}

/// Every condition operator, as written in rules.
pub const OPERATORS: [&str; 11] =
    ["eq", "neq", "gt", "gte", "lt", "lte", "in", "notIn", "contains", "startsWith", "endsWith"];

/// An attribute's value seen through the types conditions compare.
enum Seen<'a> {
    Str(&'a str),
    Num(f64),
    Bool(bool),
    List(&'a [Value]),
    Other,
}

impl<'a> Seen<'a> {
    fn of(value: &'a Value) -> Self {
        match value {
            Value::String(s) => Seen::Str(s),
            Value::Number(n) => n.as_f64().map_or(Seen::Other, Seen::Num),
            Value::Bool(b) => Seen::Bool(*b),
            Value::Array(items) => Seen::List(items),
            _ => Seen::Other,
        }
    }

    /// `Some(equal)` when both sides have the same scalar type, `None` on a type mismatch.
    fn equals(&self, scalar: &Scalar) -> Option<bool> {
        match (self, scalar) {
            (Seen::Str(a), Scalar::Str(b)) => Some(*a == b.as_str()),
            (Seen::Num(a), Scalar::Num(b)) => Some(a == b),
            (Seen::Bool(a), Scalar::Bool(b)) => Some(a == b),
            _ => None,
        }
    }

    /// `Some(contained)` when the value has the list's element type, `None` otherwise.
    fn member_of(&self, list: &ScalarList) -> Option<bool> {
        match (self, list) {
            (Seen::Str(a), ScalarList::Strings(items)) => Some(items.iter().any(|item| item == a)),
            (Seen::Str(a), ScalarList::HashedStrings(items)) => Some(items.contains(*a)),
            (Seen::Num(a), ScalarList::Numbers(items)) => Some(items.contains(a)),
            (Seen::Bool(a), ScalarList::Bools(items)) => Some(items.contains(a)),
            _ => None,
        }
    }

    fn number(&self) -> Option<f64> {
        match self {
            Seen::Num(n) => Some(*n),
            _ => None,
        }
    }
}

impl SimpleRule {
    /// Parses and checks the `ruleContent` of a SIMPLE segment.
    pub fn parse(text: &str) -> Result<Self, String> {
        let value: Value = serde_json::from_str(text).map_err(|e| format!("ruleContent is not valid JSON: {e}"))?;
        Self::from_json(&value)
    }

    /// Checks an already parsed rule document.
    pub fn from_json(value: &Value) -> Result<Self, String> {
        let mut conditions = 0;
        let root = parse_group(value, "rule", 1, &mut conditions)?;
        Ok(Self { root, conditions })
    }

    /// How many conditions the rule holds.
    pub fn condition_count(&self) -> usize {
        self.conditions
    }

    /// Whether the context satisfies the rule.
    pub fn matches(&self, context: &Context<'_>) -> bool {
        self.root.matches(context)
    }
}

impl Node {
    fn matches(&self, context: &Context<'_>) -> bool {
        match self {
            Node::Group { any: true, children } => children.iter().any(|child| child.matches(context)),
            Node::Group { any: false, children } => children.iter().all(|child| child.matches(context)),
            Node::Condition(condition) => condition.matches(context),
        }
    }
}

impl Condition {
    fn matches(&self, context: &Context<'_>) -> bool {
        let seen = match &self.attribute {
            Attribute::UserId => user_id(context.user_id, &self.test),
            Attribute::Named(name) => match context.attributes.get(name) {
                Some(value) => Seen::of(value),
                None => return false,
            },
        };
        match &self.test {
            Test::Eq(scalar) => seen.equals(scalar) == Some(true),
            Test::Neq(scalar) => seen.equals(scalar) == Some(false),
            Test::Gt(bound) => seen.number().is_some_and(|n| n > *bound),
            Test::Gte(bound) => seen.number().is_some_and(|n| n >= *bound),
            Test::Lt(bound) => seen.number().is_some_and(|n| n < *bound),
            Test::Lte(bound) => seen.number().is_some_and(|n| n <= *bound),
            Test::In(list) => seen.member_of(list) == Some(true),
            Test::NotIn(list) => seen.member_of(list) == Some(false),
            Test::Contains(needle) => match (&seen, needle) {
                (Seen::Str(haystack), Scalar::Str(needle)) => haystack.contains(needle.as_str()),
                (Seen::List(items), needle) => items.iter().any(|item| Seen::of(item).equals(needle) == Some(true)),
                _ => false,
            },
            Test::StartsWith(prefix) => matches!(seen, Seen::Str(s) if s.starts_with(prefix.as_str())),
            Test::EndsWith(suffix) => matches!(seen, Seen::Str(s) if s.ends_with(suffix.as_str())),
        }
    }
}

/// The user id as `test` compares it: a user id is text, but seed 000's ids are integers, so
/// against numbers (`"value": [73234]`, `"gt": 1000`) an id that reads as a number is that number.
fn user_id<'a>(id: &'a str, test: &Test) -> Seen<'a> {
    let numeric = matches!(
        test,
        Test::Eq(Scalar::Num(_))
            | Test::Neq(Scalar::Num(_))
            | Test::Gt(_)
            | Test::Gte(_)
            | Test::Lt(_)
            | Test::Lte(_)
            | Test::In(ScalarList::Numbers(_))
            | Test::NotIn(ScalarList::Numbers(_))
    );
    match id.trim().parse::<f64>() {
        Ok(number) if numeric && number.is_finite() => Seen::Num(number),
        _ => Seen::Str(id),
    }
}

fn parse_group(value: &Value, path: &str, depth: usize, count: &mut usize) -> Result<Node, String> {
    let Value::Object(object) = value else {
        return Err(format!("{path} must be an object with \"conditions\""));
    };
    if depth > MAX_DEPTH {
        return Err(format!("{path}: groups nest deeper than {MAX_DEPTH} levels"));
    }
    if let Some(unknown) = object.keys().find(|k| !matches!(k.as_str(), "operator" | "conditions")) {
        return Err(format!("{path}: unknown field \"{unknown}\" in a group (expected operator, conditions)"));
    }
    let any = match object.get("operator") {
        None => false,
        Some(Value::String(op)) if op.eq_ignore_ascii_case("AND") => false,
        Some(Value::String(op)) if op.eq_ignore_ascii_case("OR") => true,
        Some(other) => return Err(format!("{path}.operator must be \"AND\" or \"OR\", not {other}")),
    };
    let Some(Value::Array(items)) = object.get("conditions") else {
        return Err(format!("{path}.conditions must be an array"));
    };
    if items.is_empty() {
        return Err(format!("{path}.conditions must not be empty"));
    }
    let mut children = Vec::with_capacity(items.len());
    for (index, item) in items.iter().enumerate() {
        let item_path = format!("{path}.conditions[{index}]");
        let is_group = item.as_object().is_some_and(|o| o.contains_key("conditions"));
        children.push(if is_group {
            parse_group(item, &item_path, depth + 1, count)?
        } else {
            *count += 1;
            if *count > MAX_CONDITIONS {
                return Err(format!("a rule holds at most {MAX_CONDITIONS} conditions"));
            }
            Node::Condition(parse_condition(item, &item_path)?)
        });
    }
    Ok(Node::Group { any, children })
}

fn parse_condition(value: &Value, path: &str) -> Result<Condition, String> {
    let Value::Object(object) = value else {
        return Err(format!("{path} must be a condition object or a group"));
    };
    if let Some(unknown) = object.keys().find(|k| !matches!(k.as_str(), "attribute" | "operator" | "value")) {
        return Err(format!("{path}: unknown field \"{unknown}\" (expected attribute, operator, value)"));
    }
    let attribute = match object.get("attribute") {
        Some(Value::String(name)) if !name.trim().is_empty() => name.clone(),
        _ => return Err(format!("{path}.attribute must be a non-empty string")),
    };
    let operator = match object.get("operator") {
        Some(Value::String(op)) => op.as_str(),
        _ => return Err(format!("{path}.operator must be one of {}", OPERATORS.join(", "))),
    };
    let Some(value) = object.get("value") else {
        return Err(format!("{path}.value is required"));
    };
    let value_path = format!("{path}.value");
    let test = match operator {
        "eq" => Test::Eq(scalar(value, &value_path)?),
        "neq" => Test::Neq(scalar(value, &value_path)?),
        "gt" => Test::Gt(number(value, &value_path)?),
        "gte" => Test::Gte(number(value, &value_path)?),
        "lt" => Test::Lt(number(value, &value_path)?),
        "lte" => Test::Lte(number(value, &value_path)?),
        "in" => Test::In(scalar_list(value, &value_path)?),
        "notIn" => Test::NotIn(scalar_list(value, &value_path)?),
        "contains" => Test::Contains(scalar(value, &value_path)?),
        "startsWith" => Test::StartsWith(string(value, &value_path)?),
        "endsWith" => Test::EndsWith(string(value, &value_path)?),
        other => {
            return Err(format!("{path}.operator \"{other}\" is not one of {}", OPERATORS.join(", ")));
        }
    };
    let attribute = if attribute == "userId" { Attribute::UserId } else { Attribute::Named(attribute) };
    Ok(Condition { attribute, test })
}

fn scalar(value: &Value, path: &str) -> Result<Scalar, String> {
    match value {
        Value::String(s) => Ok(Scalar::Str(s.clone())),
        Value::Number(n) => n.as_f64().map(Scalar::Num).ok_or_else(|| format!("{path} is not a finite number")),
        Value::Bool(b) => Ok(Scalar::Bool(*b)),
        _ => Err(format!("{path} must be a string, a number or a boolean")),
    }
}

fn number(value: &Value, path: &str) -> Result<f64, String> {
    value.as_f64().ok_or_else(|| format!("{path} must be a number"))
}

fn string(value: &Value, path: &str) -> Result<String, String> {
    value.as_str().map(str::to_owned).ok_or_else(|| format!("{path} must be a string"))
}

fn scalar_list(value: &Value, path: &str) -> Result<ScalarList, String> {
    let Value::Array(items) = value else {
        return Err(format!("{path} must be an array"));
    };
    let kind_error = || format!("{path} must be a non-empty array of strings, of numbers or of booleans (one type)");
    match items.first() {
        Some(Value::String(_)) => {
            let strings: Option<Vec<String>> = items.iter().map(|v| v.as_str().map(str::to_owned)).collect();
            let strings = strings.ok_or_else(kind_error)?;
            Ok(if strings.len() > HASHED_LIST_LEN {
                ScalarList::HashedStrings(strings.into_iter().collect())
            } else {
                ScalarList::Strings(strings)
            })
        }
        Some(Value::Number(_)) => {
            items.iter().map(Value::as_f64).collect::<Option<Vec<_>>>().map(ScalarList::Numbers).ok_or_else(kind_error)
        }
        Some(Value::Bool(_)) => {
            items.iter().map(Value::as_bool).collect::<Option<Vec<_>>>().map(ScalarList::Bools).ok_or_else(kind_error)
        }
        _ => Err(kind_error()),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn check(rule: Value, user: &str, attributes: Value) -> bool {
        let rule = SimpleRule::from_json(&rule).expect("valid rule");
        let attributes = attributes.as_object().cloned().unwrap_or_default();
        rule.matches(&Context { user_id: user, attributes: &attributes })
    }

    #[test]
    fn nested_groups_say_a_and_b_or_c() {
        let rule = json!({"operator": "AND", "conditions": [
            {"attribute": "plan", "operator": "eq", "value": "premium"},
            {"operator": "OR", "conditions": [
                {"attribute": "country", "operator": "eq", "value": "BR"},
                {"attribute": "age", "operator": "gte", "value": 18}
            ]}
        ]});
        assert!(check(rule.clone(), "u", json!({"plan": "premium", "country": "BR"})));
        assert!(check(rule.clone(), "u", json!({"plan": "premium", "country": "US", "age": 30})));
        assert!(!check(rule.clone(), "u", json!({"plan": "premium", "country": "US", "age": 3})));
        assert!(!check(rule, "u", json!({"plan": "free", "country": "BR"})));
    }

    #[test]
    fn malformed_rules_are_refused_with_a_path() {
        for (rule, fragment) in [
            (json!([]), "must be an object"),
            (json!({"conditions": []}), "must not be empty"),
            (json!({"operator": "XOR", "conditions": [{"attribute": "a", "operator": "eq", "value": 1}]}), "operator"),
            (json!({"conditions": [{"attribute": "a", "operator": "like", "value": 1}]}), "\"like\""),
            (json!({"conditions": [{"attribute": "a", "operator": "gt", "value": "x"}]}), "must be a number"),
            (json!({"conditions": [{"attribute": "a", "operator": "in", "value": []}]}), "non-empty array"),
            (json!({"conditions": [{"attribute": "a", "operator": "in", "value": ["a", 1]}]}), "one type"),
            (json!({"conditions": [{"attribute": "", "operator": "eq", "value": 1}]}), "attribute"),
            (json!({"conditions": [{"attribute": "a", "operator": "eq"}]}), "value is required"),
            (json!({"conditions": [{"attribute": "a", "operator": "eq", "value": 1, "x": 1}]}), "unknown field"),
        ] {
            let error = SimpleRule::from_json(&rule).expect_err(&rule.to_string());
            assert!(error.contains(fragment), "{rule}: {error}");
        }
        let mut deep = json!({"attribute": "a", "operator": "eq", "value": 1});
        for _ in 0..=MAX_DEPTH {
            deep = json!({"conditions": [deep]});
        }
        assert!(SimpleRule::from_json(&deep).unwrap_err().contains("deeper"));
    }

    #[test]
    fn numeric_user_ids_compare_as_numbers_against_numbers() {
        let listed = json!({"conditions": [{"attribute": "userId", "operator": "in", "value": [73234, 1000]}]});
        assert!(check(listed.clone(), "73234", json!({})));
        assert!(!check(listed.clone(), "73235", json!({})));
        assert!(!check(listed, "abc", json!({})));
        let above = json!({"conditions": [{"attribute": "userId", "operator": "gt", "value": 1000}]});
        assert!(check(above.clone(), "73234", json!({})));
        assert!(!check(above, "999", json!({})));
        let text = json!({"conditions": [{"attribute": "userId", "operator": "eq", "value": "007"}]});
        assert!(check(text.clone(), "007", json!({})), "against text, the id is text");
        assert!(!check(text, "7", json!({})));
    }

    #[test]
    fn long_lists_match_like_short_ones() {
        let users: Vec<String> = (0..100).map(|i| format!("user-{i}")).collect();
        let rule = json!({"conditions": [{"attribute": "userId", "operator": "in", "value": users}]});
        assert!(check(rule.clone(), "user-42", json!({})));
        assert!(!check(rule, "user-420", json!({})));
    }
}

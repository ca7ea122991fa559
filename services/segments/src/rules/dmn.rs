//! DMN rules: a DMN XML model whose decision (a decision table with any hit policy: FIRST,
//! UNIQUE, COLLECT, ...) is evaluated with DecisionToolkit against the user's attributes.
//!
//! A model is parsed, validated and compiled once (at write time to refuse a bad one with the
//! parser's reason, then once per segment version into the evaluation cache). The decision
//! evaluated is the model's top-level one: the first decision no other decision requires.
//!
//! DecisionToolkit is not written for hostile input, so parsing and evaluation run under
//! `catch_unwind`: a model that makes it panic is a 400 at write time and a non-match at
//! evaluation time, never a crashed worker.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::str::FromStr;
use std::sync::Arc;

use dsntk_evaluator::ModelEvaluator;
use dsntk_feel::context::FeelContext;
use dsntk_feel::values::Value as Feel;
use dsntk_feel::{FeelNumber, Name};
use dsntk_model::{DmnElement, NamedElement};
use serde_json::{Map, Value};

use super::simple::Context;

/// A compiled DMN model and the decision a segment evaluates.
pub struct DmnRule {
    evaluator: Arc<ModelEvaluator>,
    namespace: String,
    model_name: String,
    decision: String,
}

impl std::fmt::Debug for DmnRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmnRule").field("model", &self.model_name).field("decision", &self.decision).finish()
    }
}

/// What a DMN model is called, for the decisions resource.
#[derive(Clone, Debug)]
pub struct DmnSummary {
    pub model_name: String,
    pub decision: String,
}

impl DmnRule {
    /// Parses, validates and compiles a DMN model.
    pub fn compile(xml: &str) -> Result<Self, String> {
        match catch_unwind(AssertUnwindSafe(|| compile_unguarded(xml))) {
            Ok(outcome) => outcome,
            Err(_) => Err("the DMN model could not be compiled (the evaluator rejected it)".to_owned()),
        }
    }

    pub fn summary(&self) -> DmnSummary {
        DmnSummary { model_name: self.model_name.clone(), decision: self.decision.clone() }
    }

    /// Evaluates the decision against `input` (see [`feel_input`]); membership per
    /// [`is_member`].
    pub fn matches(&self, input: &FeelContext) -> bool {
        catch_unwind(AssertUnwindSafe(|| {
            let output = self.evaluator.evaluate_invocable(&self.namespace, &self.model_name, &self.decision, input);
            is_member(&output)
        }))
        .unwrap_or(false)
    }
}

fn compile_unguarded(xml: &str) -> Result<DmnRule, String> {
    let definitions = dsntk_model::parse(xml).map_err(|e| format!("invalid DMN model: {e}"))?;
    let decisions = definitions.decisions();
    let required: Vec<String> = decisions
        .iter()
        .flat_map(|decision| decision.information_requirements())
        .filter_map(|requirement| requirement.required_decision().as_ref().map(|href| href.id().to_owned()))
        .collect();
    let top = decisions
        .iter()
        .find(|decision| !required.iter().any(|id| id == decision.id()))
        .or_else(|| decisions.first())
        .ok_or_else(|| "invalid DMN model: it has no decision".to_owned())?;
    let decision = top.name().to_owned();
    let namespace = definitions.namespace().to_owned();
    let model_name = definitions.name().to_owned();
    let evaluator = ModelEvaluator::new(&[definitions]).map_err(|e| format!("invalid DMN model: {e}"))?;
    Ok(DmnRule { evaluator, namespace, model_name, decision })
}

/// The evaluation context as FEEL input data: every attribute, and `userId`.
pub fn feel_input(context: &Context<'_>) -> FeelContext {
    let mut input = FeelContext::default();
    for (name, value) in context.attributes {
        input.set_entry(&Name::from(name.as_str()), feel_value(value));
    }
    input.set_entry(&Name::from("userId"), Feel::String(context.user_id.to_owned()));
    input
}

fn feel_value(value: &Value) -> Feel {
    match value {
        Value::Null => Feel::Null(None),
        Value::Bool(b) => Feel::Boolean(*b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => Feel::Number(FeelNumber::from(i)),
            None => FeelNumber::from_str(&n.to_string()).map(Feel::Number).unwrap_or(Feel::Null(None)),
        },
        Value::String(s) => Feel::String(s.clone()),
        Value::Array(items) => Feel::List(items.iter().map(feel_value).collect()),
        Value::Object(object) => Feel::Context(feel_context(object)),
    }
}

fn feel_context(object: &Map<String, Value>) -> FeelContext {
    let mut context = FeelContext::default();
    for (name, value) in object {
        context.set_entry(&Name::from(name.as_str()), feel_value(value));
    }
    context
}

/// Membership from a decision's output, as the seed says: `true`; an object whose `isMember`,
/// `match` or `result` is `true`; or any truthy value (a non-zero number, a non-empty string,
/// a list holding a truthy item, which is how COLLECT answers). An object without those fields
/// is not a member: a table with several outputs would otherwise match everybody.
pub fn is_member(output: &Feel) -> bool {
    match output {
        Feel::Boolean(b) => *b,
        Feel::Number(n) => !n.is_zero(),
        Feel::String(s) => !s.is_empty(),
        Feel::List(items) => items.iter().any(is_member),
        Feel::Context(context) => ["isMember", "match", "result"]
            .iter()
            .any(|field| matches!(context.get_entry(&Name::from(*field)), Some(Feel::Boolean(true)))),
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const FIRST: &str = r##"<?xml version="1.0" encoding="UTF-8"?>
<definitions xmlns="https://www.omg.org/spec/DMN/20191111/MODEL/" namespace="https://chatmesh.test/first" name="first" id="_first">
  <decision name="Eligible" id="d_eligible">
    <variable typeRef="boolean" name="Eligible" id="v_eligible"/>
    <informationRequirement id="ir_age"><requiredInput href="#i_age"/></informationRequirement>
    <informationRequirement id="ir_country"><requiredInput href="#i_country"/></informationRequirement>
    <decisionTable hitPolicy="FIRST" id="dt_eligible">
      <input id="in_age"><inputExpression typeRef="number" id="ie_age"><text>age</text></inputExpression></input>
      <input id="in_country"><inputExpression typeRef="string" id="ie_country"><text>country</text></inputExpression></input>
      <output id="out_eligible" typeRef="boolean"/>
      <rule id="r1"><inputEntry id="r1a"><text>&lt; 18</text></inputEntry><inputEntry id="r1b"><text>-</text></inputEntry><outputEntry id="r1o"><text>false</text></outputEntry></rule>
      <rule id="r2"><inputEntry id="r2a"><text>-</text></inputEntry><inputEntry id="r2b"><text>"BR","US"</text></inputEntry><outputEntry id="r2o"><text>true</text></outputEntry></rule>
      <rule id="r3"><inputEntry id="r3a"><text>-</text></inputEntry><inputEntry id="r3b"><text>-</text></inputEntry><outputEntry id="r3o"><text>false</text></outputEntry></rule>
    </decisionTable>
  </decision>
  <inputData name="age" id="i_age"><variable typeRef="number" name="age" id="iv_age"/></inputData>
  <inputData name="country" id="i_country"><variable typeRef="string" name="country" id="iv_country"/></inputData>
</definitions>"##;

    fn member(rule: &DmnRule, attributes: serde_json::Value) -> bool {
        let attributes = attributes.as_object().cloned().unwrap_or_default();
        rule.matches(&feel_input(&Context { user_id: "u1", attributes: &attributes }))
    }

    #[test]
    fn first_hit_policy_decides_by_the_first_matching_rule() {
        let rule = DmnRule::compile(FIRST).expect("compiles");
        assert_eq!(rule.summary().decision, "Eligible");
        assert!(member(&rule, json!({"age": 30, "country": "BR"})));
        assert!(!member(&rule, json!({"age": 15, "country": "BR"})));
        assert!(!member(&rule, json!({"age": 30, "country": "DE"})));
    }

    #[test]
    fn broken_models_are_refused_with_a_reason() {
        assert!(DmnRule::compile("<definitions").unwrap_err().contains("invalid DMN model"));
        assert!(DmnRule::compile("not xml at all").is_err());
        assert!(DmnRule::compile(&FIRST.replace("hitPolicy=\"FIRST\"", "hitPolicy=\"SOMETIMES\"")).is_err());
    }
}

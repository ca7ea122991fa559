//! Segment rules: SIMPLE (conditions on attributes) and DMN (a decision model), compiled from
//! what a segment stores into something evaluation can run many times.

#[cfg(feature = "dmn")]
pub mod dmn;
pub mod simple;

#[cfg(feature = "dmn")]
use std::cell::OnceCell;

pub use simple::{Context, SimpleRule};

/// How a segment's `ruleContent` is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum RuleType {
    Simple,
    Dmn,
}

impl RuleType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Simple => "SIMPLE",
            Self::Dmn => "DMN",
        }
    }

    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "SIMPLE" => Some(Self::Simple),
            "DMN" => Some(Self::Dmn),
            _ => None,
        }
    }
}

/// A rule ready to evaluate.
#[derive(Debug)]
pub enum CompiledRule {
    Simple(SimpleRule),
    #[cfg(feature = "dmn")]
    Dmn(dmn::DmnRule),
}

/// One evaluation's input, shared by every segment evaluated for it; the FEEL form DMN rules
/// need is built once, on first use.
pub struct Input<'a> {
    pub context: Context<'a>,
    #[cfg(feature = "dmn")]
    feel: OnceCell<dsntk_feel::context::FeelContext>,
}

impl<'a> Input<'a> {
    pub fn new(context: Context<'a>) -> Self {
        Self {
            context,
            #[cfg(feature = "dmn")]
            feel: OnceCell::new(),
        }
    }
}

impl CompiledRule {
    pub fn rule_type(&self) -> RuleType {
        match self {
            Self::Simple(_) => RuleType::Simple,
            #[cfg(feature = "dmn")]
            Self::Dmn(_) => RuleType::Dmn,
        }
    }

    pub fn matches(&self, input: &Input<'_>) -> bool {
        match self {
            Self::Simple(rule) => rule.matches(&input.context),
            #[cfg(feature = "dmn")]
            Self::Dmn(rule) => rule.matches(input.feel.get_or_init(|| dmn::feel_input(&input.context))),
        }
    }
}

/// Compiles what a segment stores. `Ok(None)`: the segment has no rule (membership comes
/// from explicit assignment and percentage only). `Err`: the reason the rule is refused.
pub fn compile(
    rule_type: RuleType,
    rule_content: Option<&str>,
    decision_xml: Option<&str>,
) -> Result<Option<CompiledRule>, String> {
    match rule_type {
        RuleType::Simple => rule_content.map(|text| SimpleRule::parse(text).map(CompiledRule::Simple)).transpose(),
        RuleType::Dmn => {
            let xml = rule_content
                .or(decision_xml)
                .ok_or_else(|| "a DMN segment needs ruleContent (DMN XML) or decisionId".to_owned())?;
            compile_dmn(xml).map(Some)
        }
    }
}

#[cfg(feature = "dmn")]
fn compile_dmn(xml: &str) -> Result<CompiledRule, String> {
    dmn::DmnRule::compile(xml).map(CompiledRule::Dmn)
}

#[cfg(not(feature = "dmn"))]
fn compile_dmn(_xml: &str) -> Result<CompiledRule, String> {
    Err(NO_DMN.to_owned())
}

/// Why DMN is refused by a build without the `dmn` feature.
pub const NO_DMN: &str = "this build has no DMN support (the segments crate was built without its `dmn` feature)";

/// The model and decision names of a DMN model, after checking it compiles.
pub fn describe_dmn(xml: &str) -> Result<(String, String), String> {
    #[cfg(feature = "dmn")]
    {
        let summary = dmn::DmnRule::compile(xml)?.summary();
        Ok((summary.model_name, summary.decision))
    }
    #[cfg(not(feature = "dmn"))]
    {
        let _ = xml;
        Err(NO_DMN.to_owned())
    }
}

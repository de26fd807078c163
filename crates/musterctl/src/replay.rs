//! `musterctl replay INCIDENT`: re-runs an incident's recorded inputs (the report and every fact
//! update, from its timeline) through the domain core (rulebook grading, the jurisdiction tree's
//! lead, the plan book) and compares the outcome with what the services recorded: the grades and
//! leads of its `graded` events and the plans of its `units_assigned` events. With
//! `--region-dir` it replays against another rulebook: how a rule change is tested on history.

use domain::grade::{DensityClass, Facts, Grade};
use domain::region::Region;
use serde::Serialize;

/// One input of the incident as recorded: the report or a fact update.
#[derive(Debug, Clone, PartialEq)]
pub struct Input {
    pub at_unix_ms: i64,
    pub what: String,
    pub facts: Facts,
}

/// What the rulebook says for some facts.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Outcome {
    pub grade: Option<String>,
    pub lead_code: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct Step {
    pub at_unix_ms: i64,
    pub input: String,
    /// The grading this input produced (None: no new grading, e.g. a proposed downgrade).
    pub replayed: Option<Outcome>,
}

/// `12 dead, 3 missing, 40 seriously injured, loss 5 CNY, M6.5` → facts.
pub fn parse_facts(text: &str) -> Facts {
    let mut facts = Facts::default();
    for part in text.split(", ").map(str::trim) {
        let number = |suffix: &str| {
            part.strip_suffix(suffix)
                .and_then(|n| n.trim().parse().ok())
        };
        if let Some(n) = number(" dead") {
            facts.deaths = Some(n);
        } else if let Some(n) = number(" missing") {
            facts.missing = Some(n);
        } else if let Some(n) = number(" seriously injured") {
            facts.serious_injuries = Some(n);
        } else if let Some(n) = part
            .strip_prefix("loss ")
            .and_then(|r| r.strip_suffix(" CNY"))
            .and_then(|n| n.parse().ok())
        {
            facts.direct_loss_cny = Some(n);
        } else if let Some(m) = part.strip_prefix('M').and_then(|m| m.parse().ok()) {
            facts.magnitude = Some(m);
        }
    }
    facts
}

/// The inputs in a timeline: `reported` (facts in its parentheses) and `updated` (facts after
/// the colon: the merged facts as stored).
pub fn inputs(timeline: &[(i64, String, String)]) -> Vec<Input> {
    let mut out = Vec::new();
    for (at, event_type, description) in timeline {
        let facts_text = match event_type.as_str() {
            "reported" => {
                let head = description.split(" warning").next().unwrap_or(description);
                let head = head.rsplit_once(", ").map_or(head, |(h, tail)| {
                    if ["red", "orange", "yellow", "blue"].contains(&tail) {
                        h
                    } else {
                        head
                    }
                });
                match (head.rfind(" ("), head.ends_with(')')) {
                    (Some(open), true) => head[open + 2..head.len() - 1].to_owned(),
                    _ => String::new(),
                }
            }
            "updated" => {
                let after = description.split_once(": ").map_or("", |(_, a)| a);
                after.split(" (").next().unwrap_or("").to_owned()
            }
            _ => continue,
        };
        out.push(Input {
            at_unix_ms: *at,
            what: format!(
                "{event_type}: {}",
                if facts_text.is_empty() {
                    "no facts"
                } else {
                    &facts_text
                }
            ),
            facts: parse_facts(&facts_text),
        });
    }
    out
}

fn rank(grade: Option<Grade>) -> u8 {
    match grade {
        Some(Grade::I) => 1,
        Some(Grade::II) => 2,
        Some(Grade::III) => 3,
        Some(Grade::IV) => 4,
        None => 5,
    }
}

/// Grades `facts` for an incident of `kind` in `townships` as escalation does.
pub fn grade(
    region: &Region,
    kind: &str,
    townships: &[&str],
    facts: &Facts,
) -> Result<(Option<Grade>, String), String> {
    let sub_type = domain::class::sub_type(kind).ok_or_else(|| format!("unknown kind {kind:?}"))?;
    let township = region
        .tree
        .get(townships[0])
        .ok_or_else(|| format!("unknown township {:?}", townships[0]))?;
    let density = township.density.unwrap_or(DensityClass::FairlyDense);
    let province = region.tree.province_of(townships[0]);
    let decision = region.rulebook.grade(
        sub_type,
        facts,
        density,
        province.map(|p| p.code.as_str()),
        province.and_then(|p| p.gdp_cny),
    );
    let lead = region
        .tree
        .lead_for(decision.grade, townships)
        .map_err(|e| e.to_string())?;
    Ok((decision.grade, lead.code.clone()))
}

/// Replays the inputs: the first grading always; later ones only when the grade rises (an
/// upgrade applies at once; a downgrade waits for an officer and emits no grading).
pub fn replay(
    region: &Region,
    kind: &str,
    townships: &[&str],
    inputs: &[Input],
) -> Result<Vec<Step>, String> {
    let mut current: Option<Option<Grade>> = None;
    let mut steps = Vec::new();
    for input in inputs {
        let (grade, lead_code) = grade(region, kind, townships, &input.facts)?;
        let emits = match current {
            None => true,
            Some(now) => rank(grade) < rank(now),
        };
        if emits {
            current = Some(grade);
        }
        steps.push(Step {
            at_unix_ms: input.at_unix_ms,
            input: input.what.clone(),
            replayed: emits.then(|| Outcome {
                grade: grade.map(|g| g.roman().to_owned()),
                lead_code,
            }),
        });
    }
    Ok(steps)
}

/// The plan a grading calls for, as dispatch chooses it.
pub fn plan_id(region: &Region, kind: &str, grade: Option<&str>) -> Option<String> {
    let grade = grade.and_then(Grade::from_roman);
    region.plans.plan_for(kind, grade).map(|p| p.id.clone())
}

/// Where the recorded and the replayed runs first part, if they do.
pub fn first_divergence(recorded: &[Outcome], replayed: &[Outcome]) -> Option<String> {
    for (i, pair) in recorded.iter().zip(replayed).enumerate() {
        if pair.0 != pair.1 {
            return Some(format!(
                "grading {}: recorded grade {} lead {}, replayed grade {} lead {}",
                i + 1,
                pair.0.grade.as_deref().unwrap_or("-"),
                pair.0.lead_code,
                pair.1.grade.as_deref().unwrap_or("-"),
                pair.1.lead_code
            ));
        }
    }
    match recorded.len().cmp(&replayed.len()) {
        std::cmp::Ordering::Equal => None,
        std::cmp::Ordering::Less => Some(format!(
            "grading {}: replay grades again (grade {}), the record has no such grading",
            recorded.len() + 1,
            replayed[recorded.len()].grade.as_deref().unwrap_or("-")
        )),
        std::cmp::Ordering::Greater => Some(format!(
            "grading {}: recorded grade {}, the replay does not grade again",
            replayed.len() + 1,
            recorded[replayed.len()].grade.as_deref().unwrap_or("-")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn timeline() -> Vec<(i64, String, String)> {
        vec![
            (1, "reported".into(), "accident.hazardous_chemicals reported in 390202400 by officer (3 dead, 12 seriously injured), red warning".into()),
            (2, "graded".into(), "grade III; lead 明港市 (390200); rule r v1: x".into()),
            (3, "updated".into(), "facts updated by scene: 12 dead, 40 seriously injured (casualties rising)".into()),
            (4, "updated".into(), "facts updated by scene: 2 dead".into()),
        ]
    }

    #[test]
    fn facts_and_inputs_come_from_the_timeline() {
        let inputs = inputs(&timeline());
        assert_eq!(inputs.len(), 3);
        assert_eq!(inputs[0].facts.deaths, Some(3));
        assert_eq!(inputs[0].facts.serious_injuries, Some(12));
        assert_eq!(inputs[1].facts.deaths, Some(12));
        assert_eq!(inputs[2].facts.deaths, Some(2));
        assert_eq!(parse_facts("M6.5, loss 100 CNY").magnitude, Some(6.5));
        assert_eq!(parse_facts("M6.5, loss 100 CNY").direct_loss_cny, Some(100));
    }

    #[test]
    fn upgrades_grade_again_and_downgrades_do_not() {
        let region = Region::embedded_default();
        let steps = replay(
            &region,
            "accident.hazardous_chemicals",
            &["390202400"],
            &inputs(&timeline()),
        )
        .unwrap();
        let grades: Vec<Option<String>> = steps
            .iter()
            .map(|s| s.replayed.as_ref().and_then(|o| o.grade.clone()))
            .collect();
        assert_eq!(grades, [Some("III".into()), Some("II".into()), None]);
        assert_eq!(steps[1].replayed.as_ref().unwrap().lead_code, "390000");
        assert_eq!(
            plan_id(&region, "accident.hazardous_chemicals", Some("II")).as_deref(),
            Some("hazchem-II")
        );
    }

    #[test]
    fn the_first_divergence_is_named() {
        let o = |g: &str, l: &str| Outcome {
            grade: Some(g.into()),
            lead_code: l.into(),
        };
        assert_eq!(
            first_divergence(
                &[o("III", "a"), o("II", "b")],
                &[o("III", "a"), o("II", "b")]
            ),
            None
        );
        assert_eq!(
            first_divergence(
                &[o("III", "a"), o("II", "b")],
                &[o("III", "a"), o("I", "n")]
            )
            .unwrap(),
            "grading 2: recorded grade II lead b, replayed grade I lead n"
        );
        assert!(
            first_divergence(&[o("III", "a")], &[o("III", "a"), o("II", "b")])
                .unwrap()
                .contains("replay grades again")
        );
    }
}

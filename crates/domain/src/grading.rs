//! Grading a report and the escalation ladder it gets: the pure decisions escalation makes for
//! every `reported` and `updated` event, shared with `musterctl replay`, which re-runs them on
//! an incident's recorded history.

use crate::escalation::{EscalationMachine, Rung};
use crate::event::{Graded, IncidentReport};
use crate::grade::{DensityClass, Facts, Grade};
use crate::region::Region;

/// Grades a report and names its lead: rulebook grade and response (raised by a forecast
/// warning where a rule says so), lead by the jurisdiction tree. No I/O.
pub fn grade_incident(region: &Region, report: &IncidentReport) -> Result<Graded, String> {
    let sub_type = crate::class::sub_type(&report.kind)
        .ok_or_else(|| format!("unknown kind {:?}", report.kind))?;
    let township = region
        .tree
        .get(&report.township_code)
        .ok_or_else(|| format!("unknown township {:?}", report.township_code))?;
    // A township without a density class is graded as fairly dense, the base column of the table.
    let density = township.density.unwrap_or(DensityClass::FairlyDense);
    let province = region.tree.province_of(&report.township_code);
    let decision = region.rulebook.grade(
        sub_type,
        &report.facts,
        density,
        province.map(|p| p.code.as_str()),
        province.and_then(|p| p.gdp_cny),
    );
    let lead = region
        .tree
        .lead_for(decision.grade, &report.township_codes())
        .map_err(|e| e.to_string())?;
    // A forecast warning may call for a higher response than the facts so far (the grade, and
    // with it the lead, still follow the facts).
    let mut response_level = decision.response_level;
    let mut reason = decision.reason;
    if let Some(warning) = report.warning
        && let Some((level, why)) = region.rulebook.warning_response(sub_type, warning)
        && response_level.is_none_or(|current| level < current)
    {
        response_level = Some(level);
        reason.push_str(&format!("; {why}"));
    }
    Ok(Graded {
        grade: decision.grade,
        response_level,
        lead_code: lead.code.clone(),
        lead_name: lead.name.clone(),
        lead_level: lead.level,
        rule_id: decision.rule_id,
        rule_version: decision.rule_version,
        reason,
        initial_judgement: decision.initial_judgement,
        facts: report.facts.clone(),
        report: report.clone(),
    })
}

/// The escalation ladder of a graded incident: the county of its primary township, then every
/// ancestor up to national. A lead off that ladder (a cross-county lead above the county of the
/// primary township is always on it) gets its own ancestors instead.
pub fn ladder_for(region: &Region, graded: &Graded) -> Vec<Rung> {
    let tree = &region.tree;
    let start = tree
        .county_of(&graded.report.township_code)
        .map(|county| county.code.clone())
        .unwrap_or_else(|| graded.lead_code.clone());
    let mut ladder: Vec<Rung> = tree
        .ancestors(&start)
        .into_iter()
        .map(|j| Rung::new(j.code.clone(), j.level))
        .collect();
    if !ladder.iter().any(|rung| rung.code == graded.lead_code) {
        ladder = tree
            .ancestors(&graded.lead_code)
            .into_iter()
            .map(|j| Rung::new(j.code.clone(), j.level))
            .collect();
    }
    ladder
}

/// What new facts did to an incident's grade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Regrade {
    /// A more severe grade applied at once (`graded`, and `lead_changed` when the lead moves).
    Upgraded,
    /// A lower grade was proposed (newly: a repeat proposal changes nothing); it waits for an
    /// officer's `ConfirmDowngrade` (`downgrade_proposed`).
    DowngradeProposed,
    /// The grade stands (perhaps a pending downgrade was withdrawn).
    Unchanged,
}

/// True when an update changes the casualty figures (deaths, missing, serious injuries).
pub fn casualties_changed(old: &Facts, new: &Facts) -> bool {
    old.deaths != new.deaths
        || old.missing != new.missing
        || old.serious_injuries != new.serious_injuries
}

/// Hands the grade of new facts to the incident's machine: an upgrade applies at once, a
/// downgrade is only proposed, the grade in force again withdraws a pending downgrade; new
/// casualty figures inside the re-report window owe a follow-up report unless the grade rose.
pub fn apply_regrade(
    machine: &mut EscalationMachine,
    new_grade: Option<Grade>,
    casualties_changed: bool,
    now_unix_ms: i64,
) -> Regrade {
    let before = machine.grade();
    let pending_before = machine.pending_downgrade();
    let outcome = match new_grade {
        Some(new) if before != Some(new) && pending_before != Some(new) => {
            machine.handle_regrade(new, now_unix_ms);
            if machine.grade() != before {
                Regrade::Upgraded
            } else if machine.pending_downgrade() == Some(new) {
                Regrade::DowngradeProposed
            } else {
                Regrade::Unchanged
            }
        }
        // The grade in force again: a pending downgrade is withdrawn.
        Some(new) if before == Some(new) && pending_before.is_some() => {
            machine.handle_regrade(new, now_unix_ms);
            Regrade::Unchanged
        }
        _ => Regrade::Unchanged,
    };
    if casualties_changed && outcome != Regrade::Upgraded {
        // Inside the re-report window new casualty figures owe a follow-up report.
        machine.handle_casualties_changed(now_unix_ms);
    }
    outcome
}

//! The filters of `musterctl watch`: which incident changes to print. Pure, so the matching is
//! tested without a stream.

use std::collections::{BTreeMap, BTreeSet};

use crate::WatchArgs;
use crate::view::{JurisdictionView, WatchEventView};

/// Every filter of one `watch`; an empty list does not filter. Filters combine with AND, the
/// values of one filter with OR.
#[derive(Debug, Clone, Default)]
pub struct WatchFilter {
    pub grades: Vec<String>,
    pub classes: Vec<String>,
    pub statuses: Vec<String>,
    pub incident_ids: Vec<String>,
    pub event_types: Vec<String>,
    /// The jurisdictions asked for with everything below them; `None` when not filtering by
    /// jurisdiction.
    pub jurisdiction_codes: Option<BTreeSet<String>>,
}

impl WatchFilter {
    /// The filter for `args`; `tree` is needed only when `--jurisdiction` is given.
    pub fn new(args: &WatchArgs, tree: &[JurisdictionView]) -> Self {
        Self {
            grades: args.grade.clone(),
            classes: args.class.clone(),
            statuses: args.status.clone(),
            incident_ids: args.incident.clone(),
            event_types: args.event.clone(),
            jurisdiction_codes: (!args.jurisdiction.is_empty())
                .then(|| subtree(&args.jurisdiction, tree)),
        }
    }

    pub fn needs_jurisdictions(args: &WatchArgs) -> bool {
        !args.jurisdiction.is_empty()
    }

    /// True when the change should be printed.
    pub fn matches(&self, event: &WatchEventView) -> bool {
        let incident = &event.incident;
        let grade = incident.grading.as_ref().and_then(|g| g.grade.as_deref());
        any_of(&self.grades, grade)
            && any_of(&self.classes, incident.class.as_deref())
            && any_of(&self.statuses, incident.status.as_deref())
            && any_of(&self.incident_ids, Some(&incident.id))
            && any_of(&self.event_types, Some(&event.event_type))
            && self.jurisdiction_codes.as_ref().is_none_or(|codes| {
                let lead = incident
                    .grading
                    .as_ref()
                    .map(|g| g.lead_jurisdiction_code.as_str());
                lead.is_some_and(|lead| codes.contains(lead))
                    || codes.contains(&incident.township_code)
                    || incident
                        .other_township_codes
                        .iter()
                        .any(|code| codes.contains(code))
            })
    }
}

fn any_of(wanted: &[String], actual: Option<&str>) -> bool {
    wanted.is_empty() || actual.is_some_and(|actual| wanted.iter().any(|w| w == actual))
}

/// The given codes and every jurisdiction below them, following parent links. A code the tree
/// does not know still matches itself, so a typo filters everything out rather than nothing.
pub fn subtree(roots: &[String], tree: &[JurisdictionView]) -> BTreeSet<String> {
    let mut children: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for jurisdiction in tree {
        if let Some(parent) = &jurisdiction.parent_code {
            children
                .entry(parent.as_str())
                .or_default()
                .push(&jurisdiction.code);
        }
    }
    let mut codes = BTreeSet::new();
    let mut pending: Vec<&str> = roots.iter().map(String::as_str).collect();
    while let Some(code) = pending.pop() {
        if codes.insert(code.to_owned()) {
            pending.extend(children.get(code).into_iter().flatten().copied());
        }
    }
    codes
}

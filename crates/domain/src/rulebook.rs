//! Grading rules as data: thresholds per sub-type (or class) and grade, loaded from TOML.
//!
//! The default rulebook ships as `data/region/rulebook.toml` and is embedded at build time. A
//! province with different rules loads its own file through [`Rulebook::from_toml`]; nothing about
//! thresholds is a constant in code. The mechanics here are: the rule for a sub-type is the one
//! listing it in `sub_types`, else the one naming its `class` (the class fallback); within a rule,
//! thresholds are inclusive lower bounds ("以上" includes the number), any one criterion suffices,
//! and the most severe grade any criterion reaches wins. When no threshold is reached the result is
//! the floor: grade IV (response level 4).

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::Error;
use crate::class::{IncidentClass, SubType, sub_type, sub_types};
use crate::grade::{DensityClass, Facts, Grade, WarningLevel};
use crate::source::{error_at, grouped, parse_toml};

/// The text of the default rulebook, as shipped in `data/region/rulebook.toml`.
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../../data/region/rulebook.toml");

/// Response level / grade number of the floor.
const FLOOR_LEVEL: u8 = 4;

/// A validated set of grading rules.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rulebook {
    /// The file the rules were loaded from, for messages.
    pub file_name: String,
    rules: Vec<Rule>,
}

/// One grading rule (a statutory table, or a provisional stand-in for one).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Rule {
    pub id: String,
    pub version: u32,
    /// Where the thresholds come from, e.g. "Decree 493 Art. 3".
    pub source: String,
    /// Not a statutory table: a stand-in until a verified one is configured.
    pub provisional: bool,
    /// False for social-safety rules: the law does not grade those events, so the thresholds set
    /// only the response level.
    pub graded: bool,
    /// Count the missing as dead (the earthquake plan does).
    pub deaths_include_missing: bool,
    /// Sub-type codes this rule covers exactly.
    pub sub_types: Vec<String>,
    /// The class this rule covers as a fallback for sub-types no rule lists.
    pub class: Option<IncidentClass>,
    /// Most severe first (level 1 first).
    pub thresholds: Vec<Threshold>,
    /// Province overrides: replacement thresholds for incidents in one province.
    #[serde(default)]
    pub overrides: Vec<ProvinceOverride>,
    /// Warning level → the response level a warning of that colour calls for at least
    /// (`[rule.warning_response]`): a forecast warning raises the response before any casualty.
    #[serde(default)]
    pub warning_response: Vec<(WarningLevel, u8)>,
}

/// `[[rule.override]]`: a province grading this rule's incidents by its own thresholds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProvinceOverride {
    /// The province's jurisdiction code, e.g. "390000".
    pub province: String,
    /// Where the provincial thresholds come from.
    pub source: String,
    /// Not a verified provincial rule.
    pub provisional: bool,
    /// Replaces the rule's thresholds for this province; most severe first.
    pub thresholds: Vec<Threshold>,
    /// Where `province = ...` is written (1-based), for errors found when the region is assembled.
    pub line: usize,
    pub column: usize,
}

impl Rule {
    /// The override for `province`, if the rule has one.
    pub fn override_for(&self, province: Option<&str>) -> Option<&ProvinceOverride> {
        let province = province?;
        self.overrides
            .iter()
            .find(|entry| entry.province == province)
    }
}

/// Criteria for one grade (or, in an ungraded rule, one response level). Any one suffices.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Threshold {
    /// 1..=4: the grade number (I = 1) in a graded rule, the response level otherwise.
    pub level: u8,
    pub deaths_min: Option<u32>,
    pub serious_injuries_min: Option<u32>,
    pub direct_loss_cny_min: Option<u64>,
    /// Direct loss as a share of the province's GDP, in basis points (1% = 100).
    pub direct_loss_province_gdp_basis_points_min: Option<u32>,
    pub magnitude_min: MagnitudeMin,
    /// People affected (in public-health rules: cases).
    #[serde(default)]
    pub people_affected_min: Option<u32>,
    /// People evacuated or relocated.
    #[serde(default)]
    pub people_evacuated_min: Option<u32>,
}

/// Minimum earthquake magnitude per population-density class of the township.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MagnitudeMin {
    pub sparse: Option<f64>,
    pub fairly_dense: Option<f64>,
    pub dense: Option<f64>,
}

impl MagnitudeMin {
    pub fn for_density(&self, density: DensityClass) -> Option<f64> {
        match density {
            DensityClass::Sparse => self.sparse,
            DensityClass::FairlyDense => self.fairly_dense,
            DensityClass::Dense => self.dense,
        }
    }

    fn is_empty(&self) -> bool {
        self.sparse.is_none() && self.fairly_dense.is_none() && self.dense.is_none()
    }
}

/// The outcome of grading, with enough provenance to audit it later.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GradeDecision {
    /// `None` for social-safety events, which the law does not grade.
    pub grade: Option<Grade>,
    /// 1..=4, 1 highest. Always set by [`Rulebook::grade`].
    pub response_level: Option<u8>,
    pub rule_id: String,
    pub rule_version: u32,
    /// A readable sentence, e.g. "deaths 12 ≥ 10 (grade II threshold) under production_safety v1
    /// (Decree 493 Art. 3)".
    pub reason: String,
    /// The grade rests on the earthquake magnitude alone (初判) and awaits casualty figures.
    pub initial_judgement: bool,
}

// ---- The file format -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RulebookFile {
    #[serde(default)]
    rule: Vec<Spanned<RuleFile>>,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RuleFile {
    id: Spanned<String>,
    version: Spanned<u32>,
    source: String,
    #[serde(default)]
    provisional: bool,
    #[serde(default = "yes")]
    graded: bool,
    #[serde(default)]
    deaths_include_missing: bool,
    #[serde(default)]
    sub_types: Vec<Spanned<String>>,
    #[serde(default)]
    class: Option<Spanned<String>>,
    #[serde(default)]
    threshold: Vec<Spanned<ThresholdFile>>,
    #[serde(default, rename = "override")]
    overrides: Vec<Spanned<OverrideFile>>,
    /// `red = 1`, `orange = 2`, ...: the response level each warning colour calls for.
    #[serde(default)]
    warning_response: std::collections::BTreeMap<String, Spanned<u8>>,
    /// Free text for readers; not used in grading.
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OverrideFile {
    province: Spanned<String>,
    source: String,
    #[serde(default)]
    provisional: bool,
    #[serde(default)]
    threshold: Vec<Spanned<ThresholdFile>>,
    /// Free text for readers; not used in grading.
    #[serde(default)]
    #[allow(dead_code)]
    note: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdFile {
    grade: Option<Spanned<String>>,
    response_level: Option<Spanned<u8>>,
    deaths_min: Option<Spanned<u32>>,
    serious_injuries_min: Option<Spanned<u32>>,
    direct_loss_cny_min: Option<Spanned<u64>>,
    direct_loss_province_gdp_basis_points_min: Option<Spanned<u32>>,
    magnitude_min: Option<Spanned<MagnitudeFile>>,
    people_affected_min: Option<Spanned<u32>>,
    people_evacuated_min: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct MagnitudeFile {
    sparse: Option<Spanned<f64>>,
    fairly_dense: Option<Spanned<f64>>,
    dense: Option<Spanned<f64>>,
}

/// A threshold value with its position, for the "thresholds must descend" check.
struct Located<T> {
    level: u8,
    value: T,
    offset: usize,
}

/// Checks that each present value is strictly below the one of the previous (more severe) level.
fn check_descending<T: PartialOrd + std::fmt::Display>(
    file_name: &str,
    text: &str,
    rule_id: &str,
    criterion: &str,
    label: impl Fn(u8) -> String,
    values: &[Located<T>],
) -> Result<(), Error> {
    for pair in values.windows(2) {
        let (previous, current) = (&pair[0], &pair[1]);
        // NaN never compares below anything, so it is reported here too.
        if current.value.partial_cmp(&previous.value) != Some(std::cmp::Ordering::Less) {
            return Err(error_at(
                file_name,
                text,
                current.offset,
                format!(
                    "rule {rule_id:?}: {criterion} {} for {} must be below {} for {} \
                     (thresholds must descend from the most severe level)",
                    current.value,
                    label(current.level),
                    previous.value,
                    label(previous.level)
                ),
            ));
        }
    }
    Ok(())
}

impl Rulebook {
    /// Parses and validates a rulebook. Syntax and semantic errors name `file_name`, the 1-based
    /// line and column, and the problem.
    pub fn from_toml(file_name: &str, text: &str) -> Result<Rulebook, Error> {
        let file: RulebookFile = parse_toml(file_name, text)?;
        let at = |offset: usize, problem: String| error_at(file_name, text, offset, problem);

        let mut rules: Vec<Rule> = Vec::with_capacity(file.rule.len());
        // Where each sub-type / class was claimed, to report double coverage.
        let mut claimed_sub_types: Vec<(String, String)> = Vec::new();
        let mut claimed_classes: Vec<(IncidentClass, String)> = Vec::new();

        for spanned_rule in &file.rule {
            let rule_offset = spanned_rule.span().start;
            let rule = spanned_rule.get_ref();
            let id = rule.id.get_ref().trim().to_string();
            if id.is_empty() {
                return Err(at(rule.id.span().start, "rule id is empty".into()));
            }
            if rules.iter().any(|earlier| earlier.id == id) {
                return Err(at(
                    rule.id.span().start,
                    format!("duplicate rule id {id:?}"),
                ));
            }
            if *rule.version.get_ref() == 0 {
                return Err(at(
                    rule.version.span().start,
                    format!("rule {id:?}: version must be at least 1"),
                ));
            }
            if rule.sub_types.is_empty() && rule.class.is_none() {
                return Err(at(
                    rule_offset,
                    format!("rule {id:?}: needs `sub_types = [...]` or `class = \"...\"`"),
                ));
            }

            let mut codes = Vec::with_capacity(rule.sub_types.len());
            for code in &rule.sub_types {
                let offset = code.span().start;
                let Some(entry) = sub_type(code.get_ref()) else {
                    return Err(at(
                        offset,
                        format!("rule {id:?}: unknown sub-type code {:?}", code.get_ref()),
                    ));
                };
                if let Some((_, owner)) = claimed_sub_types.iter().find(|(c, _)| c == entry.code) {
                    return Err(at(
                        offset,
                        format!(
                            "rule {id:?}: sub-type {:?} is already covered by rule {owner:?}",
                            entry.code
                        ),
                    ));
                }
                if entry.class.is_graded() != rule.graded {
                    return Err(at(offset, graded_mismatch(&id, rule.graded, entry.code)));
                }
                claimed_sub_types.push((entry.code.to_string(), id.clone()));
                codes.push(entry.code.to_string());
            }

            let class = match &rule.class {
                None => None,
                Some(spanned) => {
                    let offset = spanned.span().start;
                    let Some(class) = IncidentClass::from_prefix(spanned.get_ref()) else {
                        return Err(at(
                            offset,
                            format!(
                                "rule {id:?}: unknown class {:?} (expected natural, accident, public_health, social_safety or unclassified)",
                                spanned.get_ref()
                            ),
                        ));
                    };
                    if let Some((_, owner)) = claimed_classes.iter().find(|(c, _)| *c == class) {
                        return Err(at(
                            offset,
                            format!(
                                "rule {id:?}: class {:?} already has the fallback rule {owner:?}",
                                class.prefix()
                            ),
                        ));
                    }
                    if class.is_graded() != rule.graded {
                        return Err(at(
                            offset,
                            graded_mismatch(&id, rule.graded, class.prefix()),
                        ));
                    }
                    claimed_classes.push((class, id.clone()));
                    Some(class)
                }
            };

            let thresholds =
                Self::thresholds_from_file(file_name, text, &id, rule.graded, &rule.threshold)?;
            if thresholds.is_empty() {
                return Err(at(
                    rule_offset,
                    format!("rule {id:?}: has no [[rule.threshold]] entries"),
                ));
            }

            let mut overrides: Vec<ProvinceOverride> = Vec::with_capacity(rule.overrides.len());
            for spanned in &rule.overrides {
                let entry = spanned.get_ref();
                let offset = entry.province.span().start;
                let province = entry.province.get_ref().trim().to_string();
                if province.is_empty() {
                    return Err(at(
                        offset,
                        format!("rule {id:?}: override province is empty"),
                    ));
                }
                if overrides.iter().any(|earlier| earlier.province == province) {
                    return Err(at(
                        offset,
                        format!(
                            "rule {id:?}: duplicate override for province {province:?} (one [[rule.override]] per province)"
                        ),
                    ));
                }
                let label = format!("{id} (province {province} override)");
                let thresholds = Self::thresholds_from_file(
                    file_name,
                    text,
                    &label,
                    rule.graded,
                    &entry.threshold,
                )?;
                if thresholds.is_empty() {
                    return Err(at(
                        spanned.span().start,
                        format!(
                            "rule {id:?}: the override for province {province:?} has no [[rule.override.threshold]] entries"
                        ),
                    ));
                }
                let (line, column) = crate::source::line_column(text, offset);
                overrides.push(ProvinceOverride {
                    province,
                    source: entry.source.trim().to_string(),
                    provisional: entry.provisional,
                    thresholds,
                    line,
                    column,
                });
            }

            let mut warning_response = Vec::new();
            for (colour, level) in &rule.warning_response {
                let offset = level.span().start;
                let Some(warning) = WarningLevel::parse(colour) else {
                    return Err(at(
                        offset,
                        format!(
                            "rule {id:?}: warning_response key {colour:?} is not a warning colour (red, orange, yellow or blue)"
                        ),
                    ));
                };
                let level = *level.get_ref();
                if !(1..=4).contains(&level) {
                    return Err(at(
                        offset,
                        format!(
                            "rule {id:?}: warning_response.{colour} = {level}: a response level is 1 (highest) to 4"
                        ),
                    ));
                }
                warning_response.push((warning, level));
            }
            warning_response.sort();

            rules.push(Rule {
                id,
                version: *rule.version.get_ref(),
                source: rule.source.trim().to_string(),
                provisional: rule.provisional,
                graded: rule.graded,
                deaths_include_missing: rule.deaths_include_missing,
                sub_types: codes,
                class,
                thresholds,
                overrides,
                warning_response,
            });
        }

        let rulebook = Rulebook {
            file_name: file_name.to_string(),
            rules,
        };
        // Grading must be total: every sub-type in the catalogue needs a rule.
        if let Some(uncovered) = sub_types()
            .iter()
            .find(|entry| rulebook.rule_for(entry).is_none())
        {
            return Err(at(
                text.len(),
                format!(
                    "no rule covers sub-type {:?}: list it in a rule's sub_types or add a rule with class = {:?}",
                    uncovered.code,
                    uncovered.class.prefix()
                ),
            ));
        }
        Ok(rulebook)
    }

    fn thresholds_from_file(
        file_name: &str,
        text: &str,
        id: &str,
        graded: bool,
        entries: &[Spanned<ThresholdFile>],
    ) -> Result<Vec<Threshold>, Error> {
        let at = |offset: usize, problem: String| error_at(file_name, text, offset, problem);
        let label = |level: u8| {
            if graded {
                format!(
                    "grade {}",
                    Grade::from_number(level).map_or("?", |g| g.roman())
                )
            } else {
                format!("response level {level}")
            }
        };

        let mut thresholds: Vec<Threshold> = Vec::with_capacity(entries.len());
        let mut deaths = Vec::new();
        let mut injuries = Vec::new();
        let mut losses = Vec::new();
        let mut gdp_shares = Vec::new();
        let mut affected = Vec::new();
        let mut evacuated = Vec::new();
        let mut magnitudes: [Vec<Located<f64>>; 3] = [Vec::new(), Vec::new(), Vec::new()];

        for spanned in entries {
            let entry = spanned.get_ref();
            let entry_offset = spanned.span().start;
            let (level, level_offset) = match (graded, &entry.grade, &entry.response_level) {
                (true, Some(grade), None) => {
                    let Some(parsed) = Grade::from_roman(grade.get_ref()) else {
                        return Err(at(
                            grade.span().start,
                            format!(
                                "rule {id:?}: unknown grade {:?} (expected I, II, III or IV)",
                                grade.get_ref()
                            ),
                        ));
                    };
                    (parsed.number(), grade.span().start)
                }
                (false, None, Some(level)) => {
                    if !(1..=4).contains(level.get_ref()) {
                        return Err(at(
                            level.span().start,
                            format!(
                                "rule {id:?}: response_level must be 1..4, not {}",
                                level.get_ref()
                            ),
                        ));
                    }
                    (*level.get_ref(), level.span().start)
                }
                (true, _, _) => {
                    return Err(at(
                        entry_offset,
                        format!(
                            "rule {id:?}: each threshold of a graded rule needs exactly `grade = \"I\"..\"IV\"` (and no response_level)"
                        ),
                    ));
                }
                (false, _, _) => {
                    return Err(at(
                        entry_offset,
                        format!(
                            "rule {id:?}: each threshold of an ungraded rule (graded = false) needs exactly `response_level = 1..4` (and no grade)"
                        ),
                    ));
                }
            };
            if let Some(previous) = thresholds.last().filter(|previous| level <= previous.level) {
                return Err(at(
                    level_offset,
                    format!(
                        "rule {id:?}: {} comes after {}; list thresholds once each, most severe first",
                        label(level),
                        label(previous.level)
                    ),
                ));
            }

            let magnitude_min = match &entry.magnitude_min {
                None => MagnitudeMin::default(),
                Some(table) => {
                    let table = table.get_ref();
                    let columns = [&table.sparse, &table.fairly_dense, &table.dense];
                    for (column, value) in columns.iter().enumerate() {
                        if let Some(value) = value {
                            let magnitude = *value.get_ref();
                            if !(magnitude.is_finite() && (0.0..=10.0).contains(&magnitude)) {
                                return Err(at(
                                    value.span().start,
                                    format!("rule {id:?}: magnitude {magnitude} is outside 0..10"),
                                ));
                            }
                            magnitudes[column].push(Located {
                                level,
                                value: magnitude,
                                offset: value.span().start,
                            });
                        }
                    }
                    MagnitudeMin {
                        sparse: table.sparse.as_ref().map(|v| *v.get_ref()),
                        fairly_dense: table.fairly_dense.as_ref().map(|v| *v.get_ref()),
                        dense: table.dense.as_ref().map(|v| *v.get_ref()),
                    }
                }
            };

            fn push<T: Copy>(into: &mut Vec<Located<T>>, level: u8, value: &Option<Spanned<T>>) {
                if let Some(value) = value {
                    into.push(Located {
                        level,
                        value: *value.get_ref(),
                        offset: value.span().start,
                    });
                }
            }
            push(&mut deaths, level, &entry.deaths_min);
            push(&mut injuries, level, &entry.serious_injuries_min);
            push(&mut losses, level, &entry.direct_loss_cny_min);
            push(
                &mut gdp_shares,
                level,
                &entry.direct_loss_province_gdp_basis_points_min,
            );
            push(&mut affected, level, &entry.people_affected_min);
            push(&mut evacuated, level, &entry.people_evacuated_min);
            if let Some(share) = entry
                .direct_loss_province_gdp_basis_points_min
                .as_ref()
                .filter(|share| *share.get_ref() == 0)
            {
                return Err(at(
                    share.span().start,
                    format!(
                        "rule {id:?}: direct_loss_province_gdp_basis_points_min must be at least 1"
                    ),
                ));
            }

            let threshold = Threshold {
                level,
                deaths_min: entry.deaths_min.as_ref().map(|v| *v.get_ref()),
                serious_injuries_min: entry.serious_injuries_min.as_ref().map(|v| *v.get_ref()),
                direct_loss_cny_min: entry.direct_loss_cny_min.as_ref().map(|v| *v.get_ref()),
                direct_loss_province_gdp_basis_points_min: entry
                    .direct_loss_province_gdp_basis_points_min
                    .as_ref()
                    .map(|v| *v.get_ref()),
                magnitude_min,
                people_affected_min: entry.people_affected_min.as_ref().map(|v| *v.get_ref()),
                people_evacuated_min: entry.people_evacuated_min.as_ref().map(|v| *v.get_ref()),
            };
            let has_criterion = threshold.deaths_min.is_some()
                || threshold.serious_injuries_min.is_some()
                || threshold.direct_loss_cny_min.is_some()
                || threshold
                    .direct_loss_province_gdp_basis_points_min
                    .is_some()
                || threshold.people_affected_min.is_some()
                || threshold.people_evacuated_min.is_some()
                || !threshold.magnitude_min.is_empty();
            // The floor level needs no criteria; any other level without one is a mistake.
            if !has_criterion && level != FLOOR_LEVEL {
                return Err(at(
                    entry_offset,
                    format!("rule {id:?}: {} has no criterion", label(level)),
                ));
            }
            thresholds.push(threshold);
        }

        check_descending(file_name, text, id, "deaths_min", label, &deaths)?;
        check_descending(
            file_name,
            text,
            id,
            "serious_injuries_min",
            label,
            &injuries,
        )?;
        check_descending(file_name, text, id, "direct_loss_cny_min", label, &losses)?;
        check_descending(
            file_name,
            text,
            id,
            "direct_loss_province_gdp_basis_points_min",
            label,
            &gdp_shares,
        )?;
        check_descending(file_name, text, id, "people_affected_min", label, &affected)?;
        check_descending(
            file_name,
            text,
            id,
            "people_evacuated_min",
            label,
            &evacuated,
        )?;
        for (column, values) in ["sparse", "fairly_dense", "dense"].iter().zip(&magnitudes) {
            check_descending(
                file_name,
                text,
                id,
                &format!("magnitude_min.{column}"),
                label,
                values,
            )?;
        }
        Ok(thresholds)
    }

    /// Checks every override's province with `problem` (which says what is wrong with a code, or
    /// `None` when it names a province of the region); the error points at `province = ...`.
    pub fn check_override_provinces(
        &self,
        problem: impl Fn(&str) -> Option<String>,
    ) -> Result<(), Error> {
        for rule in &self.rules {
            for entry in &rule.overrides {
                if let Some(problem) = problem(&entry.province) {
                    return Err(Error::Source {
                        file: self.file_name.clone(),
                        line: entry.line,
                        column: entry.column,
                        problem: format!(
                            "rule {:?}: override province {:?}: {problem}",
                            rule.id, entry.province
                        ),
                    });
                }
            }
        }
        Ok(())
    }

    /// The rulebook shipped in `data/region/rulebook.toml`.
    pub fn embedded_default() -> Rulebook {
        match Rulebook::from_toml("rulebook.toml", EMBEDDED_DEFAULT_TOML) {
            Ok(rulebook) => rulebook,
            // A test parses the shipped file, so this only fires if that test was ignored.
            Err(error) => panic!("the embedded default rulebook is broken: {error}"),
        }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The rule that grades `sub_type`, and whether it applies only as the class fallback.
    pub fn rule_for(&self, sub_type: &SubType) -> Option<(&Rule, bool)> {
        if let Some(rule) = self
            .rules
            .iter()
            .find(|rule| rule.sub_types.iter().any(|code| code == sub_type.code))
        {
            return Some((rule, false));
        }
        self.rules
            .iter()
            .find(|rule| rule.class == Some(sub_type.class))
            .map(|rule| (rule, true))
    }

    /// The response level a warning of `warning`'s colour calls for under the rule that covers
    /// `sub_type`, with a sentence saying so; `None` when the rule maps no such colour.
    pub fn warning_response(
        &self,
        sub_type: &SubType,
        warning: WarningLevel,
    ) -> Option<(u8, String)> {
        let (rule, _) = self.rule_for(sub_type)?;
        let level = rule
            .warning_response
            .iter()
            .find(|(colour, _)| *colour == warning)
            .map(|(_, level)| *level)?;
        Some((
            level,
            format!(
                "a {} warning ({}预警) calls for response level {level} under {} v{}",
                warning.as_str(),
                warning.zh(),
                rule.id,
                rule.version
            ),
        ))
    }

    /// Grades an incident. `density` is the density class of the primary township, `province`
    /// the code of its province (a rule's override for that province replaces the rule's
    /// thresholds), `province_gdp_cny` the province's GDP (the earthquake 1%-of-GDP criterion is
    /// skipped when it is unknown).
    pub fn grade(
        &self,
        sub_type: &SubType,
        facts: &Facts,
        density: DensityClass,
        province: Option<&str>,
        province_gdp_cny: Option<u64>,
    ) -> GradeDecision {
        let Some((rule, via_class_fallback)) = self.rule_for(sub_type) else {
            // Unreachable for a rulebook built by `from_toml` (it checks coverage); kept total
            // for rulebooks deserialized from elsewhere.
            return GradeDecision {
                grade: sub_type.class.is_graded().then_some(Grade::IV),
                response_level: Some(FLOOR_LEVEL),
                rule_id: "none".into(),
                rule_version: 0,
                reason: format!(
                    "no rule in {} covers {}; floor (level 4) applied",
                    self.file_name, sub_type.code
                ),
                initial_judgement: false,
            };
        };

        let level_label = |level: u8| {
            if rule.graded {
                format!(
                    "grade {}",
                    Grade::from_number(level).map_or("?", |g| g.roman())
                )
            } else {
                format!("response level {level}")
            }
        };

        let province_override = rule.override_for(province);
        let thresholds = province_override.map_or(&rule.thresholds, |entry| &entry.thresholds);
        let mut decided: Option<(u8, Vec<Hit>)> = None;
        for threshold in thresholds {
            let hits = hits(rule, threshold, facts, density, province_gdp_cny);
            if !hits.is_empty() {
                decided = Some((threshold.level, hits));
                break;
            }
        }

        let mut rule_label = format!("{} v{} ({})", rule.id, rule.version, rule.source);
        if let Some(entry) = province_override {
            rule_label.push_str(&format!(
                " with the province {} override ({})",
                entry.province, entry.source
            ));
        }
        let (level, mut reason, initial_judgement) = match decided {
            Some((level, hits)) => {
                let initial = hits.iter().all(|hit| hit.from_magnitude);
                let criteria: Vec<&str> = hits.iter().map(|hit| hit.text.as_str()).collect();
                let mut reason = format!(
                    "{} ({} threshold) under {rule_label}",
                    criteria.join(" and "),
                    level_label(level)
                );
                if initial {
                    reason.push_str(
                        "; initial judgement (初判) from magnitude, to be confirmed by casualty figures",
                    );
                }
                (level, reason, initial)
            }
            None => {
                let known = known_facts(rule, facts);
                let has_magnitude_criteria = thresholds
                    .iter()
                    .any(|threshold| !threshold.magnitude_min.is_empty());
                let no_casualty_figures = facts.deaths.is_none()
                    && facts.missing.is_none()
                    && facts.serious_injuries.is_none()
                    && facts.direct_loss_cny.is_none()
                    && facts.people_affected.is_none()
                    && facts.people_evacuated.is_none();
                let initial =
                    has_magnitude_criteria && facts.magnitude.is_some() && no_casualty_figures;
                let mut reason = format!(
                    "no threshold above {floor} reached ({known}); {floor} is the floor under {rule_label}",
                    floor = level_label(FLOOR_LEVEL)
                );
                if initial {
                    reason.push_str("; initial judgement (初判) from magnitude, to be confirmed by casualty figures");
                }
                (FLOOR_LEVEL, reason, initial)
            }
        };
        if via_class_fallback {
            reason.push_str(&format!(
                "; applied as the {} class fallback for {}",
                sub_type.class.prefix(),
                sub_type.code
            ));
        }
        if rule.provisional {
            reason.push_str("; provisional rule, not a verified statutory table");
        }
        if province_override.is_some_and(|entry| entry.provisional) {
            reason.push_str("; provisional province override, not a verified provincial rule");
        }
        if !rule.graded {
            reason.push_str(
                "; the law does not grade social-safety events, so only the response level is set",
            );
        }

        GradeDecision {
            grade: if rule.graded {
                Grade::from_number(level)
            } else {
                None
            },
            response_level: Some(level),
            rule_id: rule.id.clone(),
            rule_version: rule.version,
            reason,
            initial_judgement,
        }
    }
}

fn graded_mismatch(rule_id: &str, graded: bool, what: &str) -> String {
    if graded {
        format!(
            "rule {rule_id:?}: covers {what:?}, but the law does not grade social-safety events; set graded = false and use response_level"
        )
    } else {
        format!(
            "rule {rule_id:?}: graded = false, but {what:?} is a graded class; only social-safety rules are ungraded"
        )
    }
}

/// One criterion a threshold was reached by.
struct Hit {
    text: String,
    from_magnitude: bool,
}

/// Deaths as the rule counts them (with the missing when it says so), and how to describe them.
fn counted_deaths(rule: &Rule, facts: &Facts) -> Option<(u64, String)> {
    if rule.deaths_include_missing {
        if facts.deaths.is_none() && facts.missing.is_none() {
            return None;
        }
        let deaths = u64::from(facts.deaths.unwrap_or(0));
        let missing = u64::from(facts.missing.unwrap_or(0));
        Some((
            deaths + missing,
            format!(
                "deaths incl. missing {} ({deaths} dead + {missing} missing)",
                deaths + missing
            ),
        ))
    } else {
        facts
            .deaths
            .map(|deaths| (u64::from(deaths), format!("deaths {deaths}")))
    }
}

fn hits(
    rule: &Rule,
    threshold: &Threshold,
    facts: &Facts,
    density: DensityClass,
    province_gdp_cny: Option<u64>,
) -> Vec<Hit> {
    let mut hits = Vec::new();
    if let (Some(min), Some((deaths, text))) = (threshold.deaths_min, counted_deaths(rule, facts))
        && deaths >= u64::from(min)
    {
        hits.push(Hit {
            text: format!("{text} ≥ {min}"),
            from_magnitude: false,
        });
    }
    if let (Some(min), Some(injuries)) = (threshold.serious_injuries_min, facts.serious_injuries)
        && injuries >= min
    {
        hits.push(Hit {
            text: format!("serious injuries {injuries} ≥ {min}"),
            from_magnitude: false,
        });
    }
    if let (Some(min), Some(loss)) = (threshold.direct_loss_cny_min, facts.direct_loss_cny)
        && loss >= min
    {
        hits.push(Hit {
            text: format!("direct loss {} CNY ≥ {} CNY", grouped(loss), grouped(min)),
            from_magnitude: false,
        });
    }
    if let (Some(basis_points), Some(loss), Some(gdp)) = (
        threshold.direct_loss_province_gdp_basis_points_min,
        facts.direct_loss_cny,
        province_gdp_cny,
    ) {
        // Integer comparison so the 1% boundary is exact: loss / gdp ≥ bp / 10_000.
        if gdp > 0 && u128::from(loss) * 10_000 >= u128::from(basis_points) * u128::from(gdp) {
            hits.push(Hit {
                text: format!(
                    "direct loss {} CNY ≥ {}.{:02}% of the province's GDP {} CNY",
                    grouped(loss),
                    basis_points / 100,
                    basis_points % 100,
                    grouped(gdp)
                ),
                from_magnitude: false,
            });
        }
    }
    if let (Some(min), Some(affected)) = (threshold.people_affected_min, facts.people_affected)
        && affected >= min
    {
        hits.push(Hit {
            text: format!(
                "people affected {} ≥ {}",
                grouped(u64::from(affected)),
                grouped(u64::from(min))
            ),
            from_magnitude: false,
        });
    }
    if let (Some(min), Some(evacuated)) = (threshold.people_evacuated_min, facts.people_evacuated)
        && evacuated >= min
    {
        hits.push(Hit {
            text: format!(
                "people evacuated {} ≥ {}",
                grouped(u64::from(evacuated)),
                grouped(u64::from(min))
            ),
            from_magnitude: false,
        });
    }
    if let (Some(min), Some(magnitude)) = (
        threshold.magnitude_min.for_density(density),
        facts.magnitude,
    ) && magnitude >= min
    {
        hits.push(Hit {
            text: format!(
                "magnitude M{magnitude:.1} ≥ M{min:.1} in a {} area",
                density.as_str().replace('_', "-")
            ),
            from_magnitude: true,
        });
    }
    hits
}

/// The facts the rule looks at, for the floor reason.
fn known_facts(rule: &Rule, facts: &Facts) -> String {
    let mut parts = Vec::new();
    if let Some((_, text)) = counted_deaths(rule, facts) {
        parts.push(text);
    }
    if let Some(injuries) = facts.serious_injuries {
        parts.push(format!("serious injuries {injuries}"));
    }
    if let Some(loss) = facts.direct_loss_cny {
        parts.push(format!("direct loss {} CNY", grouped(loss)));
    }
    if let Some(magnitude) = facts.magnitude {
        parts.push(format!("magnitude M{magnitude:.1}"));
    }
    if let Some(affected) = facts.people_affected {
        parts.push(format!("people affected {}", grouped(u64::from(affected))));
    }
    if let Some(evacuated) = facts.people_evacuated {
        parts.push(format!(
            "people evacuated {}",
            grouped(u64::from(evacuated))
        ));
    }
    if parts.is_empty() {
        "no casualty or loss figures yet".into()
    } else {
        parts.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_default_parses() {
        let rulebook = Rulebook::embedded_default();
        assert!(
            rulebook
                .rules()
                .iter()
                .any(|rule| rule.id == "production_safety")
        );
        assert!(rulebook.rules().iter().any(|rule| rule.id == "earthquake"));
        let json = serde_json::to_string(&rulebook).unwrap();
        assert_eq!(serde_json::from_str::<Rulebook>(&json).unwrap(), rulebook);
    }

    #[test]
    fn every_sub_type_has_a_rule() {
        let rulebook = Rulebook::embedded_default();
        for entry in sub_types() {
            assert!(rulebook.rule_for(entry).is_some(), "{}", entry.code);
        }
    }
}

//! A region's data — jurisdictions, units, response plans and the rulebook — loaded from TOML.
//!
//! The sample region ships in `data/region/` and is embedded at build time
//! ([`Region::embedded_default`]); a deployment passes its own files to [`Region::from_sources`].
//! Every data problem is reported as `file:line:column: problem`.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::Error;
use crate::class::{IncidentClass, sub_type};
use crate::geo::GeoPoint;
use crate::grade::{DensityClass, Grade};
use crate::jurisdiction::{Jurisdiction, JurisdictionTree, Level, TreeField, validate};
use crate::rulebook::{EMBEDDED_DEFAULT_TOML as RULEBOOK_TOML, Rulebook};
use crate::source::{error_at, parse_toml};

/// File names of the four region files, in the order [`Region::from_sources`] takes them.
pub const DEFAULT_FILE_NAMES: [&str; 4] = [
    "jurisdictions.toml",
    "units.toml",
    "plans.toml",
    "rulebook.toml",
];

const JURISDICTIONS_TOML: &str = include_str!("../../../data/region/jurisdictions.toml");
const UNITS_TOML: &str = include_str!("../../../data/region/units.toml");
const PLANS_TOML: &str = include_str!("../../../data/region/plans.toml");

/// A response unit (vehicle or team) that can be sent to incidents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Unit {
    pub id: String,
    pub call_sign: String,
    /// e.g. `fire_engine`, `hazmat`, `ambulance`; plans ask for units by type.
    pub unit_type: String,
    /// Township code where the unit is stationed.
    pub home_township: String,
    /// County code, derived from the home township.
    pub jurisdiction: String,
    pub position: GeoPoint,
    pub capabilities: Vec<String>,
    pub crew_size: u32,
}

/// "Send `count` units of `unit_type`."
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResourceRequirement {
    pub unit_type: String,
    pub count: u32,
}

/// A response plan (预案 / run card) for a group of sub-types at one grade.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: String,
    pub name: String,
    /// Exact sub-type codes, or a class wildcard such as `accident.*`.
    pub sub_types: Vec<String>,
    /// `None` for ungraded (social-safety) plans.
    pub grade: Option<Grade>,
    pub resources: Vec<ResourceRequirement>,
}

/// All plans of a region, with the lookup rule below.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanBook {
    plans: Vec<Plan>,
}

impl PlanBook {
    /// Wraps already-validated plans (the TOML loader validates; this constructor does not).
    pub fn new(plans: Vec<Plan>) -> PlanBook {
        PlanBook { plans }
    }

    /// The plan for `sub_type` at `grade`: first a plan listing the exact code with that grade,
    /// then a class plan listing the wildcard `<class prefix>.*` (e.g. `accident.*`) with that
    /// grade. Social-safety plans are ungraded and are found with `grade = None`. There is no
    /// fallback to a neighbouring grade: a missing plan is for the caller to report.
    pub fn plan_for(&self, sub_type: &str, grade: Option<Grade>) -> Option<&Plan> {
        let exact = self
            .plans
            .iter()
            .find(|plan| plan.grade == grade && plan.sub_types.iter().any(|code| code == sub_type));
        if exact.is_some() {
            return exact;
        }
        let (prefix, _) = sub_type.split_once('.')?;
        let wildcard = format!("{prefix}.*");
        self.plans
            .iter()
            .find(|plan| plan.grade == grade && plan.sub_types.contains(&wildcard))
    }

    pub fn all(&self) -> &[Plan] {
        &self.plans
    }
}

/// A whole region: who governs where, which units exist, what to send, and how to grade.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Region {
    pub tree: JurisdictionTree,
    pub units: Vec<Unit>,
    pub plans: PlanBook,
    pub rulebook: Rulebook,
    /// Average road speed per unit type (`[speed_kmh]` in units.toml), for dispatch ETAs; types
    /// not listed use the built-in defaults of [`crate::dispatch::RecommendOptions`].
    #[serde(default)]
    pub speed_kmh_by_type: BTreeMap<String, f64>,
}

/// One data file: its name (for messages) and text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SourceFile<'a> {
    pub name: &'a str,
    pub text: &'a str,
}

// ---- File formats ----------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JurisdictionsFile {
    #[serde(default)]
    jurisdiction: Vec<Spanned<JurisdictionEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JurisdictionEntry {
    code: Spanned<String>,
    name: String,
    level: Spanned<Level>,
    parent: Option<Spanned<String>>,
    centroid: Option<Spanned<GeoPoint>>,
    density: Option<Spanned<DensityClass>>,
    gdp_cny: Option<u64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitsFile {
    /// Unit type → average road speed in km/h.
    #[serde(default)]
    speed_kmh: BTreeMap<Spanned<String>, Spanned<f64>>,
    #[serde(default)]
    unit: Vec<Spanned<UnitEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UnitEntry {
    id: Spanned<String>,
    call_sign: Spanned<String>,
    unit_type: Spanned<String>,
    home_township: Spanned<String>,
    /// Defaults to the home township's centroid.
    position: Option<Spanned<GeoPoint>>,
    crew_size: Spanned<u32>,
    #[serde(default)]
    capabilities: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlansFile {
    #[serde(default)]
    plan: Vec<Spanned<PlanEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PlanEntry {
    id: Spanned<String>,
    name: String,
    sub_types: Spanned<Vec<Spanned<String>>>,
    grade: Option<Spanned<Grade>>,
    resources: Spanned<Vec<Spanned<ResourceEntry>>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ResourceEntry {
    unit_type: Spanned<String>,
    count: Spanned<u32>,
}

/// Unit types are identifiers (`fire_engine`), so data files and clients spell them one way.
fn is_identifier(text: &str) -> bool {
    !text.is_empty()
        && text
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_')
}

fn parse_jurisdictions(source: SourceFile) -> Result<JurisdictionTree, Error> {
    let file: JurisdictionsFile = parse_toml(source.name, source.text)?;
    let items: Vec<Jurisdiction> = file
        .jurisdiction
        .iter()
        .map(|entry| {
            let entry = entry.get_ref();
            Jurisdiction {
                code: entry.code.get_ref().clone(),
                name: entry.name.clone(),
                level: *entry.level.get_ref(),
                parent: entry.parent.as_ref().map(|parent| parent.get_ref().clone()),
                centroid: entry.centroid.as_ref().map(|centroid| *centroid.get_ref()),
                density: entry.density.as_ref().map(|density| *density.get_ref()),
                gdp_cny: entry.gdp_cny,
            }
        })
        .collect();
    if let Err(problem) = validate(&items) {
        // Point at the field the problem is about, falling back to the entry, then the file start.
        let offset = problem.index.map_or(0, |index| {
            let spanned = &file.jurisdiction[index];
            let entry = spanned.get_ref();
            let field_offset = match problem.field {
                TreeField::Entry => None,
                TreeField::Code => Some(entry.code.span().start),
                TreeField::Level => Some(entry.level.span().start),
                TreeField::Parent => entry.parent.as_ref().map(|p| p.span().start),
                TreeField::Centroid => entry.centroid.as_ref().map(|c| c.span().start),
                TreeField::Density => entry.density.as_ref().map(|d| d.span().start),
            };
            field_offset.unwrap_or(spanned.span().start)
        });
        return Err(error_at(source.name, source.text, offset, problem.problem));
    }
    JurisdictionTree::new(items)
}

/// The units and the per-type speeds of a units file.
type UnitsAndSpeeds = (Vec<Unit>, BTreeMap<String, f64>);

fn parse_units(
    source: SourceFile,
    tree: &JurisdictionTree,
    jurisdictions_file_name: &str,
) -> Result<UnitsAndSpeeds, Error> {
    let file: UnitsFile = parse_toml(source.name, source.text)?;
    let at = |offset: usize, problem: String| error_at(source.name, source.text, offset, problem);
    let mut units: Vec<Unit> = Vec::with_capacity(file.unit.len());
    let mut call_signs: BTreeMap<&str, &str> = BTreeMap::new();
    for spanned in &file.unit {
        let entry = spanned.get_ref();
        let id = entry.id.get_ref().trim();
        if id.is_empty() {
            return Err(at(entry.id.span().start, "unit id is empty".into()));
        }
        if units.iter().any(|unit| unit.id == id) {
            return Err(at(
                entry.id.span().start,
                format!("duplicate unit id {id:?}"),
            ));
        }
        let call_sign = entry.call_sign.get_ref().trim();
        if call_sign.is_empty() {
            return Err(at(
                entry.call_sign.span().start,
                format!("unit {id:?}: call_sign is empty"),
            ));
        }
        if let Some(other) = call_signs.insert(call_sign, id) {
            return Err(at(
                entry.call_sign.span().start,
                format!("unit {id:?}: call_sign {call_sign:?} is already used by unit {other:?}"),
            ));
        }
        let unit_type = entry.unit_type.get_ref();
        if !is_identifier(unit_type) {
            return Err(at(
                entry.unit_type.span().start,
                format!(
                    "unit {id:?}: unit_type {unit_type:?} must be a non-empty lower-case identifier like \"fire_engine\""
                ),
            ));
        }
        let township_code = entry.home_township.get_ref();
        let township_offset = entry.home_township.span().start;
        let township = match tree.get(township_code) {
            None => {
                return Err(at(
                    township_offset,
                    format!(
                        "unit {id:?}: home_township {township_code:?} does not exist in {jurisdictions_file_name}"
                    ),
                ));
            }
            Some(j) if j.level != Level::Township => {
                return Err(at(
                    township_offset,
                    format!(
                        "unit {id:?}: home_township {township_code:?} is not a township in {jurisdictions_file_name} (it is a {})",
                        j.level.as_str()
                    ),
                ));
            }
            Some(j) => j,
        };
        let Some(county) = tree
            .ancestors(township_code)
            .into_iter()
            .find(|j| j.level <= Level::County)
        else {
            unreachable!("the root is above county level");
        };
        let position = match &entry.position {
            Some(position) => {
                if let Some(problem) = position.get_ref().range_problem() {
                    return Err(at(
                        position.span().start,
                        format!("unit {id:?}: position: {problem}"),
                    ));
                }
                *position.get_ref()
            }
            None => township
                .centroid
                .expect("validated trees give every township a centroid"),
        };
        if *entry.crew_size.get_ref() == 0 {
            return Err(at(
                entry.crew_size.span().start,
                format!("unit {id:?}: crew_size must be at least 1"),
            ));
        }
        units.push(Unit {
            id: id.to_string(),
            call_sign: call_sign.to_string(),
            unit_type: unit_type.clone(),
            home_township: township_code.clone(),
            jurisdiction: county.code.clone(),
            position,
            capabilities: entry.capabilities.clone(),
            crew_size: *entry.crew_size.get_ref(),
        });
    }
    let mut speed_kmh_by_type = BTreeMap::new();
    for (unit_type, speed_kmh) in &file.speed_kmh {
        let name = unit_type.get_ref();
        if !units.iter().any(|unit| &unit.unit_type == name) {
            return Err(at(
                unit_type.span().start,
                format!("speed_kmh: {name:?} is not the type of any unit in this file"),
            ));
        }
        let value = *speed_kmh.get_ref();
        if !(value.is_finite() && value > 0.0) {
            return Err(at(
                speed_kmh.span().start,
                format!(
                    "speed_kmh: the speed for {name:?} must be a positive number of km/h, not {value}"
                ),
            ));
        }
        speed_kmh_by_type.insert(name.clone(), value);
    }
    Ok((units, speed_kmh_by_type))
}

fn parse_plans(
    source: SourceFile,
    units: &[Unit],
    units_file_name: &str,
) -> Result<PlanBook, Error> {
    let file: PlansFile = parse_toml(source.name, source.text)?;
    let at = |offset: usize, problem: String| error_at(source.name, source.text, offset, problem);
    let unit_types: BTreeSet<&str> = units.iter().map(|unit| unit.unit_type.as_str()).collect();
    let mut plans: Vec<Plan> = Vec::with_capacity(file.plan.len());
    // (sub-type or wildcard, grade) -> plan id, so no lookup is ambiguous.
    let mut covered: BTreeMap<(String, Option<Grade>), String> = BTreeMap::new();

    for spanned in &file.plan {
        let entry = spanned.get_ref();
        let id = entry.id.get_ref().trim();
        if id.is_empty() {
            return Err(at(entry.id.span().start, "plan id is empty".into()));
        }
        if plans.iter().any(|plan| plan.id == id) {
            return Err(at(
                entry.id.span().start,
                format!("duplicate plan id {id:?}"),
            ));
        }
        let grade = entry.grade.as_ref().map(|grade| *grade.get_ref());
        if entry.sub_types.get_ref().is_empty() {
            return Err(at(
                entry.sub_types.span().start,
                format!("plan {id:?}: sub_types is empty"),
            ));
        }
        let mut codes = Vec::with_capacity(entry.sub_types.get_ref().len());
        for code in entry.sub_types.get_ref() {
            let offset = code.span().start;
            let text = code.get_ref();
            let class = match text.strip_suffix(".*") {
                Some(prefix) => IncidentClass::from_prefix(prefix),
                None => sub_type(text).map(|entry| entry.class),
            };
            let Some(class) = class else {
                return Err(at(
                    offset,
                    format!(
                        "plan {id:?}: unknown sub-type {text:?} (use a code like \"accident.fire\" or a class wildcard like \"accident.*\")"
                    ),
                ));
            };
            match (class.is_graded(), grade) {
                (true, None) => {
                    return Err(at(
                        offset,
                        format!(
                            "plan {id:?}: {text:?} is a graded class, so the plan needs a grade"
                        ),
                    ));
                }
                (false, Some(_)) => {
                    return Err(at(
                        offset,
                        format!(
                            "plan {id:?}: {text:?} is a social-safety sub-type, which the law does not grade; remove `grade`"
                        ),
                    ));
                }
                _ => {}
            }
            if let Some(other) = covered.insert((text.clone(), grade), id.to_string()) {
                return Err(at(
                    offset,
                    format!(
                        "plan {id:?}: {text:?} at grade {} is already covered by plan {other:?}",
                        grade.map_or("none", |g| g.roman())
                    ),
                ));
            }
            codes.push(text.clone());
        }

        if entry.resources.get_ref().is_empty() {
            return Err(at(
                entry.resources.span().start,
                format!("plan {id:?}: resources is empty"),
            ));
        }
        let mut resources: Vec<ResourceRequirement> =
            Vec::with_capacity(entry.resources.get_ref().len());
        for resource in entry.resources.get_ref() {
            let resource = resource.get_ref();
            let unit_type = resource.unit_type.get_ref();
            let type_offset = resource.unit_type.span().start;
            if !unit_types.contains(unit_type.as_str()) {
                return Err(at(
                    type_offset,
                    format!(
                        "plan {id:?}: unit_type {unit_type:?} is not the type of any unit in {units_file_name}"
                    ),
                ));
            }
            if resources.iter().any(|r| &r.unit_type == unit_type) {
                return Err(at(
                    type_offset,
                    format!("plan {id:?}: unit_type {unit_type:?} is listed twice"),
                ));
            }
            let count = *resource.count.get_ref();
            if count == 0 {
                return Err(at(
                    resource.count.span().start,
                    format!("plan {id:?}: count for {unit_type:?} must be at least 1"),
                ));
            }
            resources.push(ResourceRequirement {
                unit_type: unit_type.clone(),
                count,
            });
        }

        plans.push(Plan {
            id: id.to_string(),
            name: entry.name.clone(),
            sub_types: codes,
            grade,
            resources,
        });
    }
    Ok(PlanBook { plans })
}

impl Region {
    /// Loads and cross-checks the four region files: units must live in townships of the
    /// jurisdiction file, plans must name sub-types of the catalogue and unit types of the units file.
    pub fn from_sources(
        jurisdictions: SourceFile,
        units: SourceFile,
        plans: SourceFile,
        rulebook: SourceFile,
    ) -> Result<Region, Error> {
        let tree = parse_jurisdictions(jurisdictions)?;
        let (units_list, speed_kmh_by_type) = parse_units(units, &tree, jurisdictions.name)?;
        let plans = parse_plans(plans, &units_list, units.name)?;
        let rulebook = Rulebook::from_toml(rulebook.name, rulebook.text)?;
        // Province overrides must name a province of this region's tree.
        rulebook.check_override_provinces(|code| match tree.get(code) {
            None => Some(format!(
                "is not a jurisdiction in {} (an override names a province code)",
                jurisdictions.name
            )),
            Some(jurisdiction) if jurisdiction.level != Level::Province => Some(format!(
                "is a {} in {}, not a province",
                jurisdiction.level.as_str(),
                jurisdictions.name
            )),
            Some(_) => None,
        })?;
        Ok(Region {
            tree,
            units: units_list,
            plans,
            rulebook,
            speed_kmh_by_type,
        })
    }

    /// The sample region shipped in `data/region/`.
    pub fn embedded_default() -> Region {
        let [jurisdictions, units, plans, rulebook] = DEFAULT_FILE_NAMES;
        let result = Region::from_sources(
            SourceFile {
                name: jurisdictions,
                text: JURISDICTIONS_TOML,
            },
            SourceFile {
                name: units,
                text: UNITS_TOML,
            },
            SourceFile {
                name: plans,
                text: PLANS_TOML,
            },
            SourceFile {
                name: rulebook,
                text: RULEBOOK_TOML,
            },
        );
        match result {
            Ok(region) => region,
            // A test loads the shipped files, so this only fires if that test was ignored.
            Err(error) => panic!("the embedded default region is broken: {error}"),
        }
    }

    /// The embedded text of the default region files, in [`DEFAULT_FILE_NAMES`] order (for
    /// tools that write them out as a starting point).
    pub fn embedded_default_sources() -> [SourceFile<'static>; 4] {
        let texts = [JURISDICTIONS_TOML, UNITS_TOML, PLANS_TOML, RULEBOOK_TOML];
        std::array::from_fn(|index| SourceFile {
            name: DEFAULT_FILE_NAMES[index],
            text: texts[index],
        })
    }

    /// The centroid of a township; `None` for unknown codes and non-township jurisdictions.
    pub fn township_centroid(&self, code: &str) -> Option<GeoPoint> {
        self.tree
            .get(code)
            .filter(|j| j.level == Level::Township)
            .and_then(|j| j.centroid)
    }

    pub fn unit(&self, unit_id: &str) -> Option<&Unit> {
        self.units.iter().find(|unit| unit.id == unit_id)
    }

    /// The distinct unit types, sorted.
    pub fn unit_types(&self) -> Vec<&str> {
        let types: BTreeSet<&str> = self.units.iter().map(|u| u.unit_type.as_str()).collect();
        types.into_iter().collect()
    }
}

//! The jurisdiction tree (national → province → city → county → township) and who leads an incident.
//!
//! Leading follows 属地管理为主 (territorial management first) and 分级负责 (graded
//! responsibility): the county where an incident happens leads, an incident that crosses county
//! lines goes to the lowest common parent, and the grade lifts the lead to the level it requires.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::Error;
use crate::geo::GeoPoint;
use crate::grade::{DensityClass, Grade};

/// Administrative level. Compares National smallest, so "higher" levels are smaller values and
/// a child's level is always strictly greater than its parent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Level {
    National,
    Province,
    City,
    County,
    Township,
}

impl Level {
    pub fn as_str(&self) -> &'static str {
        match self {
            Level::National => "national",
            Level::Province => "province",
            Level::City => "city",
            Level::County => "county",
            Level::Township => "township",
        }
    }
}

/// One administrative unit (or, at the root, the State Council).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Jurisdiction {
    /// GB/T 2260-style code: 6 digits down to county, 9 digits for townships.
    pub code: String,
    pub name: String,
    pub level: Level,
    /// Code of the parent; `None` only for the national root.
    pub parent: Option<String>,
    /// Required for townships: incidents are located by their township's centroid.
    pub centroid: Option<GeoPoint>,
    /// Required for townships: the earthquake initial judgement depends on it.
    pub density: Option<DensityClass>,
    /// Gross domestic product of the previous year, used by the earthquake plan's 1%-of-GDP criterion.
    pub gdp_cny: Option<u64>,
}

/// Which field of a jurisdiction a validation problem is about; lets the TOML loader point at it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TreeField {
    Entry,
    Code,
    Level,
    Parent,
    Centroid,
    Density,
}

/// A validation problem with the index of the offending item (None: the tree as a whole).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TreeProblem {
    pub index: Option<usize>,
    pub field: TreeField,
    pub problem: String,
}

impl TreeProblem {
    fn at(index: usize, field: TreeField, problem: String) -> TreeProblem {
        TreeProblem {
            index: Some(index),
            field,
            problem,
        }
    }
}

/// A validated tree of jurisdictions with exactly one national root.
///
/// Serialized as the plain list of jurisdictions (top-down); deserializing re-validates it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Vec<Jurisdiction>", into = "Vec<Jurisdiction>")]
pub struct JurisdictionTree {
    /// Sorted top-down: by level, then by code. The root is first.
    items: Vec<Jurisdiction>,
    index_by_code: BTreeMap<String, usize>,
}

/// The level of government that leads an incident of this grade (typical mapping, DOMAIN.md 4.2):
/// I → national, II → province, III → city, IV → county; ungraded incidents start at the county.
pub fn lead_level_for(grade: Option<Grade>) -> Level {
    match grade {
        Some(Grade::I) => Level::National,
        Some(Grade::II) => Level::Province,
        Some(Grade::III) => Level::City,
        Some(Grade::IV) | None => Level::County,
    }
}

/// Checks that `items` form a tree; the first problem found is returned.
pub(crate) fn validate(items: &[Jurisdiction]) -> Result<(), TreeProblem> {
    let mut index_by_code: BTreeMap<&str, usize> = BTreeMap::new();
    for (index, item) in items.iter().enumerate() {
        if item.code.trim().is_empty() {
            return Err(TreeProblem::at(
                index,
                TreeField::Code,
                "jurisdiction code is empty".into(),
            ));
        }
        if let Some(first) = index_by_code.insert(item.code.as_str(), index) {
            return Err(TreeProblem::at(
                index,
                TreeField::Code,
                format!(
                    "duplicate jurisdiction code {:?} (first used by {:?})",
                    item.code, items[first].name
                ),
            ));
        }
    }

    let mut root: Option<usize> = None;
    for (index, item) in items.iter().enumerate() {
        if item.parent.is_some() {
            continue;
        }
        if let Some(first_root) = root {
            return Err(TreeProblem::at(
                index,
                TreeField::Parent,
                format!(
                    "{:?} has no parent, but {:?} is already the root; only the national root may lack a parent",
                    item.code, items[first_root].code
                ),
            ));
        }
        if item.level != Level::National {
            return Err(TreeProblem::at(
                index,
                TreeField::Level,
                format!(
                    "{:?} has no parent but is level {}; the only root must be level national",
                    item.code,
                    item.level.as_str()
                ),
            ));
        }
        root = Some(index);
    }
    if root.is_none() {
        return Err(TreeProblem {
            index: None,
            field: TreeField::Entry,
            problem: "no root: exactly one jurisdiction (the national one) must have no parent"
                .into(),
        });
    }

    for (index, item) in items.iter().enumerate() {
        let Some(parent_code) = &item.parent else {
            continue;
        };
        if parent_code == &item.code {
            return Err(TreeProblem::at(
                index,
                TreeField::Parent,
                format!("{:?} is its own parent (cycle)", item.code),
            ));
        }
        let Some(&parent_index) = index_by_code.get(parent_code.as_str()) else {
            return Err(TreeProblem::at(
                index,
                TreeField::Parent,
                format!("parent {:?} of {:?} does not exist", parent_code, item.code),
            ));
        };
        let parent = &items[parent_index];
        if item.level <= parent.level {
            return Err(TreeProblem::at(
                index,
                TreeField::Level,
                format!(
                    "{:?} is level {} but its parent {:?} is level {}; a child must be strictly below its parent",
                    item.code,
                    item.level.as_str(),
                    parent.code,
                    parent.level.as_str()
                ),
            ));
        }
    }

    // Strictly descending levels already rule out cycles; this walk keeps the guarantee explicit
    // should the level rule ever be relaxed.
    for (index, item) in items.iter().enumerate() {
        let mut current = item;
        let mut steps = 0;
        while let Some(parent_code) = &current.parent {
            steps += 1;
            if steps > items.len() {
                return Err(TreeProblem::at(
                    index,
                    TreeField::Parent,
                    format!("the parents of {:?} form a cycle", item.code),
                ));
            }
            current = &items[index_by_code[parent_code.as_str()]];
        }
    }

    for (index, item) in items.iter().enumerate() {
        if let Some(problem) = item.centroid.and_then(|centroid| centroid.range_problem()) {
            return Err(TreeProblem::at(
                index,
                TreeField::Centroid,
                format!("centroid of {:?}: {problem}", item.code),
            ));
        }
        if item.level == Level::Township {
            if item.centroid.is_none() {
                return Err(TreeProblem::at(
                    index,
                    TreeField::Centroid,
                    format!("township {:?} has no centroid", item.code),
                ));
            }
            if item.density.is_none() {
                return Err(TreeProblem::at(
                    index,
                    TreeField::Density,
                    format!("township {:?} has no density class", item.code),
                ));
            }
        }
    }
    Ok(())
}

impl JurisdictionTree {
    /// Validates and indexes `items`: exactly one root (national), parents exist, each child is
    /// strictly below its parent's level, no cycles, unique codes, townships have centroid and
    /// density, centroids in range.
    pub fn new(items: Vec<Jurisdiction>) -> Result<Self, Error> {
        if let Err(problem) = validate(&items) {
            let code = problem
                .index
                .map(|index| items[index].code.clone())
                .unwrap_or_default();
            return Err(Error::InvalidJurisdiction {
                code,
                problem: problem.problem,
            });
        }
        let mut items = items;
        items.sort_by(|a, b| (a.level, &a.code).cmp(&(b.level, &b.code)));
        let index_by_code = items
            .iter()
            .enumerate()
            .map(|(index, item)| (item.code.clone(), index))
            .collect();
        Ok(JurisdictionTree {
            items,
            index_by_code,
        })
    }

    pub fn get(&self, code: &str) -> Option<&Jurisdiction> {
        self.index_by_code
            .get(code)
            .map(|&index| &self.items[index])
    }

    /// The national root.
    pub fn root(&self) -> &Jurisdiction {
        &self.items[0]
    }

    /// Every jurisdiction, top-down: root first, then by level, then by code.
    pub fn all(&self) -> impl Iterator<Item = &Jurisdiction> {
        self.items.iter()
    }

    /// Number of jurisdictions in the tree.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// Always false for a validated tree (it has a root); present for API symmetry with `len`.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// The direct children of `code`, ordered by code.
    pub fn children(&self, code: &str) -> Vec<&Jurisdiction> {
        self.items
            .iter()
            .filter(|item| item.parent.as_deref() == Some(code))
            .collect()
    }

    /// `code` itself first, then its parent, ..., the root last. Empty for an unknown code.
    pub fn ancestors(&self, code: &str) -> Vec<&Jurisdiction> {
        self.ancestors_iter(code).collect()
    }

    /// [`JurisdictionTree::ancestors`] without collecting them: for checks made once per unit of
    /// a roster (`in_subtree`), where the allocation was most of the cost.
    pub fn ancestors_iter<'a>(&'a self, code: &str) -> impl Iterator<Item = &'a Jurisdiction> + 'a {
        std::iter::successors(self.get(code), move |item| {
            item.parent.as_deref().and_then(|parent| self.get(parent))
        })
    }

    /// The ancestor of `code` (or `code` itself) at exactly `level`.
    pub fn ancestor_at(&self, code: &str, level: Level) -> Option<&Jurisdiction> {
        self.ancestors_iter(code).find(|item| item.level == level)
    }

    pub fn county_of(&self, code: &str) -> Option<&Jurisdiction> {
        self.ancestor_at(code, Level::County)
    }

    pub fn province_of(&self, code: &str) -> Option<&Jurisdiction> {
        self.ancestor_at(code, Level::Province)
    }

    /// The partition an incident located at `township_code` belongs to: the code of its
    /// province (属地: fixed where it happened, even when the lead moves up to national), or the
    /// root's code for a location in no province (an unknown or empty township: triage).
    /// Incident subjects carry it, so a service instance can consume one partition's subjects.
    pub fn partition_of(&self, township_code: &str) -> &str {
        self.province_of(township_code)
            .map_or(self.root().code.as_str(), |province| province.code.as_str())
    }

    /// Every partition code: each province's, and the root's (incidents in no province).
    pub fn partitions(&self) -> Vec<&str> {
        std::iter::once(self.root().code.as_str())
            .chain(
                self.items
                    .iter()
                    .filter(|item| item.level == Level::Province)
                    .map(|item| item.code.as_str()),
            )
            .collect()
    }

    /// Checks partition codes a service instance was asked to serve: each must be a province's
    /// code or the root's. The error names the first bad code and the valid ones.
    pub fn check_partitions(&self, codes: &[String]) -> Result<(), String> {
        let valid = self.partitions();
        for code in codes {
            if !valid.contains(&code.as_str()) {
                let what = match self.get(code) {
                    Some(j) => format!("{} ({}) is a {}", j.code, j.name, j.level.as_str()),
                    None => format!("{code:?} is not a jurisdiction of this region"),
                };
                return Err(format!(
                    "partition {code:?}: {what}; a partition is a province code or the root's \
                     (incidents outside every province): one of {}",
                    valid.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The deepest jurisdiction that is an ancestor of (or equal to) every code. `None` for an
    /// empty list or any unknown code.
    pub fn lowest_common_ancestor(&self, codes: &[&str]) -> Option<&Jurisdiction> {
        let (first, rest) = codes.split_first()?;
        let rest_chains: Vec<Vec<&Jurisdiction>> =
            rest.iter().map(|code| self.ancestors(code)).collect();
        if rest_chains.iter().any(Vec::is_empty) {
            return None;
        }
        self.ancestors(first).into_iter().find(|candidate| {
            rest_chains
                .iter()
                .all(|chain| chain.iter().any(|item| item.code == candidate.code))
        })
    }

    /// 属地管理为主 + 分级负责: the lead jurisdiction for an incident of `grade` at these townships.
    ///
    /// The base is the lowest common ancestor of the counties of the given townships (a
    /// single-county incident → that county). Each code is mapped to its nearest ancestor at
    /// county level or above, so a county code stands for itself and a code above county level
    /// (a city, say) is taken as given. The base is then lifted to the level the grade requires
    /// ([`lead_level_for`]); a base already above that level is kept. Where the tree skips a level
    /// (a county directly under a province), the nearest ancestor above the required level leads.
    pub fn lead_for(
        &self,
        grade: Option<Grade>,
        township_codes: &[&str],
    ) -> Result<&Jurisdiction, Error> {
        if township_codes.is_empty() {
            return Err(Error::NoTownships);
        }
        let mut base_codes: Vec<&str> = Vec::with_capacity(township_codes.len());
        for code in township_codes {
            let chain = self.ancestors(code);
            if chain.is_empty() {
                return Err(Error::UnknownJurisdiction {
                    code: (*code).to_string(),
                });
            }
            let territorial = chain
                .into_iter()
                .find(|item| item.level <= Level::County)
                .expect("the national root is at or above county level");
            base_codes.push(territorial.code.as_str());
        }
        let base = self
            .lowest_common_ancestor(&base_codes)
            .expect("all codes are known and share the root");
        let required = lead_level_for(grade);
        let lead = self
            .ancestors(&base.code)
            .into_iter()
            .find(|item| item.level <= required)
            .expect("the national root is at or above every level");
        Ok(lead)
    }
}

impl TryFrom<Vec<Jurisdiction>> for JurisdictionTree {
    type Error = Error;

    fn try_from(items: Vec<Jurisdiction>) -> Result<Self, Error> {
        JurisdictionTree::new(items)
    }
}

impl From<JurisdictionTree> for Vec<Jurisdiction> {
    fn from(tree: JurisdictionTree) -> Vec<Jurisdiction> {
        tree.items
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(code: &str, level: Level, parent: Option<&str>) -> Jurisdiction {
        let township = level == Level::Township;
        Jurisdiction {
            code: code.into(),
            name: code.into(),
            level,
            parent: parent.map(Into::into),
            centroid: township.then_some(GeoPoint::new(30.0, 120.0)),
            density: township.then_some(DensityClass::FairlyDense),
            gdp_cny: None,
        }
    }

    #[test]
    fn all_is_top_down() {
        let tree = JurisdictionTree::new(vec![
            node("100101001", Level::Township, Some("100101")),
            node("100101", Level::County, Some("100100")),
            node("100100", Level::City, Some("100000")),
            node("100000", Level::Province, Some("000000")),
            node("000000", Level::National, None),
        ])
        .unwrap();
        let codes: Vec<&str> = tree.all().map(|item| item.code.as_str()).collect();
        assert_eq!(codes, ["000000", "100000", "100100", "100101", "100101001"]);
        let json = serde_json::to_string(&tree).unwrap();
        let back: JurisdictionTree = serde_json::from_str(&json).unwrap();
        assert_eq!(back, tree);
    }

    #[test]
    fn the_partition_is_the_province_where_it_happened_or_the_root() {
        let tree = JurisdictionTree::new(vec![
            node("000000", Level::National, None),
            node("100000", Level::Province, Some("000000")),
            node("100101", Level::County, Some("100000")),
            node("100101001", Level::Township, Some("100101")),
            node("200000", Level::Province, Some("000000")),
            node("200101", Level::County, Some("200000")),
            node("200101001", Level::Township, Some("200101")),
        ])
        .unwrap();
        assert_eq!(tree.partition_of("100101001"), "100000");
        assert_eq!(tree.partition_of("200101001"), "200000");
        assert_eq!(tree.partition_of("100101"), "100000");
        // Triage: no township, or one the region does not know.
        assert_eq!(tree.partition_of(""), "000000");
        assert_eq!(tree.partition_of("999999001"), "000000");
        assert_eq!(tree.partitions(), ["000000", "100000", "200000"]);
        assert!(
            tree.check_partitions(&["200000".into(), "000000".into()])
                .is_ok()
        );
        let error = tree.check_partitions(&["100101".into()]).unwrap_err();
        assert!(error.contains("is a county"), "{error}");
        let error = tree.check_partitions(&["300000".into()]).unwrap_err();
        assert!(error.contains("000000, 100000, 200000"), "{error}");
    }

    #[test]
    fn lead_level_ladder() {
        assert_eq!(lead_level_for(Some(Grade::I)), Level::National);
        assert_eq!(lead_level_for(Some(Grade::II)), Level::Province);
        assert_eq!(lead_level_for(Some(Grade::III)), Level::City);
        assert_eq!(lead_level_for(Some(Grade::IV)), Level::County);
        assert_eq!(lead_level_for(None), Level::County);
    }

    #[test]
    fn skipped_level_leads_from_the_nearest_higher_ancestor() {
        // A county directly under the province (省直管县) has no city: grade III goes to the province.
        let tree = JurisdictionTree::new(vec![
            node("000000", Level::National, None),
            node("100000", Level::Province, Some("000000")),
            node("100901", Level::County, Some("100000")),
            node("100901001", Level::Township, Some("100901")),
        ])
        .unwrap();
        assert_eq!(
            tree.lead_for(Some(Grade::III), &["100901001"])
                .unwrap()
                .code,
            "100000"
        );
        assert_eq!(
            tree.lead_for(Some(Grade::IV), &["100901001"]).unwrap().code,
            "100901"
        );
    }
}

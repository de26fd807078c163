//! The rulebook at every boundary (issue 4 item 9): threshold − 1, threshold and threshold + 1 for
//! every criterion of every shipped rule and province override, explicit tables for the rules
//! added with the flood, public-health and override work, and located errors for bad overrides.

use domain::Error;
use domain::class::{SubType, sub_type, sub_types};
use domain::grade::{DensityClass, Facts, Grade};
use domain::region::{DEFAULT_FILE_NAMES, Region, SourceFile};
use domain::rulebook::{GradeDecision, Rule, Rulebook, Threshold};

fn st(code: &str) -> &'static SubType {
    sub_type(code).unwrap_or_else(|| panic!("unknown sub-type {code}"))
}

fn grade(code: &str, facts: &Facts, province: Option<&str>) -> GradeDecision {
    Rulebook::embedded_default().grade(st(code), facts, DensityClass::FairlyDense, province, None)
}

/// The facts-only criteria a threshold can hold (magnitude and GDP share have their own tests).
#[derive(Clone, Copy, Debug)]
enum Criterion {
    Deaths,
    SeriousInjuries,
    DirectLoss,
    PeopleAffected,
    PeopleEvacuated,
}

const CRITERIA: [Criterion; 5] = [
    Criterion::Deaths,
    Criterion::SeriousInjuries,
    Criterion::DirectLoss,
    Criterion::PeopleAffected,
    Criterion::PeopleEvacuated,
];

impl Criterion {
    fn min(self, threshold: &Threshold) -> Option<u64> {
        match self {
            Criterion::Deaths => threshold.deaths_min.map(u64::from),
            Criterion::SeriousInjuries => threshold.serious_injuries_min.map(u64::from),
            Criterion::DirectLoss => threshold.direct_loss_cny_min,
            Criterion::PeopleAffected => threshold.people_affected_min.map(u64::from),
            Criterion::PeopleEvacuated => threshold.people_evacuated_min.map(u64::from),
        }
    }

    fn facts(self, value: u64) -> Facts {
        let count = Some(value as u32);
        let mut facts = Facts::default();
        match self {
            Criterion::Deaths => facts.deaths = count,
            Criterion::SeriousInjuries => facts.serious_injuries = count,
            Criterion::DirectLoss => facts.direct_loss_cny = Some(value),
            Criterion::PeopleAffected => facts.people_affected = count,
            Criterion::PeopleEvacuated => facts.people_evacuated = count,
        }
        facts
    }

    /// How the reason names the fact.
    fn words(self) -> &'static str {
        match self {
            Criterion::Deaths => "deaths",
            Criterion::SeriousInjuries => "serious injuries",
            Criterion::DirectLoss => "direct loss",
            Criterion::PeopleAffected => "people affected",
            Criterion::PeopleEvacuated => "people evacuated",
        }
    }
}

/// The level one fact reaches in a threshold table: the most severe threshold whose minimum it
/// meets, else the floor (4).
fn expected_level(thresholds: &[Threshold], criterion: Criterion, value: u64) -> u8 {
    thresholds
        .iter()
        .find(|threshold| criterion.min(threshold).is_some_and(|min| value >= min))
        .map_or(4, |threshold| threshold.level)
}

/// A sub-type the rule grades (listed, or covered by its class fallback).
fn covered_sub_type(rulebook: &Rulebook, rule: &Rule) -> &'static SubType {
    sub_types()
        .iter()
        .find(|entry| {
            rulebook
                .rule_for(entry)
                .is_some_and(|(r, _)| r.id == rule.id)
        })
        .unwrap_or_else(|| panic!("rule {} covers nothing", rule.id))
}

#[test]
fn every_shipped_rule_and_override_at_every_boundary() {
    let rulebook = Rulebook::embedded_default();
    let mut checked = 0;
    for rule in rulebook.rules() {
        let entry = covered_sub_type(&rulebook, rule);
        // The rule's own table (no province), then each override's table (its province).
        let mut tables: Vec<(Option<&str>, &[Threshold])> = vec![(None, &rule.thresholds)];
        for province_override in &rule.overrides {
            tables.push((
                Some(province_override.province.as_str()),
                &province_override.thresholds,
            ));
        }
        for (province, thresholds) in tables {
            for threshold in thresholds {
                for criterion in CRITERIA {
                    let Some(min) = criterion.min(threshold) else {
                        continue;
                    };
                    for value in [min.saturating_sub(1), min, min + 1] {
                        let facts = criterion.facts(value);
                        let decision = rulebook.grade(
                            entry,
                            &facts,
                            DensityClass::FairlyDense,
                            province,
                            None,
                        );
                        let want = expected_level(thresholds, criterion, value);
                        let what = format!(
                            "rule {} (province {province:?}) {} {criterion:?} = {value} (min {min})",
                            rule.id, entry.code
                        );
                        assert_eq!(decision.rule_id, rule.id, "{what}");
                        assert_eq!(
                            decision.response_level,
                            Some(want),
                            "{what}: {}",
                            decision.reason
                        );
                        if rule.graded {
                            assert_eq!(decision.grade, Grade::from_number(want), "{what}");
                        } else {
                            assert_eq!(decision.grade, None, "{what}");
                        }
                        if value >= min {
                            // Reached: the reason names the fact, the bound and the level.
                            assert!(
                                decision.reason.contains(criterion.words())
                                    && decision.reason.contains(" ≥ ")
                                    && decision.reason.contains("threshold)"),
                                "{what}: {}",
                                decision.reason
                            );
                        }
                        match province {
                            Some(code) => assert!(
                                decision
                                    .reason
                                    .contains(&format!("province {code} override")),
                                "{what}: {}",
                                decision.reason
                            ),
                            None => assert!(!decision.reason.contains("override"), "{what}"),
                        }
                        checked += 1;
                    }
                }
            }
        }
    }
    assert!(checked > 100, "only {checked} boundary cases");
}

/// (sub-type, province, facts, expected grade, words the reason must contain)
type Case = (
    &'static str,
    Option<&'static str>,
    Facts,
    Grade,
    &'static str,
);

fn facts(
    deaths: Option<u32>,
    injuries: Option<u32>,
    affected: Option<u32>,
    evacuated: Option<u32>,
) -> Facts {
    Facts {
        deaths,
        serious_injuries: injuries,
        people_affected: affected,
        people_evacuated: evacuated,
        ..Facts::default()
    }
}

fn d(n: u32) -> Facts {
    facts(Some(n), None, None, None)
}

fn check(cases: &[Case]) {
    for (code, province, facts, want, words) in cases {
        let decision = grade(code, facts, *province);
        assert_eq!(
            decision.grade,
            Some(*want),
            "{code} {province:?} {facts:?}: {}",
            decision.reason
        );
        assert!(
            decision.reason.contains(words),
            "{code} {facts:?}: {words:?} not in {}",
            decision.reason
        );
    }
}

#[test]
fn fire_road_traffic_and_hazardous_chemicals_are_listed_under_decree_493() {
    for code in [
        "accident.fire",
        "accident.road_traffic",
        "accident.hazardous_chemicals",
    ] {
        let decision = grade(code, &d(10), None);
        assert_eq!(decision.rule_id, "production_safety", "{code}");
        assert!(
            !decision.reason.contains("class fallback"),
            "{code}: {}",
            decision.reason
        );
        check(&[
            (
                code,
                None,
                d(2),
                Grade::IV,
                "no threshold above grade IV reached (deaths 2)",
            ),
            (
                code,
                None,
                d(3),
                Grade::III,
                "deaths 3 ≥ 3 (grade III threshold)",
            ),
            (code, None, d(9), Grade::III, "deaths 9 ≥ 3"),
            (
                code,
                None,
                d(10),
                Grade::II,
                "deaths 10 ≥ 10 (grade II threshold)",
            ),
            (
                code,
                None,
                d(12),
                Grade::II,
                "deaths 12 ≥ 10 (grade II threshold)",
            ),
            (code, None, d(29), Grade::II, "deaths 29 ≥ 10"),
            (
                code,
                None,
                d(30),
                Grade::I,
                "deaths 30 ≥ 30 (grade I threshold)",
            ),
            (code, None, d(31), Grade::I, "deaths 31 ≥ 30"),
        ]);
    }
}

#[test]
fn flood_boundaries() {
    let missing = |dead: u32, missing: u32| Facts {
        deaths: Some(dead),
        missing: Some(missing),
        ..Facts::default()
    };
    let f = "natural.flood";
    check(&[
        (f, None, d(49), Grade::IV, "floor"),
        (
            f,
            None,
            d(50),
            Grade::III,
            "deaths incl. missing 50 (50 dead + 0 missing) ≥ 50",
        ),
        (f, None, d(51), Grade::III, "≥ 50 (grade III threshold)"),
        (
            f,
            None,
            missing(40, 9),
            Grade::IV,
            "49 (40 dead + 9 missing)",
        ),
        (
            f,
            None,
            missing(40, 10),
            Grade::III,
            "50 (40 dead + 10 missing) ≥ 50",
        ),
        (f, None, d(99), Grade::III, "≥ 50"),
        (f, None, d(100), Grade::II, "≥ 100 (grade II threshold)"),
        (f, None, d(199), Grade::II, "≥ 100"),
        (f, None, d(200), Grade::I, "≥ 200 (grade I threshold)"),
        (
            f,
            None,
            facts(None, None, None, Some(499_999)),
            Grade::IV,
            "people evacuated 499,999",
        ),
        (
            f,
            None,
            facts(None, None, None, Some(500_000)),
            Grade::III,
            "people evacuated 500,000 ≥ 500,000",
        ),
        (
            f,
            None,
            facts(None, None, None, Some(999_999)),
            Grade::III,
            "≥ 500,000",
        ),
        (
            f,
            None,
            facts(None, None, None, Some(1_000_000)),
            Grade::II,
            "≥ 1,000,000 (grade II threshold)",
        ),
        (
            f,
            None,
            facts(None, None, None, Some(1_999_999)),
            Grade::II,
            "≥ 1,000,000",
        ),
        (
            f,
            None,
            facts(None, None, None, Some(2_000_000)),
            Grade::I,
            "≥ 2,000,000 (grade I threshold)",
        ),
        (
            f,
            None,
            facts(None, None, None, Some(2_000_001)),
            Grade::I,
            "≥ 2,000,000",
        ),
    ]);
    let decision = grade(f, &d(60), None);
    assert_eq!(decision.rule_id, "flood");
    assert!(
        decision.reason.contains("provisional"),
        "{}",
        decision.reason
    );
}

#[test]
fn food_and_occupational_poisoning_boundaries() {
    let food = "public_health.food_safety";
    let job = "public_health.occupational_poisoning";
    check(&[
        (
            food,
            None,
            facts(Some(0), None, Some(100), None),
            Grade::IV,
            "people affected 100",
        ),
        (
            food,
            None,
            facts(Some(0), None, Some(101), None),
            Grade::III,
            "people affected 101 ≥ 101 (grade III threshold)",
        ),
        (
            food,
            None,
            facts(Some(0), None, Some(102), None),
            Grade::III,
            "people affected 102 ≥ 101",
        ),
        (food, None, d(0), Grade::IV, "floor"),
        (
            food,
            None,
            d(1),
            Grade::III,
            "deaths 1 ≥ 1 (grade III threshold)",
        ),
        (food, None, d(9), Grade::III, "deaths 9 ≥ 1"),
        (
            food,
            None,
            d(10),
            Grade::II,
            "deaths 10 ≥ 10 (grade II threshold)",
        ),
        (food, None, d(11), Grade::II, "deaths 11 ≥ 10"),
        (
            job,
            None,
            facts(None, Some(9), None, None),
            Grade::IV,
            "serious injuries 9",
        ),
        (
            job,
            None,
            facts(None, Some(10), None, None),
            Grade::III,
            "serious injuries 10 ≥ 10 (grade III threshold)",
        ),
        (
            job,
            None,
            facts(None, Some(49), None, None),
            Grade::III,
            "serious injuries 49 ≥ 10",
        ),
        (
            job,
            None,
            facts(None, Some(50), None, None),
            Grade::II,
            "serious injuries 50 ≥ 50 (grade II threshold)",
        ),
        (
            job,
            None,
            facts(None, Some(51), None, None),
            Grade::II,
            "serious injuries 51 ≥ 50",
        ),
        (job, None, d(0), Grade::IV, "floor"),
        (job, None, d(1), Grade::III, "deaths 1 ≥ 1"),
        (job, None, d(4), Grade::III, "deaths 4 ≥ 1"),
        (
            job,
            None,
            d(5),
            Grade::II,
            "deaths 5 ≥ 5 (grade II threshold)",
        ),
        (job, None, d(6), Grade::II, "deaths 6 ≥ 5"),
    ]);
    assert_eq!(grade(food, &d(1), None).rule_id, "food_poisoning");
    assert_eq!(grade(job, &d(1), None).rule_id, "occupational_poisoning");
}

#[test]
fn the_sample_province_override_is_stricter_on_serious_injuries_only() {
    let chem = "accident.hazardous_chemicals";
    let p = Some("390000");
    let injured = |n: u32| facts(None, Some(n), None, None);
    check(&[
        // The override's serious-injury table.
        (chem, p, injured(4), Grade::IV, "province 390000 override"),
        (
            chem,
            p,
            injured(5),
            Grade::III,
            "serious injuries 5 ≥ 5 (grade III threshold)",
        ),
        (chem, p, injured(6), Grade::III, "serious injuries 6 ≥ 5"),
        (chem, p, injured(29), Grade::III, "province 390000 override"),
        (
            chem,
            p,
            injured(30),
            Grade::II,
            "serious injuries 30 ≥ 30 (grade II threshold)",
        ),
        (chem, p, injured(31), Grade::II, "serious injuries 31 ≥ 30"),
        (chem, p, injured(79), Grade::II, "province 390000 override"),
        (
            chem,
            p,
            injured(80),
            Grade::I,
            "serious injuries 80 ≥ 80 (grade I threshold)",
        ),
        (chem, p, injured(81), Grade::I, "serious injuries 81 ≥ 80"),
        // Deaths keep the national figures: 12 deaths stay grade II (province-led).
        (chem, p, d(2), Grade::IV, "province 390000 override"),
        (
            chem,
            p,
            d(3),
            Grade::III,
            "deaths 3 ≥ 3 (grade III threshold)",
        ),
        (chem, p, d(9), Grade::III, "deaths 9 ≥ 3"),
        (chem, p, d(10), Grade::II, "deaths 10 ≥ 10"),
        (
            chem,
            p,
            d(12),
            Grade::II,
            "deaths 12 ≥ 10 (grade II threshold)",
        ),
        (chem, p, d(29), Grade::II, "deaths 29 ≥ 10"),
        (chem, p, d(30), Grade::I, "deaths 30 ≥ 30"),
        // Outside the province, the national table.
        (chem, None, injured(5), Grade::IV, "serious injuries 5"),
        (
            chem,
            Some("410000"),
            injured(30),
            Grade::III,
            "serious injuries 30 ≥ 10",
        ),
    ]);
    let decision = grade(chem, &injured(30), p);
    assert!(
        decision.reason.contains("provisional province override"),
        "{}",
        decision.reason
    );
    assert!(!grade(chem, &injured(30), None).reason.contains("override"));
}

// ---- Located errors for bad overrides ------------------------------------------------------------

const OVERRIDE: &str = "[[rule.override]]\nprovince = \"390000\"";

fn line_of(text: &str, needle: &str, nth: usize) -> usize {
    text.lines()
        .enumerate()
        .filter(|(_, line)| line.contains(needle))
        .nth(nth)
        .unwrap_or_else(|| panic!("{needle:?} #{nth} not in text"))
        .0
        + 1
}

/// The shipped rulebook with a second override for the same province in the same rule.
fn with_duplicate_override() -> String {
    let base = shipped_text();
    let extra = "\n[[rule.override]]\nprovince = \"390000\"\nsource = \"again\"\n\n[[rule.override.threshold]]\ngrade = \"IV\"\n";
    // Right after the first override's grade IV threshold.
    let anchor = "source = \"example of a stricter provincial rule";
    let start = base.find(anchor).unwrap();
    let end = start + base[start..].find("grade = \"IV\"\n").unwrap() + "grade = \"IV\"\n".len();
    format!("{}{extra}{}", &base[..end], &base[end..])
}

/// The shipped rulebook's text.
fn shipped_text() -> String {
    Region::embedded_default_sources()[3].text.to_string()
}

#[test]
fn a_duplicate_province_override_is_refused_at_its_line() {
    let text = with_duplicate_override();
    let error = Rulebook::from_toml("rulebook.toml", &text).unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "rulebook.toml:{}:12: rule \"production_safety\": duplicate override for province \"390000\" (one [[rule.override]] per province)",
            line_of(&text, "province = \"390000\"", 1)
        )
    );
}

#[test]
fn override_thresholds_are_validated_like_the_rules() {
    let base = shipped_text();
    assert!(base.contains(OVERRIDE));
    // Not descending inside the override.
    let text = base.replacen(
        "serious_injuries_min = 5\n",
        "serious_injuries_min = 35\n",
        1,
    );
    let error = Rulebook::from_toml("rulebook.toml", &text).unwrap_err();
    let message = error.to_string();
    assert!(
        message.starts_with(&format!(
            "rulebook.toml:{}:",
            line_of(&text, "serious_injuries_min = 35", 0)
        )) && message.contains("production_safety (province 390000 override)")
            && message.contains("must be below 30"),
        "{message}"
    );
    // No thresholds at all.
    let start = base.find(OVERRIDE).unwrap();
    let end = base[start..].find("# National Earthquake").unwrap() + start;
    let text = format!(
        "{}{OVERRIDE}\nsource = \"empty\"\n\n{}",
        &base[..start],
        &base[end..]
    );
    let error = Rulebook::from_toml("rulebook.toml", &text).unwrap_err();
    assert!(
        error
            .to_string()
            .contains("has no [[rule.override.threshold]] entries"),
        "{error}"
    );
    // An unknown key.
    let text = base.replacen(OVERRIDE, &format!("{OVERRIDE}\nprefecture = \"x\""), 1);
    let error = Rulebook::from_toml("rulebook.toml", &text).unwrap_err();
    assert!(
        error.to_string().starts_with(&format!(
            "rulebook.toml:{}:",
            line_of(&text, "prefecture = ", 0)
        )),
        "{error}"
    );
}

fn load_with_rulebook(text: &str) -> Result<Region, Error> {
    let files = Region::embedded_default_sources();
    Region::from_sources(
        files[0],
        files[1],
        files[2],
        SourceFile {
            name: DEFAULT_FILE_NAMES[3],
            text,
        },
    )
}

#[test]
fn an_override_province_must_be_a_province_of_the_region() {
    let base = shipped_text();
    // Parses on its own: the rulebook does not know the tree.
    for (code, problem) in [
        ("990000", "is not a jurisdiction in jurisdictions.toml"),
        ("390200", "is a city in jurisdictions.toml, not a province"),
    ] {
        let text = base.replacen(
            OVERRIDE,
            &format!("[[rule.override]]\nprovince = \"{code}\""),
            1,
        );
        assert!(Rulebook::from_toml("rulebook.toml", &text).is_ok());
        let error = load_with_rulebook(&text).unwrap_err();
        let Error::Source {
            file,
            line,
            column,
            problem: message,
        } = &error
        else {
            panic!("{error:?}")
        };
        assert_eq!(file, "rulebook.toml");
        assert_eq!(*line, line_of(&text, &format!("province = \"{code}\""), 0));
        assert_eq!(*column, 12);
        assert!(
            message.contains(&format!("override province \"{code}\": {problem}")),
            "{error}"
        );
    }
    assert!(load_with_rulebook(&base).is_ok());
}

#[test]
fn a_warning_colour_calls_for_a_response_level_where_the_rule_maps_it() {
    use domain::grade::WarningLevel;
    let rulebook = Region::embedded_default().rulebook;
    let flood = sub_type("natural.flood").unwrap();
    let (level, why) = rulebook
        .warning_response(flood, WarningLevel::Red)
        .expect("the flood rule maps red");
    assert_eq!(level, 1);
    assert!(
        why.contains("red warning") && why.contains("flood v1"),
        "{why}"
    );
    assert_eq!(
        rulebook
            .warning_response(flood, WarningLevel::Yellow)
            .unwrap()
            .0,
        3
    );
    // Decree 493 accidents are not forecast: no warning mapping.
    let chemicals = sub_type("accident.hazardous_chemicals").unwrap();
    assert!(
        rulebook
            .warning_response(chemicals, WarningLevel::Red)
            .is_none()
    );
}

#[test]
fn a_bad_warning_response_is_refused_at_its_line() {
    let base = shipped_text();
    let text = base.replacen("red = 1\n", "purple = 1\n", 1);
    let message = Rulebook::from_toml("rulebook.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(
        message.starts_with(&format!(
            "rulebook.toml:{}:",
            line_of(&text, "purple = 1", 0)
        )) && message.contains("not a warning colour"),
        "{message}"
    );
    let text = base.replacen("orange = 2\n", "orange = 7\n", 1);
    let message = Rulebook::from_toml("rulebook.toml", &text)
        .unwrap_err()
        .to_string();
    assert!(
        message.contains("a response level is 1 (highest) to 4"),
        "{message}"
    );
}

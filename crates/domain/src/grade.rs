//! Event grades (事件分级 I..IV), population-density classes and the facts grading rules look at.

use serde::{Deserialize, Serialize};

/// Event grade, 2024 law Art. 3. `I` is the most severe, and compares smallest (`I < II`), so the
/// minimum of several grades is the most severe one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum Grade {
    /// 特别重大
    I,
    /// 重大
    II,
    /// 较大
    III,
    /// 一般
    IV,
}

impl Grade {
    /// Most severe first.
    pub const ALL: [Grade; 4] = [Grade::I, Grade::II, Grade::III, Grade::IV];

    pub fn roman(&self) -> &'static str {
        match self {
            Grade::I => "I",
            Grade::II => "II",
            Grade::III => "III",
            Grade::IV => "IV",
        }
    }

    pub fn zh(&self) -> &'static str {
        match self {
            Grade::I => "特别重大",
            Grade::II => "重大",
            Grade::III => "较大",
            Grade::IV => "一般",
        }
    }

    /// The response level (1 highest) that goes with this grade by default.
    pub fn response_level(&self) -> u8 {
        self.number()
    }

    /// 1 for I .. 4 for IV.
    pub fn number(&self) -> u8 {
        match self {
            Grade::I => 1,
            Grade::II => 2,
            Grade::III => 3,
            Grade::IV => 4,
        }
    }

    pub fn from_number(number: u8) -> Option<Grade> {
        match number {
            1 => Some(Grade::I),
            2 => Some(Grade::II),
            3 => Some(Grade::III),
            4 => Some(Grade::IV),
            _ => None,
        }
    }

    pub fn from_roman(roman: &str) -> Option<Grade> {
        Grade::ALL.into_iter().find(|grade| grade.roman() == roman)
    }
}

impl std::fmt::Display for Grade {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.roman())
    }
}

/// Population-density class of a township; the earthquake plan's initial judgement depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DensityClass {
    /// 人口稀疏
    Sparse,
    /// 人口较密集
    FairlyDense,
    /// 人口密集
    Dense,
}

impl DensityClass {
    /// The data-file spelling (`sparse`, `fairly_dense`, `dense`).
    pub fn as_str(&self) -> &'static str {
        match self {
            DensityClass::Sparse => "sparse",
            DensityClass::FairlyDense => "fairly_dense",
            DensityClass::Dense => "dense",
        }
    }
}

/// What is known about an incident's consequences. `None` means "not reported yet", which is
/// different from zero.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct Facts {
    pub deaths: Option<u32>,
    pub missing: Option<u32>,
    /// Serious injuries, including acute poisoning (Decree 493 counts them together).
    pub serious_injuries: Option<u32>,
    pub direct_loss_cny: Option<u64>,
    /// Earthquake magnitude (M).
    pub magnitude: Option<f64>,
    /// People affected (受灾人数); in public-health events, the cases (发病人数).
    pub people_affected: Option<u32>,
    /// People evacuated or relocated in an emergency (紧急转移安置人数).
    pub people_evacuated: Option<u32>,
}

/// Warning level 预警级别 (2024 law Art. 63): a scale of its own, beside grade and response level.
/// Red is the highest. CAP severity maps onto it (Extreme↔red, Severe↔orange, Moderate↔yellow,
/// Minor↔blue).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WarningLevel {
    Red,
    Orange,
    Yellow,
    Blue,
}

impl WarningLevel {
    pub const ALL: [WarningLevel; 4] = [
        WarningLevel::Red,
        WarningLevel::Orange,
        WarningLevel::Yellow,
        WarningLevel::Blue,
    ];

    /// 1 (red) to 4 (blue).
    pub fn number(&self) -> u8 {
        match self {
            WarningLevel::Red => 1,
            WarningLevel::Orange => 2,
            WarningLevel::Yellow => 3,
            WarningLevel::Blue => 4,
        }
    }

    pub fn from_number(number: u8) -> Option<WarningLevel> {
        WarningLevel::ALL.into_iter().find(|w| w.number() == number)
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            WarningLevel::Red => "red",
            WarningLevel::Orange => "orange",
            WarningLevel::Yellow => "yellow",
            WarningLevel::Blue => "blue",
        }
    }

    pub fn parse(text: &str) -> Option<WarningLevel> {
        WarningLevel::ALL
            .into_iter()
            .find(|w| w.as_str().eq_ignore_ascii_case(text.trim()))
    }

    pub fn zh(&self) -> &'static str {
        match self {
            WarningLevel::Red => "红色",
            WarningLevel::Orange => "橙色",
            WarningLevel::Yellow => "黄色",
            WarningLevel::Blue => "蓝色",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grade_i_is_most_severe_and_smallest() {
        assert!(Grade::I < Grade::II && Grade::II < Grade::III && Grade::III < Grade::IV);
        assert_eq!([Grade::III, Grade::I].into_iter().min(), Some(Grade::I));
    }

    #[test]
    fn numbers_round_trip() {
        for grade in Grade::ALL {
            assert_eq!(Grade::from_number(grade.number()), Some(grade));
            assert_eq!(Grade::from_roman(grade.roman()), Some(grade));
            assert_eq!(grade.response_level(), grade.number());
        }
        assert_eq!(Grade::from_number(0), None);
        assert_eq!(Grade::from_number(5), None);
        assert_eq!(Grade::II.zh(), "重大");
    }

    #[test]
    fn density_serializes_snake_case() {
        let json = serde_json::to_string(&DensityClass::FairlyDense).unwrap();
        assert_eq!(json, "\"fairly_dense\"");
    }

    #[test]
    fn facts_deserialize_with_missing_fields() {
        let facts: Facts = serde_json::from_str(r#"{"deaths": 3}"#).unwrap();
        assert_eq!(
            facts,
            Facts {
                deaths: Some(3),
                ..Facts::default()
            }
        );
    }
}

//! Statutory incident classes (分类, 2024 Emergency Response Law Art. 2) and the sub-type catalogue.
//!
//! Sub-type codes are `<class prefix>.<name>`, e.g. `accident.hazardous_chemicals`. The class
//! prefix is also how [`IncidentClass`] is written in data files and JSON (`natural`, `accident`,
//! `public_health`, `social_safety`), so a code and its class always read the same.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The four statutory classes of emergencies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IncidentClass {
    /// 自然灾害
    #[serde(rename = "natural")]
    NaturalDisaster,
    /// 事故灾难
    #[serde(rename = "accident")]
    Accident,
    /// 公共卫生事件
    #[serde(rename = "public_health")]
    PublicHealth,
    /// 社会安全事件
    #[serde(rename = "social_safety")]
    SocialSafety,
    /// Not one of the statutory classes (yet): an automated alert no mapping rule recognised, or
    /// an operational alarm such as a silent feed. A visible triage state, never a silent drop.
    #[serde(rename = "unclassified")]
    Unclassified,
}

impl IncidentClass {
    pub const ALL: [IncidentClass; 5] = [
        IncidentClass::NaturalDisaster,
        IncidentClass::Accident,
        IncidentClass::PublicHealth,
        IncidentClass::SocialSafety,
        IncidentClass::Unclassified,
    ];

    /// The prefix of this class's sub-type codes, and its spelling in data files.
    pub fn prefix(&self) -> &'static str {
        match self {
            IncidentClass::NaturalDisaster => "natural",
            IncidentClass::Accident => "accident",
            IncidentClass::PublicHealth => "public_health",
            IncidentClass::SocialSafety => "social_safety",
            IncidentClass::Unclassified => "unclassified",
        }
    }

    pub fn from_prefix(prefix: &str) -> Option<IncidentClass> {
        IncidentClass::ALL
            .into_iter()
            .find(|class| class.prefix() == prefix)
    }

    pub fn name_en(&self) -> &'static str {
        match self {
            IncidentClass::NaturalDisaster => "natural disaster",
            IncidentClass::Accident => "accident",
            IncidentClass::PublicHealth => "public health event",
            IncidentClass::SocialSafety => "social safety event",
            IncidentClass::Unclassified => "unclassified (triage)",
        }
    }

    pub fn name_zh(&self) -> &'static str {
        match self {
            IncidentClass::NaturalDisaster => "自然灾害",
            IncidentClass::Accident => "事故灾难",
            IncidentClass::PublicHealth => "公共卫生事件",
            IncidentClass::SocialSafety => "社会安全事件",
            IncidentClass::Unclassified => "待分类",
        }
    }

    /// Whether the law grades events of this class (I..IV). It does not grade social-safety
    /// events (2024 law Art. 3); those only get a response level. Unclassified incidents are
    /// not graded until an officer classifies them.
    pub fn is_graded(&self) -> bool {
        !matches!(
            self,
            IncidentClass::SocialSafety | IncidentClass::Unclassified
        )
    }
}

/// One entry of the sub-type catalogue.
///
/// Serialized as its code (`"accident.fire"`); deserializing looks the code up in the catalogue.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SubType {
    pub code: &'static str,
    pub class: IncidentClass,
    pub name_en: &'static str,
    pub name_zh: &'static str,
}

impl Serialize for SubType {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(self.code)
    }
}

impl<'de> Deserialize<'de> for SubType {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<SubType, D::Error> {
        let code = String::deserialize(deserializer)?;
        sub_type(&code)
            .cloned()
            .ok_or_else(|| serde::de::Error::custom(format!("unknown sub-type code {code:?}")))
    }
}

const fn entry(
    code: &'static str,
    class: IncidentClass,
    name_en: &'static str,
    name_zh: &'static str,
) -> SubType {
    SubType {
        code,
        class,
        name_en,
        name_zh,
    }
}

use IncidentClass::{Accident, NaturalDisaster, PublicHealth, SocialSafety, Unclassified};

static SUB_TYPES: [SubType; 34] = [
    entry("natural.flood", NaturalDisaster, "flood", "洪涝灾害"),
    entry("natural.drought", NaturalDisaster, "drought", "干旱灾害"),
    entry(
        "natural.meteorological",
        NaturalDisaster,
        "meteorological disaster",
        "气象灾害",
    ),
    entry(
        "natural.earthquake",
        NaturalDisaster,
        "earthquake",
        "地震灾害",
    ),
    entry(
        "natural.geological",
        NaturalDisaster,
        "geological disaster (landslide, debris flow)",
        "地质灾害",
    ),
    entry(
        "natural.marine",
        NaturalDisaster,
        "marine disaster (storm surge, tsunami)",
        "海洋灾害",
    ),
    entry(
        "natural.biological",
        NaturalDisaster,
        "biological disaster (pests)",
        "生物灾害",
    ),
    entry(
        "natural.forest_fire",
        NaturalDisaster,
        "forest or grassland fire",
        "森林草原火灾",
    ),
    entry("accident.mine", Accident, "mine accident", "矿山事故"),
    entry(
        "accident.hazardous_chemicals",
        Accident,
        "hazardous chemicals accident",
        "危险化学品事故",
    ),
    entry(
        "accident.fireworks",
        Accident,
        "fireworks accident",
        "烟花爆竹事故",
    ),
    entry(
        "accident.special_equipment",
        Accident,
        "special equipment accident",
        "特种设备事故",
    ),
    entry(
        "accident.construction",
        Accident,
        "construction accident",
        "建筑施工事故",
    ),
    entry(
        "accident.road_traffic",
        Accident,
        "road traffic accident",
        "道路交通事故",
    ),
    entry("accident.rail", Accident, "rail accident", "铁路交通事故"),
    entry(
        "accident.water_transport",
        Accident,
        "water transport accident",
        "水上交通事故",
    ),
    entry(
        "accident.aviation",
        Accident,
        "aviation accident",
        "民用航空器事故",
    ),
    entry("accident.fire", Accident, "fire", "火灾事故"),
    entry(
        "accident.public_facilities",
        Accident,
        "public facilities and equipment accident",
        "公共设施和设备事故",
    ),
    entry(
        "accident.environmental_pollution",
        Accident,
        "environmental pollution and ecological damage",
        "环境污染和生态破坏事件",
    ),
    entry(
        "accident.nuclear",
        Accident,
        "nuclear or radiation accident",
        "核与辐射事故",
    ),
    entry(
        "accident.network",
        Accident,
        "network and information security incident",
        "网络与信息安全事件",
    ),
    entry(
        "public_health.epidemic",
        PublicHealth,
        "infectious disease epidemic",
        "传染病疫情",
    ),
    entry(
        "public_health.unexplained_illness",
        PublicHealth,
        "cluster of unexplained illness",
        "群体性不明原因疾病",
    ),
    entry(
        "public_health.food_safety",
        PublicHealth,
        "food safety incident",
        "食品安全事件",
    ),
    entry(
        "public_health.occupational_poisoning",
        PublicHealth,
        "occupational poisoning",
        "职业中毒",
    ),
    entry(
        "public_health.animal_epidemic",
        PublicHealth,
        "animal epidemic",
        "动物疫情",
    ),
    entry(
        "social_safety.mass_incident",
        SocialSafety,
        "mass incident",
        "群体性事件",
    ),
    entry(
        "social_safety.terrorism",
        SocialSafety,
        "terrorist attack",
        "恐怖袭击事件",
    ),
    entry(
        "social_safety.major_crime",
        SocialSafety,
        "major criminal case",
        "重大刑事案件",
    ),
    entry(
        "social_safety.economic_security",
        SocialSafety,
        "economic security incident",
        "经济安全事件",
    ),
    entry(
        "social_safety.foreign_related",
        SocialSafety,
        "foreign-related incident",
        "涉外突发事件",
    ),
    entry(
        "unclassified.unmapped",
        Unclassified,
        "automated alert no mapping rule recognised",
        "待分类预警",
    ),
    entry(
        "unclassified.feed_silent",
        Unclassified,
        "monitoring feed went silent",
        "监测数据中断",
    ),
];

/// The whole catalogue, grouped by class in statutory order.
pub fn sub_types() -> &'static [SubType] {
    &SUB_TYPES
}

/// Looks a sub-type up by its exact code.
pub fn sub_type(code: &str) -> Option<&'static SubType> {
    SUB_TYPES.iter().find(|entry| entry.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_starts_with_its_class_prefix_and_is_unique() {
        let mut seen = std::collections::BTreeSet::new();
        for entry in sub_types() {
            let (prefix, name) = entry.code.split_once('.').expect("code has a dot");
            assert_eq!(
                IncidentClass::from_prefix(prefix),
                Some(entry.class),
                "{}",
                entry.code
            );
            assert!(!name.is_empty());
            assert!(seen.insert(entry.code), "duplicate {}", entry.code);
        }
    }

    #[test]
    fn sub_type_serializes_as_its_code() {
        let fire = sub_type("accident.fire").unwrap();
        let json = serde_json::to_string(fire).unwrap();
        assert_eq!(json, "\"accident.fire\"");
        let back: SubType = serde_json::from_str(&json).unwrap();
        assert_eq!(&back, fire);
        assert!(serde_json::from_str::<SubType>("\"accident.nope\"").is_err());
    }

    #[test]
    fn class_serializes_as_prefix() {
        let json = serde_json::to_string(&IncidentClass::NaturalDisaster).unwrap();
        assert_eq!(json, "\"natural\"");
    }
}

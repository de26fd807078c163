//! The escalation policy as data: ack deadlines, escalation steps and reporting obligations.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::Error;
use crate::class::{IncidentClass, SubType, sub_type};
use crate::grade::Grade;
use crate::jurisdiction::Level;
use crate::source::{error_at, parse_toml};

/// The text of the default policy, as shipped in `data/region/escalation.toml`.
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../../../data/region/escalation.toml");

const MS_PER_MINUTE: i64 = 60_000;
const MS_PER_DAY: i64 = 24 * 60 * MS_PER_MINUTE;

/// A validated escalation policy.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EscalationPolicy {
    /// The file the policy was loaded from, for messages.
    pub file_name: String,
    pub version: u32,
    ack_default: GradeMinutes,
    ack_by_level: BTreeMap<Level, PartialGradeMinutes>,
    steps: Vec<Step>,
    num_loops: u32,
    obligation_rules: Vec<ObligationRule>,
    /// How long one policy minute lasts, in milliseconds: 60 000, except where tests and
    /// exercises compress time with [`EscalationPolicy::with_minute_ms`]. Never read from a file.
    #[serde(default = "minute_ms_default")]
    minute_ms: i64,
}

fn minute_ms_default() -> i64 {
    MS_PER_MINUTE
}

/// Minutes for each grade, and for ungraded (social-safety) incidents.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct GradeMinutes {
    pub grade_i: u32,
    pub grade_ii: u32,
    pub grade_iii: u32,
    pub grade_iv: u32,
    pub ungraded: u32,
}

/// A per-level override: only the grades it names.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
struct PartialGradeMinutes {
    grade_i: Option<u32>,
    grade_ii: Option<u32>,
    grade_iii: Option<u32>,
    grade_iv: Option<u32>,
    ungraded: Option<u32>,
}

impl PartialGradeMinutes {
    fn get(&self, grade: Option<Grade>) -> Option<u32> {
        match grade {
            Some(Grade::I) => self.grade_i,
            Some(Grade::II) => self.grade_ii,
            Some(Grade::III) => self.grade_iii,
            Some(Grade::IV) => self.grade_iv,
            None => self.ungraded,
        }
    }
}

impl GradeMinutes {
    pub fn get(&self, grade: Option<Grade>) -> u32 {
        match grade {
            Some(Grade::I) => self.grade_i,
            Some(Grade::II) => self.grade_ii,
            Some(Grade::III) => self.grade_iii,
            Some(Grade::IV) => self.grade_iv,
            None => self.ungraded,
        }
    }
}

/// One step of the escalation chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Step {
    /// Notify the duty roster of the level currently asked to acknowledge.
    Notify,
    /// Wait a fixed time.
    Wait { minutes: u32 },
    /// Wait the ack deadline of the current level and grade.
    WaitAckDeadline,
    /// Move the level asked to acknowledge one rung up the ladder.
    Escalate,
    /// Jump back to `from_step` (0-based here; 1-based in the file), at most `num_loops` times.
    Repeat { from_step: usize },
}

/// Who makes or receives a report: the reporting unit (enterprise, hospital) or a level of
/// government.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportTier {
    Unit,
    Township,
    County,
    City,
    Province,
    National,
}

impl ReportTier {
    /// The level of government, or `None` for the reporting unit.
    pub fn level(&self) -> Option<Level> {
        match self {
            ReportTier::Unit => None,
            ReportTier::Township => Some(Level::Township),
            ReportTier::County => Some(Level::County),
            ReportTier::City => Some(Level::City),
            ReportTier::Province => Some(Level::Province),
            ReportTier::National => Some(Level::National),
        }
    }

    pub fn from_level(level: Level) -> ReportTier {
        match level {
            Level::Township => ReportTier::Township,
            Level::County => ReportTier::County,
            Level::City => ReportTier::City,
            Level::Province => ReportTier::Province,
            Level::National => ReportTier::National,
        }
    }

    /// Higher tiers rank higher: unit 0 .. national 5.
    fn rank(&self) -> u8 {
        match self {
            ReportTier::Unit => 0,
            ReportTier::Township => 1,
            ReportTier::County => 2,
            ReportTier::City => 3,
            ReportTier::Province => 4,
            ReportTier::National => 5,
        }
    }

    pub fn as_str(&self) -> &'static str {
        match self {
            ReportTier::Unit => "unit",
            ReportTier::Township => "township",
            ReportTier::County => "county",
            ReportTier::City => "city",
            ReportTier::Province => "province",
            ReportTier::National => "national",
        }
    }
}

/// One report up the ladder, due `minutes` after the hop below is due.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hop {
    pub from: ReportTier,
    pub to: ReportTier,
    pub minutes: u32,
}

/// The reporting obligations of one class or set of sub-types.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObligationRule {
    pub id: String,
    pub version: u32,
    pub source: String,
    pub sub_types: Vec<String>,
    pub class: Option<IncidentClass>,
    /// The tier reports must reach, per grade; a grade without an entry has no obligations.
    pub reach: BTreeMap<Grade, ReportTier>,
    /// Lowest first, contiguous.
    pub hops: Vec<Hop>,
    /// Casualty changes must be re-reported inside this window (None: no window).
    pub casualty_rereport_days: Option<u32>,
    pub casualty_rereport_days_by_sub_type: BTreeMap<String, u32>,
    pub final_report_within_days: Option<u32>,
    /// Follow-up reports (续报) at fixed local hours until the final report; `None`: only the
    /// follow-ups that casualty changes and upgrades call for.
    #[serde(default)]
    pub follow_up: Option<FollowUpSchedule>,
}

/// Follow-up reports at fixed hours of the local day, e.g. 08:00 and 17:00 China time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FollowUpSchedule {
    /// Hours of the local day (0..=23), ascending, without repeats.
    pub local_hours: Vec<u32>,
    /// The local time's offset from UTC in minutes (China: +480).
    pub utc_offset_minutes: i32,
}

impl FollowUpSchedule {
    /// The first fixed hour strictly after `after_unix_ms`, in Unix ms. Pure arithmetic on the
    /// given instant: no clock and no time-zone database (the offset is fixed).
    pub fn next_after(&self, after_unix_ms: i64) -> i64 {
        const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
        let offset_ms = i64::from(self.utc_offset_minutes) * MS_PER_MINUTE;
        let local = after_unix_ms + offset_ms;
        let day_start = local.div_euclid(MS_PER_DAY) * MS_PER_DAY;
        for day in 0..2 {
            for hour in &self.local_hours {
                let slot = day_start + day * MS_PER_DAY + i64::from(*hour) * MS_PER_HOUR;
                if slot > local {
                    return slot - offset_ms;
                }
            }
        }
        // Unreachable with at least one hour; a day later is a safe answer regardless.
        after_unix_ms + MS_PER_DAY
    }
}

impl ObligationRule {
    /// The hops a report of `grade` must travel, lowest first (empty: none required).
    pub fn hops_for(&self, grade: Option<Grade>) -> &[Hop] {
        let Some(reach) = grade.and_then(|grade| self.reach.get(&grade)) else {
            return &[];
        };
        match self.hops.iter().position(|hop| hop.to == *reach) {
            Some(last) => &self.hops[..=last],
            None => &[],
        }
    }

    /// The casualty re-report window for `sub_type_code`, in milliseconds.
    pub fn casualty_rereport_window_ms(&self, sub_type_code: &str) -> Option<i64> {
        self.casualty_rereport_days_by_sub_type
            .get(sub_type_code)
            .copied()
            .or(self.casualty_rereport_days)
            .map(|days| i64::from(days) * MS_PER_DAY)
    }
}

// ---- The file format -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyFile {
    version: Spanned<u32>,
    ack_deadline_minutes: AckFile,
    escalation: Spanned<EscalationFile>,
    #[serde(default)]
    obligation: Vec<Spanned<ObligationFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AckFile {
    default: Spanned<GradeMinutesFile>,
    national: Option<Spanned<GradeMinutesFile>>,
    province: Option<Spanned<GradeMinutesFile>>,
    city: Option<Spanned<GradeMinutesFile>>,
    county: Option<Spanned<GradeMinutesFile>>,
    township: Option<Spanned<GradeMinutesFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GradeMinutesFile {
    #[serde(rename = "I")]
    grade_i: Option<Spanned<u32>>,
    #[serde(rename = "II")]
    grade_ii: Option<Spanned<u32>>,
    #[serde(rename = "III")]
    grade_iii: Option<Spanned<u32>>,
    #[serde(rename = "IV")]
    grade_iv: Option<Spanned<u32>>,
    ungraded: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EscalationFile {
    num_loops: u32,
    step: Vec<Spanned<StepFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct StepFile {
    action: Spanned<String>,
    minutes: Option<Spanned<u32>>,
    from_step: Option<Spanned<u32>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ObligationFile {
    id: Spanned<String>,
    version: Spanned<u32>,
    source: String,
    #[serde(default)]
    sub_types: Vec<Spanned<String>>,
    class: Option<Spanned<String>>,
    reach: ReachFile,
    #[serde(default)]
    hop: Vec<Spanned<Hop>>,
    casualty_rereport_days: Option<u32>,
    #[serde(default)]
    casualty_rereport_days_by_sub_type: BTreeMap<String, Spanned<u32>>,
    final_report_within_days: Option<Spanned<u32>>,
    follow_up: Option<Spanned<FollowUpFile>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FollowUpFile {
    local_hours: Spanned<Vec<Spanned<i64>>>,
    utc_offset_minutes: Spanned<i64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ReachFile {
    #[serde(rename = "I")]
    grade_i: Option<Spanned<ReportTier>>,
    #[serde(rename = "II")]
    grade_ii: Option<Spanned<ReportTier>>,
    #[serde(rename = "III")]
    grade_iii: Option<Spanned<ReportTier>>,
    #[serde(rename = "IV")]
    grade_iv: Option<Spanned<ReportTier>>,
}

impl EscalationPolicy {
    /// Parses and validates a policy. Syntax and semantic errors name `file_name`, the 1-based
    /// line and column, and the problem.
    pub fn from_toml(file_name: &str, text: &str) -> Result<EscalationPolicy, Error> {
        let file: PolicyFile = parse_toml(file_name, text)?;
        let at = |offset: usize, problem: String| error_at(file_name, text, offset, problem);

        if *file.version.get_ref() == 0 {
            return Err(at(
                file.version.span().start,
                "version must be at least 1".into(),
            ));
        }

        // Ack deadlines: the default must name every grade; overrides only some.
        let default = minutes_from_file(&file.ack_deadline_minutes.default, &at)?;
        let missing = [
            ("I", default.grade_i),
            ("II", default.grade_ii),
            ("III", default.grade_iii),
            ("IV", default.grade_iv),
            ("ungraded", default.ungraded),
        ]
        .into_iter()
        .find(|(_, minutes)| minutes.is_none());
        if let Some((name, _)) = missing {
            return Err(at(
                file.ack_deadline_minutes.default.span().start,
                format!("ack_deadline_minutes.default needs a deadline for {name}"),
            ));
        }
        let ack_default = GradeMinutes {
            grade_i: default.grade_i.unwrap_or_default(),
            grade_ii: default.grade_ii.unwrap_or_default(),
            grade_iii: default.grade_iii.unwrap_or_default(),
            grade_iv: default.grade_iv.unwrap_or_default(),
            ungraded: default.ungraded.unwrap_or_default(),
        };
        let mut ack_by_level = BTreeMap::new();
        let ack = &file.ack_deadline_minutes;
        for (level, entry) in [
            (Level::National, &ack.national),
            (Level::Province, &ack.province),
            (Level::City, &ack.city),
            (Level::County, &ack.county),
            (Level::Township, &ack.township),
        ] {
            if let Some(entry) = entry {
                ack_by_level.insert(level, minutes_from_file(entry, &at)?);
            }
        }

        // Escalation steps.
        let escalation = file.escalation.get_ref();
        if escalation.step.is_empty() {
            return Err(at(
                file.escalation.span().start,
                "escalation needs at least one [[escalation.step]]".into(),
            ));
        }
        let step_count = escalation.step.len();
        let mut steps = Vec::with_capacity(step_count);
        for spanned in &escalation.step {
            let step = spanned.get_ref();
            let action = step.action.get_ref().as_str();
            let action_at = step.action.span().start;
            let parsed = match action {
                "notify" => Step::Notify,
                "wait" => {
                    let Some(minutes) = &step.minutes else {
                        return Err(at(action_at, "a `wait` step needs `minutes`".into()));
                    };
                    if *minutes.get_ref() == 0 {
                        return Err(at(
                            minutes.span().start,
                            "a `wait` step must wait at least 1 minute".into(),
                        ));
                    }
                    Step::Wait {
                        minutes: *minutes.get_ref(),
                    }
                }
                "wait_ack_deadline" => Step::WaitAckDeadline,
                "escalate" => Step::Escalate,
                "repeat" => {
                    let Some(from_step) = &step.from_step else {
                        return Err(at(action_at, "a `repeat` step needs `from_step`".into()));
                    };
                    let number = *from_step.get_ref() as usize;
                    if number == 0 || number > step_count {
                        return Err(at(
                            from_step.span().start,
                            format!("from_step {number} is not a step number (1..={step_count})"),
                        ));
                    }
                    Step::Repeat {
                        from_step: number - 1,
                    }
                }
                other => {
                    return Err(at(
                        action_at,
                        format!(
                            "unknown action {other:?} (expected notify, wait, wait_ack_deadline, escalate or repeat)"
                        ),
                    ));
                }
            };
            if let (Some(minutes), false) = (&step.minutes, matches!(parsed, Step::Wait { .. })) {
                return Err(at(
                    minutes.span().start,
                    format!("`minutes` only belongs to a `wait` step, not {action:?}"),
                ));
            }
            if let (Some(from_step), false) =
                (&step.from_step, matches!(parsed, Step::Repeat { .. }))
            {
                return Err(at(
                    from_step.span().start,
                    format!("`from_step` only belongs to a `repeat` step, not {action:?}"),
                ));
            }
            if let Step::Repeat { from_step } = parsed {
                // Only backward jumps, and over a wait: else it would notify in a burst.
                if from_step >= steps.len()
                    || !steps[from_step..]
                        .iter()
                        .any(|s| matches!(s, Step::Wait { .. } | Step::WaitAckDeadline))
                {
                    return Err(at(
                        spanned.span().start,
                        "a `repeat` must jump back over at least one wait step".into(),
                    ));
                }
            }
            steps.push(parsed);
        }

        // Obligation rules.
        let mut obligation_rules: Vec<ObligationRule> = Vec::new();
        for spanned in &file.obligation {
            let rule = spanned.get_ref();
            let rule_at = spanned.span().start;
            let id = rule.id.get_ref().trim().to_string();
            if id.is_empty() {
                return Err(at(rule.id.span().start, "obligation id is empty".into()));
            }
            if obligation_rules.iter().any(|earlier| earlier.id == id) {
                return Err(at(
                    rule.id.span().start,
                    format!("duplicate obligation id {id:?}"),
                ));
            }
            if *rule.version.get_ref() == 0 {
                return Err(at(
                    rule.version.span().start,
                    format!("obligation {id:?}: version must be at least 1"),
                ));
            }
            if rule.sub_types.is_empty() && rule.class.is_none() {
                return Err(at(
                    rule_at,
                    format!("obligation {id:?}: needs `sub_types = [...]` or `class = \"...\"`"),
                ));
            }
            let mut sub_types = Vec::new();
            for code in &rule.sub_types {
                let Some(entry) = sub_type(code.get_ref()) else {
                    return Err(at(
                        code.span().start,
                        format!(
                            "obligation {id:?}: unknown sub-type code {:?}",
                            code.get_ref()
                        ),
                    ));
                };
                if let Some(owner) = obligation_rules
                    .iter()
                    .find(|earlier| earlier.sub_types.iter().any(|c| c == entry.code))
                {
                    return Err(at(
                        code.span().start,
                        format!(
                            "obligation {id:?}: sub-type {:?} is already covered by {:?}",
                            entry.code, owner.id
                        ),
                    ));
                }
                sub_types.push(entry.code.to_string());
            }
            let class = match &rule.class {
                None => None,
                Some(spanned_class) => {
                    let Some(class) = IncidentClass::from_prefix(spanned_class.get_ref()) else {
                        return Err(at(
                            spanned_class.span().start,
                            format!(
                                "obligation {id:?}: unknown class {:?} (expected natural, accident, public_health or social_safety)",
                                spanned_class.get_ref()
                            ),
                        ));
                    };
                    if let Some(owner) = obligation_rules
                        .iter()
                        .find(|earlier| earlier.class == Some(class))
                    {
                        return Err(at(
                            spanned_class.span().start,
                            format!(
                                "obligation {id:?}: class {:?} already has the fallback {:?}",
                                class.prefix(),
                                owner.id
                            ),
                        ));
                    }
                    Some(class)
                }
            };

            if rule.hop.is_empty() {
                return Err(at(
                    rule_at,
                    format!("obligation {id:?}: has no [[obligation.hop]] entries"),
                ));
            }
            let mut hops: Vec<Hop> = Vec::with_capacity(rule.hop.len());
            for spanned_hop in &rule.hop {
                let hop = *spanned_hop.get_ref();
                let hop_at = spanned_hop.span().start;
                if hop.to.rank() <= hop.from.rank() {
                    return Err(at(
                        hop_at,
                        format!(
                            "obligation {id:?}: a hop must go up, not from {} to {}",
                            hop.from.as_str(),
                            hop.to.as_str()
                        ),
                    ));
                }
                if let Some(previous) = hops.last()
                    && previous.to != hop.from
                {
                    return Err(at(
                        hop_at,
                        format!(
                            "obligation {id:?}: hops must be contiguous: this one starts at {} but the previous ends at {}",
                            hop.from.as_str(),
                            previous.to.as_str()
                        ),
                    ));
                }
                if hop.minutes == 0 {
                    return Err(at(
                        hop_at,
                        format!("obligation {id:?}: a hop needs at least 1 minute"),
                    ));
                }
                hops.push(hop);
            }

            let mut reach = BTreeMap::new();
            for (grade, tier) in [
                (Grade::I, &rule.reach.grade_i),
                (Grade::II, &rule.reach.grade_ii),
                (Grade::III, &rule.reach.grade_iii),
                (Grade::IV, &rule.reach.grade_iv),
            ] {
                let Some(tier) = tier else { continue };
                if !hops.iter().any(|hop| hop.to == *tier.get_ref()) {
                    return Err(at(
                        tier.span().start,
                        format!(
                            "obligation {id:?}: grade {grade} reaches {}, but no hop goes there",
                            tier.get_ref().as_str()
                        ),
                    ));
                }
                reach.insert(grade, *tier.get_ref());
            }

            let mut by_sub_type = BTreeMap::new();
            for (code, days) in &rule.casualty_rereport_days_by_sub_type {
                if sub_type(code).is_none() {
                    return Err(at(
                        days.span().start,
                        format!("obligation {id:?}: unknown sub-type code {code:?}"),
                    ));
                }
                by_sub_type.insert(code.clone(), *days.get_ref());
            }
            if let Some(days) = &rule.final_report_within_days
                && *days.get_ref() == 0
            {
                return Err(at(
                    days.span().start,
                    format!("obligation {id:?}: final_report_within_days must be at least 1"),
                ));
            }

            let follow_up = match &rule.follow_up {
                None => None,
                Some(spanned) => {
                    let file = spanned.get_ref();
                    if rule.final_report_within_days.is_none() {
                        return Err(at(
                            spanned.span().start,
                            format!(
                                "obligation {id:?}: follow-ups run until the final report, so `follow_up` needs `final_report_within_days`"
                            ),
                        ));
                    }
                    if file.local_hours.get_ref().is_empty() {
                        return Err(at(
                            file.local_hours.span().start,
                            format!(
                                "obligation {id:?}: follow_up.local_hours needs at least one hour"
                            ),
                        ));
                    }
                    let mut hours: Vec<u32> = Vec::new();
                    for hour in file.local_hours.get_ref() {
                        let value = *hour.get_ref();
                        if !(0..=23).contains(&value) {
                            return Err(at(
                                hour.span().start,
                                format!(
                                    "obligation {id:?}: hour {value} is not an hour of the day (0..=23)"
                                ),
                            ));
                        }
                        if hours.last().is_some_and(|last| i64::from(*last) >= value) {
                            return Err(at(
                                hour.span().start,
                                format!(
                                    "obligation {id:?}: follow_up.local_hours must ascend without repeats"
                                ),
                            ));
                        }
                        hours.push(value as u32);
                    }
                    let offset = *file.utc_offset_minutes.get_ref();
                    if !(-720..=840).contains(&offset) {
                        return Err(at(
                            file.utc_offset_minutes.span().start,
                            format!(
                                "obligation {id:?}: utc_offset_minutes {offset} is outside -720..=840"
                            ),
                        ));
                    }
                    Some(FollowUpSchedule {
                        local_hours: hours,
                        utc_offset_minutes: offset as i32,
                    })
                }
            };

            obligation_rules.push(ObligationRule {
                follow_up,
                id,
                version: *rule.version.get_ref(),
                source: rule.source.trim().to_string(),
                sub_types,
                class,
                reach,
                hops,
                casualty_rereport_days: rule.casualty_rereport_days,
                casualty_rereport_days_by_sub_type: by_sub_type,
                final_report_within_days: rule
                    .final_report_within_days
                    .as_ref()
                    .map(|days| *days.get_ref()),
            });
        }

        Ok(EscalationPolicy {
            file_name: file_name.to_string(),
            version: *file.version.get_ref(),
            ack_default,
            ack_by_level,
            steps,
            num_loops: escalation.num_loops,
            obligation_rules,
            minute_ms: MS_PER_MINUTE,
        })
    }

    /// The policy shipped in `data/region/escalation.toml`.
    pub fn embedded_default() -> EscalationPolicy {
        match EscalationPolicy::from_toml("escalation.toml", EMBEDDED_DEFAULT_TOML) {
            Ok(policy) => policy,
            // A test parses the shipped file, so this only fires if that test was ignored.
            Err(error) => panic!("the embedded default escalation policy is broken: {error}"),
        }
    }

    /// How long `level` has to acknowledge an incident of `grade`.
    pub fn ack_deadline_ms(&self, level: Level, grade: Option<Grade>) -> i64 {
        let minutes = self
            .ack_by_level
            .get(&level)
            .and_then(|partial| partial.get(grade))
            .unwrap_or_else(|| self.ack_default.get(grade));
        i64::from(minutes) * self.minute_ms
    }

    /// How long one policy minute lasts, in milliseconds (60 000 unless compressed).
    pub fn minute_ms(&self) -> i64 {
        self.minute_ms
    }

    /// The same policy on a compressed clock: every deadline, wait and hop counts `minute_ms`
    /// milliseconds per minute (at least 1). For tests and exercises; the data is unchanged.
    pub fn with_minute_ms(mut self, minute_ms: i64) -> EscalationPolicy {
        self.minute_ms = minute_ms.max(1);
        self
    }

    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// How many times, in all, `repeat` steps may jump back.
    pub fn num_loops(&self) -> u32 {
        self.num_loops
    }

    pub fn obligation_rules(&self) -> &[ObligationRule] {
        &self.obligation_rules
    }

    /// The obligation rule for `sub_type`: the one listing it, else its class fallback.
    pub fn obligation_rule_for(&self, sub_type: &SubType) -> Option<&ObligationRule> {
        self.obligation_rules
            .iter()
            .find(|rule| rule.sub_types.iter().any(|code| code == sub_type.code))
            .or_else(|| {
                self.obligation_rules
                    .iter()
                    .find(|rule| rule.class == Some(sub_type.class))
            })
    }
}

fn minutes_from_file(
    file: &Spanned<GradeMinutesFile>,
    at: &impl Fn(usize, String) -> Error,
) -> Result<PartialGradeMinutes, Error> {
    let entry = file.get_ref();
    let mut out = PartialGradeMinutes::default();
    for (slot, value) in [
        (&mut out.grade_i, &entry.grade_i),
        (&mut out.grade_ii, &entry.grade_ii),
        (&mut out.grade_iii, &entry.grade_iii),
        (&mut out.grade_iv, &entry.grade_iv),
        (&mut out.ungraded, &entry.ungraded),
    ] {
        if let Some(value) = value {
            if *value.get_ref() == 0 {
                return Err(at(
                    value.span().start,
                    "an ack deadline must be at least 1 minute".into(),
                ));
            }
            *slot = Some(*value.get_ref());
        }
    }
    Ok(out)
}

//! Duty rosters (值班表): who is on duty for each jurisdiction, in which role and on which contact
//! channel, with optional daily shifts in local time.
//!
//! Loaded from `data/region/rosters.toml` (embedded as the default, [`Rosters::embedded_default`])
//! and checked against the jurisdiction tree: a roster for a code the tree does not know is an
//! error at its `file:line:col`. [`Rosters::on_duty`] is pure: the caller passes `now`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use toml::Spanned;

use crate::Error;
use crate::jurisdiction::JurisdictionTree;
use crate::source::{error_at, parse_toml};

/// The shipped sample rosters, one per jurisdiction of the sample region.
pub const EMBEDDED_DEFAULT_TOML: &str = include_str!("../../../data/region/rosters.toml");
/// The file name the rosters go by in messages and in a region directory.
pub const DEFAULT_FILE_NAME: &str = "rosters.toml";

const MINUTES_PER_DAY: i64 = 24 * 60;

/// What a person on the roster does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// 值班员: takes the call, acknowledges, passes it on.
    DutyOfficer,
    /// 带班领导: the leader on duty, who decides.
    LeaderOnDuty,
}

impl Role {
    pub fn as_str(self) -> &'static str {
        match self {
            Role::DutyOfficer => "duty_officer",
            Role::LeaderOnDuty => "leader_on_duty",
        }
    }

    /// The Chinese title, for messages.
    pub fn title(self) -> &'static str {
        match self {
            Role::DutyOfficer => "值班员",
            Role::LeaderOnDuty => "带班领导",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        match text {
            "duty_officer" => Some(Role::DutyOfficer),
            "leader_on_duty" => Some(Role::LeaderOnDuty),
            _ => None,
        }
    }
}

/// How a person is reached. Every channel leaves through the notifier's webhook (a gateway that
/// speaks SMS, phone and mail); the channel tells the gateway which.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Channel {
    Webhook,
    Sms,
    Phone,
    Email,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Webhook => "webhook",
            Channel::Sms => "sms",
            Channel::Phone => "phone",
            Channel::Email => "email",
        }
    }

    pub fn parse(text: &str) -> Option<Channel> {
        match text {
            "webhook" => Some(Channel::Webhook),
            "sms" => Some(Channel::Sms),
            "phone" => Some(Channel::Phone),
            "email" => Some(Channel::Email),
            _ => None,
        }
    }
}

/// A daily window in local time: minutes after local midnight, `from` inclusive, `to`
/// exclusive. `to < from` crosses midnight; `to == from` is the whole day.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Shift {
    pub from_minute: u16,
    pub to_minute: u16,
    /// Local time minus UTC, minutes (`+08:00` is 480).
    pub utc_offset_minutes: i16,
}

impl Shift {
    /// Whether the shift covers the instant `now_unix_ms`.
    pub fn covers(&self, now_unix_ms: i64) -> bool {
        let local_minutes = now_unix_ms.div_euclid(60_000) + i64::from(self.utc_offset_minutes);
        let minute = local_minutes.rem_euclid(MINUTES_PER_DAY);
        let (from, to) = (i64::from(self.from_minute), i64::from(self.to_minute));
        match from.cmp(&to) {
            std::cmp::Ordering::Less => from <= minute && minute < to,
            std::cmp::Ordering::Greater => minute >= from || minute < to,
            std::cmp::Ordering::Equal => true,
        }
    }
}

/// One person on a roster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RosterEntry {
    pub name: String,
    pub role: Role,
    pub channel: Channel,
    /// The recipient on the channel: a webhook recipient id, a phone number, a mail address.
    pub address: String,
    /// `None`: on duty around the clock.
    pub shift: Option<Shift>,
}

impl RosterEntry {
    pub fn on_duty_at(&self, now_unix_ms: i64) -> bool {
        self.shift.is_none_or(|shift| shift.covers(now_unix_ms))
    }
}

/// Every jurisdiction's roster.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Rosters {
    by_code: BTreeMap<String, Vec<RosterEntry>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RostersFile {
    #[serde(default)]
    roster: Vec<Spanned<RosterTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RosterTable {
    jurisdiction: Spanned<String>,
    #[serde(default)]
    entry: Vec<Spanned<EntryTable>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EntryTable {
    name: Spanned<String>,
    role: Role,
    channel: Channel,
    address: Spanned<String>,
    shift: Option<ShiftTable>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShiftTable {
    from: Spanned<String>,
    to: Spanned<String>,
    utc_offset: Spanned<String>,
}

/// `HH:MM` (00:00-23:59; 24:00 is accepted as the end of the day) to minutes after midnight.
fn parse_hh_mm(text: &str) -> Option<u16> {
    let (hours, minutes) = text.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: u16 = hours.parse().ok()?;
    let minutes: u16 = minutes.parse().ok()?;
    match (hours, minutes) {
        (0..=23, 0..=59) => Some(hours * 60 + minutes),
        (24, 0) => Some(0),
        _ => None,
    }
}

/// `+HH:MM` / `-HH:MM` (or `Z`) to minutes, within ±14:00.
fn parse_offset(text: &str) -> Option<i16> {
    if text == "Z" {
        return Some(0);
    }
    let (sign, rest) = match text.as_bytes().first()? {
        b'+' => (1, &text[1..]),
        b'-' => (-1, &text[1..]),
        _ => return None,
    };
    let (hours, minutes) = rest.split_once(':')?;
    if hours.len() != 2 || minutes.len() != 2 {
        return None;
    }
    let hours: i16 = hours.parse().ok()?;
    let minutes: i16 = minutes.parse().ok()?;
    if minutes > 59 || hours * 60 + minutes > 14 * 60 {
        return None;
    }
    Some(sign * (hours * 60 + minutes))
}

impl Rosters {
    /// Parses a rosters file and checks it against `tree`: every roster names a known
    /// jurisdiction, once; names and addresses are not blank; shifts are well-formed.
    pub fn from_toml(
        file_name: &str,
        text: &str,
        tree: &JurisdictionTree,
    ) -> Result<Rosters, Error> {
        let file: RostersFile = parse_toml(file_name, text)?;
        let at = |offset: usize, problem: String| error_at(file_name, text, offset, problem);
        let mut by_code: BTreeMap<String, Vec<RosterEntry>> = BTreeMap::new();
        for roster in file.roster {
            let roster = roster.into_inner();
            let code = roster.jurisdiction.get_ref().trim().to_string();
            let code_at = roster.jurisdiction.span().start;
            if tree.get(&code).is_none() {
                return Err(at(
                    code_at,
                    format!("jurisdiction {code:?} is not in the jurisdiction file"),
                ));
            }
            if by_code.contains_key(&code) {
                return Err(at(
                    code_at,
                    format!("jurisdiction {code} has a roster already; merge the two"),
                ));
            }
            let mut entries = Vec::with_capacity(roster.entry.len());
            for entry in roster.entry {
                let entry = entry.into_inner();
                let name = entry.name.get_ref().trim().to_string();
                if name.is_empty() {
                    return Err(at(entry.name.span().start, "name is blank".into()));
                }
                let address = entry.address.get_ref().trim().to_string();
                if address.is_empty() {
                    return Err(at(entry.address.span().start, "address is blank".into()));
                }
                let shift = match entry.shift {
                    None => None,
                    Some(shift) => {
                        let time = |field: &Spanned<String>| {
                            parse_hh_mm(field.get_ref()).ok_or_else(|| {
                                at(
                                    field.span().start,
                                    format!("{:?} is not a time of day HH:MM", field.get_ref()),
                                )
                            })
                        };
                        let from_minute = time(&shift.from)?;
                        let to_minute = time(&shift.to)?;
                        let utc_offset_minutes = parse_offset(shift.utc_offset.get_ref())
                            .ok_or_else(|| {
                                at(
                                    shift.utc_offset.span().start,
                                    format!(
                                        "{:?} is not a UTC offset like +08:00",
                                        shift.utc_offset.get_ref()
                                    ),
                                )
                            })?;
                        Some(Shift {
                            from_minute,
                            to_minute,
                            utc_offset_minutes,
                        })
                    }
                };
                entries.push(RosterEntry {
                    name,
                    role: entry.role,
                    channel: entry.channel,
                    address,
                    shift,
                });
            }
            by_code.insert(code, entries);
        }
        Ok(Rosters { by_code })
    }

    /// The shipped rosters, checked against `tree`. Fails when `tree` is not the sample region's
    /// (a deployment with its own region brings its own rosters).
    pub fn embedded_default(tree: &JurisdictionTree) -> Result<Rosters, Error> {
        Rosters::from_toml(DEFAULT_FILE_NAME, EMBEDDED_DEFAULT_TOML, tree)
    }

    /// Rosters built in code (tests, tools).
    pub fn from_entries(by_code: BTreeMap<String, Vec<RosterEntry>>) -> Rosters {
        Rosters { by_code }
    }

    /// The whole roster of a jurisdiction, on duty or not; empty for one without a roster.
    pub fn roster(&self, jurisdiction_code: &str) -> &[RosterEntry] {
        self.by_code
            .get(jurisdiction_code)
            .map_or(&[], |entries| entries.as_slice())
    }

    /// Who is on duty for `jurisdiction_code` at `now_unix_ms`, in roster order.
    pub fn on_duty(&self, jurisdiction_code: &str, now_unix_ms: i64) -> Vec<&RosterEntry> {
        self.roster(jurisdiction_code)
            .iter()
            .filter(|entry| entry.on_duty_at(now_unix_ms))
            .collect()
    }

    /// Jurisdiction codes that have a roster.
    pub fn codes(&self) -> impl Iterator<Item = &str> {
        self.by_code.keys().map(String::as_str)
    }

    pub fn is_empty(&self) -> bool {
        self.by_code.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::region::Region;

    /// 2026-01-01 00:00 UTC, 08:00 in +08:00.
    const NEW_YEAR_UTC_MS: i64 = 1_767_225_600_000;
    const HOUR_MS: i64 = 3_600_000;

    fn tree() -> JurisdictionTree {
        Region::embedded_default().tree
    }

    fn shift(from: &str, to: &str, offset: &str) -> Shift {
        Shift {
            from_minute: parse_hh_mm(from).unwrap(),
            to_minute: parse_hh_mm(to).unwrap(),
            utc_offset_minutes: parse_offset(offset).unwrap(),
        }
    }

    #[test]
    fn the_shipped_rosters_cover_every_jurisdiction_of_the_sample_region() {
        let tree = tree();
        let rosters = Rosters::embedded_default(&tree).unwrap();
        for jurisdiction in tree.all() {
            assert!(
                !rosters.roster(&jurisdiction.code).is_empty(),
                "{} has no roster",
                jurisdiction.code
            );
            // Someone is on duty at every hour of the day.
            for hour in 0..24 {
                let now = NEW_YEAR_UTC_MS + hour * HOUR_MS;
                assert!(
                    rosters
                        .on_duty(&jurisdiction.code, now)
                        .iter()
                        .any(|e| e.role == Role::DutyOfficer),
                    "{} has no duty officer at {hour}:00 UTC",
                    jurisdiction.code
                );
            }
        }
    }

    #[test]
    fn a_day_shift_covers_from_inclusive_to_exclusive_in_local_time() {
        let day = shift("08:00", "20:00", "+08:00");
        // 08:00 local = 00:00 UTC.
        assert!(day.covers(NEW_YEAR_UTC_MS));
        assert!(!day.covers(NEW_YEAR_UTC_MS - 60_000), "07:59 local");
        assert!(
            day.covers(NEW_YEAR_UTC_MS + 12 * HOUR_MS - 60_000),
            "19:59 local"
        );
        assert!(!day.covers(NEW_YEAR_UTC_MS + 12 * HOUR_MS), "20:00 local");
    }

    #[test]
    fn a_night_shift_crosses_midnight() {
        let night = shift("20:00", "08:00", "+08:00");
        assert!(night.covers(NEW_YEAR_UTC_MS + 12 * HOUR_MS), "20:00 local");
        assert!(night.covers(NEW_YEAR_UTC_MS + 16 * HOUR_MS), "00:00 local");
        assert!(night.covers(NEW_YEAR_UTC_MS - 60_000), "07:59 local");
        assert!(!night.covers(NEW_YEAR_UTC_MS), "08:00 local");
        assert!(!night.covers(NEW_YEAR_UTC_MS + 6 * HOUR_MS), "14:00 local");
    }

    #[test]
    fn the_utc_offset_moves_the_window() {
        // 09:00-17:00 at UTC-05:00 is 14:00-22:00 UTC.
        let office = shift("09:00", "17:00", "-05:00");
        assert!(office.covers(NEW_YEAR_UTC_MS + 14 * HOUR_MS));
        assert!(!office.covers(NEW_YEAR_UTC_MS + 13 * HOUR_MS));
        assert!(!office.covers(NEW_YEAR_UTC_MS + 22 * HOUR_MS));
        // The same window in UTC.
        let utc = shift("09:00", "17:00", "Z");
        assert!(utc.covers(NEW_YEAR_UTC_MS + 9 * HOUR_MS));
        assert!(!utc.covers(NEW_YEAR_UTC_MS + 17 * HOUR_MS));
        // Before 1970 too.
        assert!(utc.covers(-24 * HOUR_MS + 10 * HOUR_MS));
        // A window from == to is the whole day.
        assert!(shift("06:00", "06:00", "+08:00").covers(NEW_YEAR_UTC_MS + 5 * HOUR_MS));
    }

    #[test]
    fn on_duty_filters_by_shift_and_keeps_roster_order() {
        let tree = tree();
        let rosters = Rosters::embedded_default(&tree).unwrap();
        // 10:00 local in the county 390102: the day officer and the leader.
        let morning = NEW_YEAR_UTC_MS + 2 * HOUR_MS;
        let names: Vec<_> = rosters
            .on_duty("390102", morning)
            .iter()
            .map(|e| e.address.as_str())
            .collect();
        assert_eq!(names.len(), 2);
        assert_eq!(names[0], "duty-390102-day");
        // 23:00 local: the night officer and the leader.
        let night = NEW_YEAR_UTC_MS + 15 * HOUR_MS;
        let on_duty = rosters.on_duty("390102", night);
        assert_eq!(on_duty[0].address, "duty-390102-night");
        assert!(on_duty.iter().any(|e| e.role == Role::LeaderOnDuty));
        assert!(rosters.on_duty("999999", night).is_empty());
    }

    #[test]
    fn errors_name_file_line_and_column() {
        let tree = tree();
        let unknown = "[[roster]]\njurisdiction = \"123456\"\n";
        let error = Rosters::from_toml("r.toml", unknown, &tree).unwrap_err();
        assert_eq!(
            error.to_string(),
            "r.toml:2:16: jurisdiction \"123456\" is not in the jurisdiction file"
        );

        let bad_shift = "[[roster]]\njurisdiction = \"390102\"\n[[roster.entry]]\nname = \"王\"\n\
            role = \"duty_officer\"\nchannel = \"sms\"\naddress = \"1\"\n\
            shift = { from = \"25:00\", to = \"08:00\", utc_offset = \"+08:00\" }\n";
        let error = Rosters::from_toml("r.toml", bad_shift, &tree).unwrap_err();
        assert!(
            error
                .to_string()
                .starts_with("r.toml:8:18: \"25:00\" is not a time"),
            "{error}"
        );

        let bad_offset = bad_shift.replace("25:00", "08:00").replace("+08:00", "8");
        let error = Rosters::from_toml("r.toml", &bad_offset, &tree).unwrap_err();
        assert!(error.to_string().contains("is not a UTC offset"), "{error}");

        let bad_channel = bad_shift.replace("\"sms\"", "\"pager\"");
        let error = Rosters::from_toml("r.toml", &bad_channel, &tree).unwrap_err();
        assert!(error.to_string().starts_with("r.toml:6:"), "{error}");

        let twice =
            "[[roster]]\njurisdiction = \"390102\"\n[[roster]]\njurisdiction = \"390102\"\n";
        let error = Rosters::from_toml("r.toml", twice, &tree).unwrap_err();
        assert!(error.to_string().starts_with("r.toml:4:16:"), "{error}");

        let blank = bad_shift.replace("name = \"王\"", "name = \" \"");
        let error = Rosters::from_toml("r.toml", &blank, &tree).unwrap_err();
        assert!(
            error.to_string().starts_with("r.toml:4:8: name is blank"),
            "{error}"
        );
    }

    #[test]
    fn times_and_offsets_parse_strictly() {
        assert_eq!(parse_hh_mm("00:00"), Some(0));
        assert_eq!(parse_hh_mm("23:59"), Some(1439));
        assert_eq!(parse_hh_mm("24:00"), Some(0));
        for bad in ["24:01", "8:00", "08:60", "0800", "", "ab:cd"] {
            assert_eq!(parse_hh_mm(bad), None, "{bad}");
        }
        assert_eq!(parse_offset("+08:00"), Some(480));
        assert_eq!(parse_offset("-05:30"), Some(-330));
        assert_eq!(parse_offset("Z"), Some(0));
        for bad in ["08:00", "+8:00", "+15:00", "+08:61", ""] {
            assert_eq!(parse_offset(bad), None, "{bad}");
        }
    }
}

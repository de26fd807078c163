//! `musterctl drill run FILE` and `musterctl drill report ID`: scenario drills played through the
//! real services in their own namespace `drill.<id>`, on a compressed clock, judged against the
//! scenario's expectations, with an after-action report.

pub mod feeds;
pub mod http;
pub mod player;
pub mod record;
pub mod report;
pub mod scenario;

use std::path::{Path, PathBuf};

/// A drill id as the namespace needs it: 1-64 of `a-z 0-9 - _`.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// An id from the scenario's name and the start time: `chlorine-tank-explosion-1732790000`.
pub fn default_id(name: &str, now_ms: i64) -> String {
    let mut slug: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    while slug.contains("--") {
        slug = slug.replace("--", "-");
    }
    let slug = slug.trim_matches('-');
    let slug: String = slug.chars().take(40).collect();
    let slug = if slug.is_empty() {
        "drill".to_owned()
    } else {
        slug
    };
    format!("{}-{}", slug.trim_end_matches('-'), now_ms / 1000)
}

/// `<drills>/<id>`: where a drill's services keep their data and the run its record.
pub fn drill_dir(drills: &Path, id: &str) -> PathBuf {
    drills.join(id)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert_eq!(
            default_id("M6.5 Quake: Yunling!", 1_732_790_000_123),
            "m6-5-quake-yunling-1732790000"
        );
        assert!(valid_id(&default_id("化工", 5)));
        assert!(!valid_id("Big"));
        assert!(!valid_id(""));
    }
}

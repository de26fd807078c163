//! Loading the region: the four TOML files from `--region-dir`, or the sample built into the binary.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, anyhow};
use domain::region::{DEFAULT_FILE_NAMES, Region, SourceFile};

/// Loads the region from `region_dir`, or the embedded default without one. Problems in the files
/// come back as `path/to/file.toml:line:col: problem`.
pub fn load(region_dir: Option<&Path>) -> anyhow::Result<Arc<Region>> {
    let Some(dir) = region_dir else {
        return Ok(Arc::new(Region::embedded_default()));
    };
    let paths: [PathBuf; 4] = DEFAULT_FILE_NAMES.map(|name| dir.join(name));
    let mut texts: Vec<String> = Vec::with_capacity(paths.len());
    for path in &paths {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        texts.push(text);
    }
    // The names are the paths, so every message points at the file the operator has to edit.
    let names: Vec<String> = paths
        .iter()
        .map(|path| path.display().to_string())
        .collect();
    let source = |index: usize| SourceFile {
        name: &names[index],
        text: &texts[index],
    };
    let region = Region::from_sources(source(0), source(1), source(2), source(3))
        // The domain error already reads `file:line:col: problem`; no prefix in front of it.
        .map_err(|error| anyhow!("{error}"))?;
    Ok(Arc::new(region))
}

/// What `check-region` prints: jurisdictions per level, units per type and the plans.
pub fn summary(region: &Region) -> String {
    let mut levels: BTreeMap<domain::jurisdiction::Level, usize> = BTreeMap::new();
    for jurisdiction in region.tree.all() {
        *levels.entry(jurisdiction.level).or_default() += 1;
    }
    let mut unit_types: BTreeMap<&str, usize> = BTreeMap::new();
    for unit in &region.units {
        *unit_types.entry(unit.unit_type.as_str()).or_default() += 1;
    }
    let plans = region.plans.all();

    let mut text = String::new();
    let mut line = |s: String| {
        text.push_str(&s);
        text.push('\n');
    };
    line(format!("jurisdictions: {}", region.tree.len()));
    for (level, count) in &levels {
        line(format!("  {:<12} {count:>5}", level.as_str()));
    }
    line(format!("units: {}", region.units.len()));
    for (unit_type, count) in &unit_types {
        line(format!("  {unit_type:<20} {count:>5}"));
    }
    // Plans per grade: a missing grade for a class shows up as an uneven count here.
    let mut grades: BTreeMap<Option<domain::grade::Grade>, usize> = BTreeMap::new();
    for plan in plans {
        *grades.entry(plan.grade).or_default() += 1;
    }
    line(format!("plans: {}", plans.len()));
    for (grade, count) in &grades {
        let label = grade.map_or_else(|| "ungraded".to_string(), |grade| format!("grade {grade}"));
        line(format!("  {label:<12} {count:>5}"));
    }
    // What `muster serve escalation --partition` accepts.
    line(format!(
        "partitions: {} (the root's: incidents in no province)",
        region.tree.partitions().join(", ")
    ));
    text
}

//! `muster check-region`: load the region files and print their counts, or the first problem.

use crate::cli::CheckRegionArgs;

pub fn run(args: &CheckRegionArgs) -> anyhow::Result<()> {
    let region = crate::region::load(args.region_dir.as_deref())?;
    match &args.region_dir {
        Some(dir) => println!("region {}: ok", dir.display()),
        None => println!("region (built-in sample): ok"),
    }
    print!("{}", crate::region::summary(&region));
    Ok(())
}

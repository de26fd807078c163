//! `muster token init|issue`: the signing key and the bearer tokens officers, feeds and
//! auditors present on every call.

use anyhow::{Context, anyhow, bail};

use crate::cli::{IssueArgs, TokenCommand};

pub fn run(command: &TokenCommand) -> anyhow::Result<()> {
    match command {
        TokenCommand::Init { auth_dir } => {
            let keys = auth::KeyDir::new(auth_dir);
            let (key, created) = keys.load_or_create().map_err(|e| anyhow!("{e}"))?;
            let verb = if created { "created" } else { "already there" };
            println!(
                "{verb}: {} (private: keep it with whoever issues tokens)\n       {} (public: give it to every service with --verify-key)\nverify key {}",
                keys.signing_path().display(),
                keys.verify_path().display(),
                key.verifying_key().to_hex()
            );
            Ok(())
        }
        TokenCommand::Issue(args) => issue(args),
    }
}

fn issue(args: &IssueArgs) -> anyhow::Result<()> {
    let region = crate::region::load(args.region_dir.as_deref())?;
    let role = auth::Role::parse(args.role.trim()).map_err(|e| anyhow!("--role {e}"))?;
    let jurisdiction = args.jurisdiction.trim();
    let Some(scope) = region.tree.get(jurisdiction) else {
        bail!(
            "--jurisdiction {jurisdiction:?} is not a jurisdiction of this region (000000 is the \
             whole country; `musterctl jurisdictions` lists the others)"
        );
    };
    let ttl_ms = auth::token::parse_ttl(&args.ttl).map_err(|e| anyhow!("--{e}"))?;
    let keys = auth::KeyDir::new(&args.auth_dir);
    if !keys.signing_path().exists() {
        bail!(
            "no signing key at {}: create one with `muster token init --auth-dir {}` (or run \
             `muster up`, which creates <data-dir>/auth)",
            keys.signing_path().display(),
            args.auth_dir.display()
        );
    }
    let key = keys
        .load_signing()
        .map_err(|e| anyhow!("{e}"))
        .context("loading the signing key")?;
    let (claims, token) = key
        .issue(
            &args.officer,
            &scope.code,
            role,
            lifecycle::unix_ms_now(),
            ttl_ms,
        )
        .map_err(|e| anyhow!("{e}"))?;
    eprintln!(
        "token {} for {} ({} at {} {}), valid for {}",
        claims.token_id, claims.officer, claims.role, scope.name, scope.code, args.ttl
    );
    println!("{token}");
    Ok(())
}

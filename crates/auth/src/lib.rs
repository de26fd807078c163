//! Who may do what. A caller presents an Ed25519-signed bearer token ([`token`]) naming an
//! officer, a role and the jurisdiction the token is scoped to. The role decides which methods it
//! may call ([`policy`]); the jurisdiction decides which incidents and units it may see and act on
//! ([`Principal::covers`]): its own jurisdiction and everything below it, nothing sideways or
//! above.

pub mod feed_secrets;
pub mod policy;
pub mod token;

use std::fmt;
use std::path::{Path, PathBuf};

use domain::jurisdiction::JurisdictionTree;
use serde::{Deserialize, Serialize};

pub use policy::{Permission, Rule, rule_for};
pub use token::{
    Claims, KeyDir, SigningKey, TokenError, VerifiedTokens, VerifyingKey, load_verifying_key,
};

/// What a token holder does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Duty officer (值班员): reports incidents, updates facts, acknowledges, files reports.
    Officer,
    /// Commander (指挥长): everything an officer does, plus escalating, taking command,
    /// confirming downgrades, dispatching units and reading the audit trail.
    Commander,
    /// Dispatcher (调度员): the unit board, recommendations, assignments and mutual aid.
    Dispatcher,
    /// Auditor: reads incidents and the audit trail, changes nothing.
    Auditor,
    /// A monitoring feed: posts alerts to the feed endpoints, nothing else.
    Feed,
    /// Everything, including unit registration; `muster up` issues one for the local user.
    Admin,
}

impl Role {
    pub const ALL: [Role; 6] = [
        Role::Officer,
        Role::Commander,
        Role::Dispatcher,
        Role::Auditor,
        Role::Feed,
        Role::Admin,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Officer => "officer",
            Role::Commander => "commander",
            Role::Dispatcher => "dispatcher",
            Role::Auditor => "auditor",
            Role::Feed => "feed",
            Role::Admin => "admin",
        }
    }

    pub fn parse(text: &str) -> Result<Role, Error> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == text)
            .ok_or_else(|| {
                Error::InvalidClaim(format!(
                    "role {text:?}: must be one of officer, commander, dispatcher, auditor, feed, admin"
                ))
            })
    }

    /// Whether this role holds `permission`.
    pub fn allows(self, permission: Permission) -> bool {
        use Permission::*;
        match self {
            Role::Admin => true,
            Role::Commander => matches!(
                permission,
                Read | Report | Acknowledge | Command | Dispatch | Audit
            ),
            Role::Officer => matches!(permission, Read | Report | Acknowledge),
            Role::Dispatcher => matches!(permission, Read | Dispatch | ManageUnits),
            Role::Auditor => matches!(permission, Read | Audit),
            Role::Feed => matches!(permission, Feed),
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// An authenticated caller: the verified claims plus where the call came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    pub claims: Claims,
    /// The connection's peer address, or the feed's name for feed posts.
    pub peer: String,
}

impl Principal {
    pub fn officer(&self) -> &str {
        &self.claims.officer
    }

    pub fn role(&self) -> Role {
        self.claims.role
    }

    pub fn jurisdiction(&self) -> &str {
        &self.claims.jurisdiction
    }

    /// Whether `code` (a jurisdiction or township code) is this principal's jurisdiction or below
    /// it. Unknown codes and empty codes are covered only by a national-root token, which covers
    /// everything.
    pub fn covers(&self, tree: &JurisdictionTree, code: &str) -> bool {
        let scope = self.jurisdiction();
        if scope == tree.root().code {
            return true;
        }
        !code.is_empty() && tree.ancestors(code).iter().any(|item| item.code == scope)
    }

    /// Whether an incident led by `lead` and located in `location` is visible to and actionable
    /// by this principal: led in, or located in, its jurisdiction or below.
    pub fn covers_incident(&self, tree: &JurisdictionTree, lead: &str, location: &str) -> bool {
        self.covers(tree, lead) || self.covers(tree, location)
    }

    /// The `PERMISSION_DENIED` message for an incident outside the scope.
    pub fn out_of_scope(&self, what: &str) -> String {
        format!(
            "{what} is outside the scope of {} ({} at {}): a token sees its own jurisdiction and \
             everything below it",
            self.officer(),
            self.role(),
            self.jurisdiction()
        )
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}", path.display())]
    KeyFile { path: PathBuf, problem: String },
    #[error("{0}")]
    InvalidClaim(String),
    #[error("the system random source failed")]
    Random,
}

impl Error {
    /// Names `path` in a key-file error raised without one.
    fn at(self, path: &Path) -> Error {
        match self {
            Error::KeyFile { problem, .. } => Error::KeyFile {
                path: path.to_path_buf(),
                problem,
            },
            other => other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(jurisdiction: &str, role: Role) -> Principal {
        Principal {
            claims: Claims {
                token_id: "tok-1".into(),
                officer: "Li Wei".into(),
                jurisdiction: jurisdiction.into(),
                role,
                issued_at_ms: 0,
                expires_at_ms: i64::MAX,
            },
            peer: "127.0.0.1:1".into(),
        }
    }

    #[test]
    fn a_county_sees_itself_and_below_not_sideways_or_up() {
        let region = domain::region::Region::embedded_default();
        let tree = &region.tree;
        let county = principal("390102", Role::Officer);
        assert!(county.covers(tree, "390102"));
        assert!(county.covers(tree, "390102001"), "its township");
        assert!(!county.covers(tree, "390202400"), "another city's township");
        assert!(!county.covers(tree, "390100"), "its city");
        assert!(!county.covers(tree, "390000"), "its province");
        assert!(!county.covers(tree, ""), "no code");
        assert!(!county.covers(tree, "999999"), "unknown code");
        // Led by the province but located in the county: visible to the county.
        assert!(county.covers_incident(tree, "390000", "390102001"));
        assert!(!county.covers_incident(tree, "390000", "390202400"));
        let province = principal("390000", Role::Commander);
        assert!(province.covers(tree, "390202400"));
        assert!(
            !province.covers(tree, "000000"),
            "the national level is above"
        );
        let national = principal("000000", Role::Admin);
        assert!(national.covers(tree, "") && national.covers(tree, "390102001"));
    }

    #[test]
    fn roles_hold_what_their_job_needs_and_no_more() {
        use Permission::*;
        assert!(Role::Officer.allows(Acknowledge) && !Role::Officer.allows(Command));
        assert!(!Role::Officer.allows(Dispatch) && !Role::Officer.allows(Audit));
        assert!(Role::Dispatcher.allows(ManageUnits) && !Role::Dispatcher.allows(Report));
        assert!(Role::Auditor.allows(Audit) && !Role::Auditor.allows(Acknowledge));
        assert!(Role::Feed.allows(Feed) && !Role::Feed.allows(Read));
        assert!(Role::Commander.allows(Command) && !Role::Commander.allows(ManageUnits));
        assert!(Permission::ALL.iter().all(|p| Role::Admin.allows(*p)));
        for role in Role::ALL {
            assert_eq!(Role::parse(role.as_str()).unwrap(), role);
        }
        assert!(Role::parse("root").is_err());
    }
}

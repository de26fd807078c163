//! The crate's one error type.

/// Everything that can go wrong in the domain crate.
///
/// Data-file problems are always [`Error::Source`], which names the file, the 1-based line and
/// column and the problem, so a duty officer editing a TOML file can jump straight to the spot.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Error {
    /// A syntax or semantic problem in a data file.
    #[error("{file}:{line}:{column}: {problem}")]
    Source {
        file: String,
        line: usize,
        column: usize,
        problem: String,
    },

    /// The jurisdictions handed to [`crate::jurisdiction::JurisdictionTree::new`] do not form a tree.
    #[error("invalid jurisdiction tree: {problem}")]
    InvalidJurisdiction {
        /// The offending code, or empty when the problem concerns the whole tree (e.g. no root).
        code: String,
        problem: String,
    },

    /// A jurisdiction code that the tree does not know.
    #[error("unknown jurisdiction {code:?}")]
    UnknownJurisdiction { code: String },

    /// A lead jurisdiction was asked for without any location.
    #[error("no township codes given: an incident needs at least one location to find its lead")]
    NoTownships,

    /// A unit is already booked to a different incident; a unit is never booked twice.
    #[error(
        "unit {unit_id:?} is already booked to incident {holder_incident_id:?}; \
         refused for incident {requested_incident_id:?}"
    )]
    AlreadyBooked {
        unit_id: String,
        holder_incident_id: String,
        requested_incident_id: String,
    },
}

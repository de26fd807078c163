//! Per-feed shared secrets, for monitoring systems that can send a fixed bearer credential but
//! not a Muster token. The file holds only SHA-256 digests of the secrets:
//!
//! ```toml
//! [[feed]]
//! name = "cea-quake"          # the name the feed sends as ?feed= or the Muster-Feed header
//! secret_sha256 = "9f86d0…"    # sha256sum of the secret, 64 hex digits
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use ring::digest::{SHA256, digest};
use serde::Deserialize;

use crate::Error;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FeedSecrets {
    by_name: BTreeMap<String, [u8; 32]>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    #[serde(default)]
    feed: Vec<Entry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Entry {
    name: String,
    secret_sha256: String,
}

impl FeedSecrets {
    pub fn is_empty(&self) -> bool {
        self.by_name.is_empty()
    }

    /// Parses the file's text; `name` is used in messages.
    pub fn parse(name: &str, text: &str) -> Result<FeedSecrets, Error> {
        let problem = |problem: String| Error::KeyFile {
            path: name.into(),
            problem,
        };
        let file: File = toml::from_str(text).map_err(|error| {
            let at = error
                .span()
                .map(|span| {
                    let before = &text[..span.start.min(text.len())];
                    let line = before.matches('\n').count() + 1;
                    let col = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
                    format!("{line}:{col}: ")
                })
                .unwrap_or_default();
            problem(format!("{at}{}", error.message()))
        })?;
        let mut by_name = BTreeMap::new();
        for entry in file.feed {
            let hex = entry.secret_sha256.trim();
            let mut digest = [0u8; 32];
            if hex.len() != 64 {
                return Err(problem(format!(
                    "feed {:?}: secret_sha256 must be 64 hex digits (sha256sum of the secret)",
                    entry.name
                )));
            }
            for (i, byte) in digest.iter_mut().enumerate() {
                *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| {
                    problem(format!("feed {:?}: secret_sha256 is not hex", entry.name))
                })?;
            }
            if by_name.insert(entry.name.clone(), digest).is_some() {
                return Err(problem(format!("feed {:?} is listed twice", entry.name)));
            }
        }
        Ok(FeedSecrets { by_name })
    }

    pub fn load(path: &Path) -> Result<FeedSecrets, Error> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        FeedSecrets::parse(&path.display().to_string(), &text)
    }

    /// Whether `secret` is the one configured for feed `name`.
    pub fn accepts(&self, name: &str, secret: &str) -> bool {
        let Some(expected) = self.by_name.get(name) else {
            return false;
        };
        let presented = digest(&SHA256, secret.as_bytes());
        // Compare digests in full, not stopping at the first difference.
        presented
            .as_ref()
            .iter()
            .zip(expected)
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_configured_secret_is_accepted_for_its_feed_only() {
        let digest = crate::token::hex(super::digest(&SHA256, b"s3cret").as_ref());
        let text = format!("[[feed]]\nname = \"cea\"\nsecret_sha256 = \"{digest}\"\n");
        let secrets = FeedSecrets::parse("s.toml", &text).unwrap();
        assert!(secrets.accepts("cea", "s3cret"));
        assert!(!secrets.accepts("cea", "s3cret2"));
        assert!(!secrets.accepts("other", "s3cret"));
    }

    #[test]
    fn bad_files_name_the_line_and_the_problem() {
        let error = FeedSecrets::parse("s.toml", "[[feed]]\nname = \"a\"\nsecret = \"x\"\n")
            .unwrap_err()
            .to_string();
        assert!(error.starts_with("s.toml: 3:1"), "{error}");
        let error =
            FeedSecrets::parse("s.toml", "[[feed]]\nname = \"a\"\nsecret_sha256 = \"ab\"\n")
                .unwrap_err()
                .to_string();
        assert!(error.contains("64 hex digits"), "{error}");
    }
}

//! Bearer tokens: `mst1.<claims>.<signature>`, the claims JSON and the Ed25519 signature both in
//! unpadded base64url. Services hold only the public key, so a service cannot mint tokens; the
//! signing key stays with whoever runs `muster token issue`.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ring::rand::SecureRandom;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use serde::{Deserialize, Serialize};

use crate::{Error, Role};

/// Every token starts with this; a later format gets a new prefix.
pub const PREFIX: &str = "mst1.";
/// A token longer than this is refused before any decoding.
pub const TOKEN_BYTES_MAX: usize = 2048;
/// The longest lifetime `issue` accepts: tokens are meant to last a shift, not forever.
pub const TTL_MAX_MS: i64 = 366 * 24 * 3_600_000;
/// Clock skew tolerated between the issuer and a service.
const SKEW_MS: i64 = 5 * 60_000;

/// The file names inside an auth directory.
pub const SIGNING_KEY_FILE: &str = "signing.pk8";
pub const VERIFY_KEY_FILE: &str = "verify.pub";

/// What a token says about its holder.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// `tok-<16 hex>`, unique per issued token: audit entries name it.
    #[serde(rename = "tid")]
    pub token_id: String,
    /// The officer (or feed) name.
    #[serde(rename = "sub")]
    pub officer: String,
    /// The jurisdiction code the token is scoped to.
    #[serde(rename = "jur")]
    pub jurisdiction: String,
    pub role: Role,
    #[serde(rename = "iat")]
    pub issued_at_ms: i64,
    #[serde(rename = "exp")]
    pub expires_at_ms: i64,
}

/// The private half: signs tokens. Kept in `<auth dir>/signing.pk8`, mode 0600.
pub struct SigningKey {
    pair: Ed25519KeyPair,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("public", &hex(self.pair.public_key().as_ref()))
            .finish_non_exhaustive()
    }
}

/// The public half: verifies tokens. Services load only this (`verify.pub`, 64 hex digits).
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    bytes: [u8; 32],
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "VerifyingKey({})", hex(&self.bytes))
    }
}

impl SigningKey {
    /// A fresh key from the system's random source.
    pub fn generate() -> Result<SigningKey, Error> {
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| Error::Random)?;
        SigningKey::from_pkcs8(pkcs8.as_ref())
    }

    pub fn from_pkcs8(bytes: &[u8]) -> Result<SigningKey, Error> {
        let pair = Ed25519KeyPair::from_pkcs8(bytes).map_err(|error| Error::KeyFile {
            path: PathBuf::new(),
            problem: format!("not an Ed25519 PKCS#8 key: {error}"),
        })?;
        Ok(SigningKey { pair })
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        let mut bytes = [0u8; 32];
        bytes.copy_from_slice(self.pair.public_key().as_ref());
        VerifyingKey { bytes }
    }

    /// Signs `claims` into a token string.
    pub fn sign(&self, claims: &Claims) -> String {
        let payload = serde_json::to_vec(claims).expect("claims serialize");
        let mut token = String::with_capacity(PREFIX.len() + payload.len() * 2 + 90);
        token.push_str(PREFIX);
        URL_SAFE_NO_PAD.encode_string(&payload, &mut token);
        let signature = self.pair.sign(token.as_bytes());
        token.push('.');
        URL_SAFE_NO_PAD.encode_string(signature.as_ref(), &mut token);
        token
    }

    /// Issues a token for `officer` at `jurisdiction` with `role`, valid from `now_ms` for
    /// `ttl_ms`.
    pub fn issue(
        &self,
        officer: &str,
        jurisdiction: &str,
        role: Role,
        now_ms: i64,
        ttl_ms: i64,
    ) -> Result<(Claims, String), Error> {
        let officer = officer.trim();
        if officer.is_empty() || officer.len() > 128 || officer.chars().any(char::is_control) {
            return Err(Error::InvalidClaim(
                "officer: give a name of 1 to 128 printable characters".into(),
            ));
        }
        if !(1..=TTL_MAX_MS).contains(&ttl_ms) {
            return Err(Error::InvalidClaim(format!(
                "ttl: must be between 1 ms and {} days",
                TTL_MAX_MS / 86_400_000
            )));
        }
        let mut id = [0u8; 8];
        ring::rand::SystemRandom::new()
            .fill(&mut id)
            .map_err(|_| Error::Random)?;
        let claims = Claims {
            token_id: format!("tok-{}", hex(&id)),
            officer: officer.to_string(),
            jurisdiction: jurisdiction.to_string(),
            role,
            issued_at_ms: now_ms,
            expires_at_ms: now_ms.saturating_add(ttl_ms),
        };
        let token = self.sign(&claims);
        Ok((claims, token))
    }
}

impl VerifyingKey {
    pub fn from_hex(text: &str) -> Result<VerifyingKey, Error> {
        let text = text.trim();
        let problem = || Error::KeyFile {
            path: PathBuf::new(),
            problem: "expected 64 hex digits (an Ed25519 public key)".into(),
        };
        if text.len() != 64 {
            return Err(problem());
        }
        let mut bytes = [0u8; 32];
        for (i, byte) in bytes.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16).map_err(|_| problem())?;
        }
        Ok(VerifyingKey { bytes })
    }

    pub fn to_hex(&self) -> String {
        hex(&self.bytes)
    }

    /// Checks the signature and the validity window at `now_ms`; returns the claims.
    pub fn verify(&self, token: &str, now_ms: i64) -> Result<Claims, TokenError> {
        if token.len() > TOKEN_BYTES_MAX {
            return Err(TokenError::Malformed("longer than 2048 bytes"));
        }
        let Some(rest) = token.strip_prefix(PREFIX) else {
            return Err(TokenError::Malformed("does not start with mst1."));
        };
        let Some((payload, signature)) = rest.split_once('.') else {
            return Err(TokenError::Malformed("no signature part"));
        };
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| TokenError::Malformed("signature is not base64url"))?;
        let signed = &token[..PREFIX.len() + payload.len()];
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(signed.as_bytes(), &signature)
            .map_err(|_| TokenError::BadSignature)?;
        let payload = URL_SAFE_NO_PAD
            .decode(payload)
            .map_err(|_| TokenError::Malformed("claims are not base64url"))?;
        let claims: Claims = serde_json::from_slice(&payload)
            .map_err(|_| TokenError::Malformed("claims are not valid JSON"))?;
        if claims.expires_at_ms <= now_ms {
            return Err(TokenError::Expired {
                officer: claims.officer,
                expired_at_ms: claims.expires_at_ms,
            });
        }
        if claims.issued_at_ms > now_ms + SKEW_MS {
            return Err(TokenError::NotYetValid);
        }
        Ok(claims)
    }
}

/// Why a presented token was refused; the message is safe to send back to the caller.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenError {
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    #[error("token signature does not verify (issued with another key?)")]
    BadSignature,
    #[error("token of {officer} expired at {expired_at_ms} (Unix ms); issue a new one")]
    Expired { officer: String, expired_at_ms: i64 },
    #[error("token is not valid yet (issuer clock ahead by more than 5 minutes)")]
    NotYetValid,
}

/// An auth directory: `signing.pk8` (private, 0600) and `verify.pub` (public).
#[derive(Debug, Clone)]
pub struct KeyDir {
    pub dir: PathBuf,
}

impl KeyDir {
    pub fn new(dir: impl Into<PathBuf>) -> KeyDir {
        KeyDir { dir: dir.into() }
    }

    pub fn signing_path(&self) -> PathBuf {
        self.dir.join(SIGNING_KEY_FILE)
    }

    pub fn verify_path(&self) -> PathBuf {
        self.dir.join(VERIFY_KEY_FILE)
    }

    /// Loads the signing key, creating the directory and a new key pair when there is none yet.
    /// Returns the key and whether it was created now.
    pub fn load_or_create(&self) -> Result<(SigningKey, bool), Error> {
        if self.signing_path().exists() {
            return Ok((self.load_signing()?, false));
        }
        fs::create_dir_all(&self.dir).map_err(|source| Error::Io {
            path: self.dir.clone(),
            source,
        })?;
        let rng = ring::rand::SystemRandom::new();
        let pkcs8 = Ed25519KeyPair::generate_pkcs8(&rng).map_err(|_| Error::Random)?;
        write_private(&self.signing_path(), pkcs8.as_ref())?;
        let key = SigningKey::from_pkcs8(pkcs8.as_ref())?;
        let public = format!("{}\n", key.verifying_key().to_hex());
        fs::write(self.verify_path(), public).map_err(|source| Error::Io {
            path: self.verify_path(),
            source,
        })?;
        Ok((key, true))
    }

    pub fn load_signing(&self) -> Result<SigningKey, Error> {
        let path = self.signing_path();
        let bytes = fs::read(&path).map_err(|source| Error::Io {
            path: path.clone(),
            source,
        })?;
        SigningKey::from_pkcs8(&bytes).map_err(|error| error.at(&path))
    }
}

/// Loads a verify key file (`verify.pub`: 64 hex digits), naming the file in any error.
pub fn load_verifying_key(path: &Path) -> Result<VerifyingKey, Error> {
    let text = fs::read_to_string(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    VerifyingKey::from_hex(&text).map_err(|error| error.at(path))
}

/// Writes `bytes` to a new file only the owner can read.
pub fn write_private(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|source| Error::Io {
        path: path.to_path_buf(),
        source,
    })?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

/// Parses a lifetime such as `90s`, `30m`, `12h`, `7d` into milliseconds.
pub fn parse_ttl(text: &str) -> Result<i64, Error> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let value: i64 = digits.parse().map_err(|_| {
        Error::InvalidClaim(format!(
            "ttl {text:?}: give a number with a unit, e.g. 12h, 30m, 7d"
        ))
    })?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => {
            return Err(Error::InvalidClaim(format!(
                "ttl {text:?}: the unit must be s, m, h or d"
            )));
        }
    };
    Ok(value.saturating_mul(unit_ms))
}

/// Most tokens [`VerifiedTokens`] remembers; when full it starts again empty.
const VERIFIED_TOKENS_MAX: usize = 256;

/// Tokens whose signature this listener has checked, with their claims. A feed sends the same
/// token with every request; checking its Ed25519 signature each time was 4 % of intake's CPU in a
/// correlated feed run. The feed listener and the gRPC access layer both verify through one. The key is the whole token string (the signed bytes and the signature),
/// so only an identical token is found; its expiry is still checked on every request.
#[derive(Default)]
pub struct VerifiedTokens {
    tokens: std::sync::Mutex<std::collections::HashMap<String, Claims>>,
}

impl VerifiedTokens {
    /// [`VerifyingKey::verify`], remembering what passed.
    pub fn verify(
        &self,
        verifier: &VerifyingKey,
        token: &str,
        now_ms: i64,
    ) -> Result<Claims, TokenError> {
        let lock = || {
            self.tokens
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        };
        // A statement of its own, so the guard is dropped before the lock is taken again.
        let remembered = lock().get(token).cloned();
        if let Some(claims) = remembered {
            if claims.expires_at_ms > now_ms {
                return Ok(claims);
            }
            lock().remove(token);
        }
        // Expired, not yet valid, forged: whatever the full check says.
        let claims = verifier.verify(token, now_ms)?;
        let mut tokens = lock();
        if tokens.len() >= VERIFIED_TOKENS_MAX {
            tokens.clear();
        }
        tokens.insert(token.to_string(), claims.clone());
        Ok(claims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate().unwrap()
    }

    #[test]
    fn a_signed_token_verifies_and_round_trips_its_claims() {
        let key = key();
        let (claims, token) = key
            .issue("Li Wei", "390102", Role::Officer, 1_000, 3_600_000)
            .unwrap();
        assert!(token.starts_with(PREFIX));
        assert_eq!(key.verifying_key().verify(&token, 2_000).unwrap(), claims);
        assert!(claims.token_id.starts_with("tok-") && claims.token_id.len() == 20);
    }

    #[test]
    fn tampering_expiry_and_foreign_keys_are_refused() {
        let key = key();
        let (_, token) = key
            .issue("Li Wei", "390102", Role::Officer, 1_000, 60_000)
            .unwrap();
        let verifier = key.verifying_key();
        // Claims swapped for a province commander's, signature kept.
        let forged_claims = Claims {
            token_id: "tok-0000000000000000".into(),
            officer: "Li Wei".into(),
            jurisdiction: "390000".into(),
            role: Role::Commander,
            issued_at_ms: 1_000,
            expires_at_ms: 61_000,
        };
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged_claims).unwrap());
        let signature = token.rsplit('.').next().unwrap();
        let forged = format!("{PREFIX}{forged_payload}.{signature}");
        assert_eq!(
            verifier.verify(&forged, 2_000),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verifier.verify(&token, 61_000),
            Err(TokenError::Expired { .. })
        ));
        assert_eq!(
            SigningKey::generate()
                .unwrap()
                .verifying_key()
                .verify(&token, 2_000),
            Err(TokenError::BadSignature)
        );
        assert!(matches!(
            verifier.verify("Bearer abc", 2_000),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify(&"mst1.".repeat(500), 2_000),
            Err(TokenError::Malformed(_))
        ));
        assert!(matches!(
            verifier.verify("mst1.e30", 2_000),
            Err(TokenError::Malformed(_))
        ));
    }

    #[test]
    fn key_dir_creates_once_and_the_public_file_verifies() {
        let dir = tempfile::tempdir().unwrap();
        let keys = KeyDir::new(dir.path().join("auth"));
        let (first, created) = keys.load_or_create().unwrap();
        assert!(created);
        let (second, created) = keys.load_or_create().unwrap();
        assert!(!created);
        assert_eq!(first.verifying_key(), second.verifying_key());
        let public = load_verifying_key(&keys.verify_path()).unwrap();
        let (_, token) = second
            .issue("admin", "000000", Role::Admin, 0, 1_000)
            .unwrap();
        assert!(public.verify(&token, 10).is_ok());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(keys.signing_path())
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        fs::write(keys.verify_path(), "not hex\n").unwrap();
        let error = load_verifying_key(&keys.verify_path()).unwrap_err();
        assert!(error.to_string().contains("verify.pub"), "{error}");
    }

    #[test]
    fn ttl_parses_units_and_issue_bounds_it() {
        assert_eq!(parse_ttl("12h").unwrap(), 12 * 3_600_000);
        assert_eq!(parse_ttl("30m").unwrap(), 1_800_000);
        assert_eq!(parse_ttl("7d").unwrap(), 7 * 86_400_000);
        assert!(parse_ttl("12").is_err());
        assert!(parse_ttl("h").is_err());
        let key = key();
        assert!(key.issue("a", "390000", Role::Admin, 0, 0).is_err());
        assert!(
            key.issue("a", "390000", Role::Admin, 0, TTL_MAX_MS + 1)
                .is_err()
        );
        assert!(key.issue("  ", "390000", Role::Admin, 0, 1).is_err());
    }
}

#[cfg(test)]
mod verified_tokens_tests {
    use super::*;
    use crate::Role;

    #[test]
    fn a_remembered_token_is_still_refused_once_expired_and_a_forged_one_is_checked() {
        let key = SigningKey::generate().unwrap();
        let verifier = key.verifying_key();
        let now = 1_700_000_000_000;
        let (claims, token) = key
            .issue("usgs-bridge", "390000", Role::Feed, now, 60_000)
            .unwrap();
        let verified = VerifiedTokens::default();
        assert_eq!(verified.verify(&verifier, &token, now).unwrap(), claims);
        // Remembered: the same claims again, until it expires.
        assert_eq!(
            verified.verify(&verifier, &token, now + 59_999).unwrap(),
            claims
        );
        assert!(matches!(
            verified.verify(&verifier, &token, now + 60_000),
            Err(TokenError::Expired { .. })
        ));
        // Another signature on the same claims is not the remembered token.
        let (payload, _) = token.rsplit_once('.').unwrap();
        let forged = format!("{payload}.{}", "A".repeat(86));
        assert_eq!(
            verified.verify(&verifier, &forged, now),
            Err(TokenError::BadSignature)
        );
        // A token of another key is refused even while the first one is remembered.
        let other = SigningKey::generate().unwrap();
        let (_, foreign) = other
            .issue("usgs-bridge", "390000", Role::Feed, now, 60_000)
            .unwrap();
        assert_eq!(
            verified.verify(&verifier, &foreign, now),
            Err(TokenError::BadSignature)
        );
    }
}

//! Tokens for tests: a real signing key in the test's directory, and an interceptor that puts
//! `authorization: Bearer <token>` on every call of a generated client.

use std::path::{Path, PathBuf};

use auth::{KeyDir, Role, SigningKey, VerifyingKey};
use tonic::metadata::{Ascii, MetadataValue};

/// A key pair in `<dir>/auth` (signing.pk8, verify.pub) and an admin token for the whole region.
pub struct TestAuth {
    keys: KeyDir,
    signing: SigningKey,
    pub admin_token: String,
}

/// The national root of every Muster region.
pub const NATIONAL: &str = "000000";

impl TestAuth {
    /// Creates (or loads) the key pair in `<dir>/auth`.
    pub fn new(dir: &Path) -> TestAuth {
        let keys = KeyDir::new(dir.join("auth"));
        let (signing, _) = keys.load_or_create().expect("test auth key");
        let (_, admin_token) = signing
            .issue("test-admin", NATIONAL, Role::Admin, now_ms(), 86_400_000)
            .expect("admin token");
        TestAuth {
            keys,
            signing,
            admin_token,
        }
    }

    pub fn verifier(&self) -> VerifyingKey {
        self.signing.verifying_key()
    }

    /// `<dir>/auth/verify.pub`, for `muster serve --verify-key`.
    pub fn verify_key_path(&self) -> PathBuf {
        self.keys.verify_path()
    }

    pub fn auth_dir(&self) -> &Path {
        &self.keys.dir
    }

    /// A token for `officer` with `role`, scoped to `jurisdiction`, valid for a day.
    pub fn token(&self, officer: &str, jurisdiction: &str, role: Role) -> String {
        self.signing
            .issue(officer, jurisdiction, role, now_ms(), 86_400_000)
            .expect("token")
            .1
    }

    /// A token that expired a minute ago.
    pub fn expired_token(&self, officer: &str) -> String {
        self.signing
            .issue(officer, NATIONAL, Role::Admin, now_ms() - 120_000, 60_000)
            .expect("token")
            .1
    }
}

/// Adds `authorization: Bearer <token>` to every request.
#[derive(Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Bearer {
    pub fn new(token: &str) -> Bearer {
        Bearer(Some(
            format!("Bearer {token}").parse().expect("token is ASCII"),
        ))
    }

    /// Sends no token at all.
    pub fn none() -> Bearer {
        Bearer(None)
    }
}

impl tonic::service::Interceptor for Bearer {
    fn call(
        &mut self,
        mut request: tonic::Request<()>,
    ) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(value) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", value.clone());
        }
        Ok(request)
    }
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

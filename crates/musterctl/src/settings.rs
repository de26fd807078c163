//! The effective settings of one run: flags over environment variables over the config file over
//! built-in defaults, each value remembering where it came from so `config show` can say.
//!
//! The environment is passed in as an [`Environment`] rather than read here, so tests resolve
//! settings against an environment they build and never against the developer's own.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::{Cli, Error, OutputArg};

/// Built-in endpoints: where `muster up` listens.
pub const DEFAULT_INTAKE_URL: &str = "http://127.0.0.1:50051";
pub const DEFAULT_ESCALATION_URL: &str = "http://127.0.0.1:50052";
pub const DEFAULT_DISPATCH_URL: &str = "http://127.0.0.1:50053";
pub const DEFAULT_NAMESPACE: &str = "live";
pub const DEFAULT_TIMEOUT_MS: u64 = 5000;
/// Where `muster up` writes its admin token, relative to the working directory.
pub const DEFAULT_TOKEN_FILE: &str = ".muster/admin.token";

/// The environment variables musterctl reads, and where the config file lives.
#[derive(Debug, Clone, Default)]
pub struct Environment {
    vars: BTreeMap<String, String>,
    current_dir: PathBuf,
}

impl Environment {
    /// The process's own environment and working directory.
    pub fn from_process() -> Self {
        let vars = std::env::vars()
            .filter(|(name, _)| {
                name.starts_with("MUSTER_") || name == "XDG_CONFIG_HOME" || name == "HOME"
            })
            .collect();
        Self {
            vars,
            current_dir: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        }
    }

    /// No variables at all, with `current_dir` as the working directory (for tests).
    pub fn empty(current_dir: impl Into<PathBuf>) -> Self {
        Self {
            vars: BTreeMap::new(),
            current_dir: current_dir.into(),
        }
    }

    /// Adds a variable (for tests).
    pub fn with_var(mut self, name: &str, value: &str) -> Self {
        self.vars.insert(name.to_owned(), value.to_owned());
        self
    }

    /// A variable's value; an empty variable counts as unset, as it does for most tools.
    pub fn var(&self, name: &str) -> Option<&str> {
        self.vars
            .get(name)
            .map(String::as_str)
            .filter(|value| !value.is_empty())
    }

    pub fn current_dir(&self) -> &Path {
        &self.current_dir
    }

    /// `$XDG_CONFIG_HOME/muster/musterctl.toml`, else `~/.config/muster/musterctl.toml`.
    pub fn default_config_path(&self) -> Option<PathBuf> {
        let base = match self.var("XDG_CONFIG_HOME") {
            Some(xdg) => PathBuf::from(xdg),
            None => PathBuf::from(self.var("HOME")?).join(".config"),
        };
        Some(base.join("muster").join("musterctl.toml"))
    }

    fn absolute(&self, path: &Path) -> PathBuf {
        if path.is_absolute() {
            path.to_owned()
        } else {
            self.current_dir.join(path)
        }
    }
}

/// Where one setting's value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// A command-line flag, e.g. `--intake`.
    Flag(&'static str),
    /// An environment variable, e.g. `MUSTER_INTAKE_URL`.
    Env(&'static str),
    /// A key of the config file.
    Config { path: PathBuf, key: &'static str },
    /// musterctl's built-in default.
    Default,
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag(flag) => write!(f, "flag {flag}"),
            Source::Env(name) => write!(f, "env {name}"),
            Source::Config { path, key } => write!(f, "config {} ({key})", path.display()),
            Source::Default => f.write_str("default"),
        }
    }
}

/// One setting's value and its source.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// How output is printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutputFormat {
    Table,
    Json,
}

impl fmt::Display for OutputFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            OutputFormat::Table => "table",
            OutputFormat::Json => "json",
        })
    }
}

/// The bearer token and where it was found. `Debug` never shows the token.
#[derive(Clone, PartialEq, Eq)]
pub struct TokenSetting {
    pub token: String,
    pub source: Source,
    /// The file the token was read from, when it came from one.
    pub file: Option<PathBuf>,
}

impl TokenSetting {
    /// The first 8 characters, the most `config show` ever prints of a token.
    pub fn prefix(&self) -> String {
        self.token.chars().take(8).collect()
    }

    /// Where the token came from, in words: `file ./x (from env MUSTER_TOKEN_FILE)`.
    pub fn describe_source(&self) -> String {
        match &self.file {
            Some(file) => format!("file {} (from {})", file.display(), self.source),
            None => self.source.to_string(),
        }
    }
}

impl fmt::Debug for TokenSetting {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSetting")
            .field("token", &format_args!("{}…", self.prefix()))
            .field("source", &self.source)
            .field("file", &self.file)
            .finish()
    }
}

/// The config file as written. Unknown keys are errors, so a typo never silently falls back to
/// a default. Relative paths are relative to the file's directory.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    pub intake: Option<String>,
    pub escalation: Option<String>,
    pub dispatch: Option<String>,
    pub namespace: Option<String>,
    pub token: Option<String>,
    pub token_file: Option<PathBuf>,
    pub ca_cert: Option<PathBuf>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    pub tls_domain: Option<String>,
    pub timeout_ms: Option<u64>,
    pub output: Option<OutputFormat>,
}

impl ConfigFile {
    /// Parses the text of `path`, naming `file:line:col` and the problem on failure.
    pub fn parse(path: &Path, text: &str) -> Result<Self, Error> {
        toml::from_str(text).map_err(|error| {
            let (line, column) = error
                .span()
                .map(|span| line_and_column(text, span.start))
                .unwrap_or((1, 1));
            Error::Config {
                path: path.to_owned(),
                line,
                column,
                problem: error.message().trim().to_owned(),
            }
        })
    }
}

/// 1-based line and column (in characters) of a byte offset.
fn line_and_column(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |index| index + 1);
    (line, before[line_start..].chars().count() + 1)
}

/// Everything a run needs from flags, environment and config file.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The config file read, if any, and why that one.
    pub config_file: Option<Setting<PathBuf>>,
    pub intake: Setting<String>,
    pub escalation: Setting<String>,
    pub dispatch: Setting<String>,
    pub namespace: Setting<String>,
    pub timeout_ms: Setting<u64>,
    pub output: Setting<OutputFormat>,
    pub token: Option<TokenSetting>,
    pub ca_cert: Option<Setting<PathBuf>>,
    pub tls_cert: Option<Setting<PathBuf>>,
    pub tls_key: Option<Setting<PathBuf>>,
    pub tls_domain: Option<Setting<String>>,
}

/// Picks the first of flag, environment variable, config value.
fn pick<T>(
    flag: Option<T>,
    flag_name: &'static str,
    env: Option<T>,
    env_name: &'static str,
    config: Option<T>,
    config_path: Option<&Path>,
    key: &'static str,
) -> Option<Setting<T>> {
    if let Some(value) = flag {
        return Some(Setting {
            value,
            source: Source::Flag(flag_name),
        });
    }
    if let Some(value) = env {
        return Some(Setting {
            value,
            source: Source::Env(env_name),
        });
    }
    match (config, config_path) {
        (Some(value), Some(path)) => Some(Setting {
            value,
            source: Source::Config {
                path: path.to_owned(),
                key,
            },
        }),
        _ => None,
    }
}

fn or_default<T>(setting: Option<Setting<T>>, default: T) -> Setting<T> {
    setting.unwrap_or(Setting {
        value: default,
        source: Source::Default,
    })
}

impl Settings {
    /// Resolves every setting for `cli` in `environment`.
    pub fn resolve(cli: &Cli, environment: &Environment) -> Result<Self, Error> {
        let config_file = Self::config_path(cli, environment);
        let (config, config_path) = match &config_file {
            None => (ConfigFile::default(), None),
            Some(setting) => {
                let path = &setting.value;
                match std::fs::read_to_string(path) {
                    Ok(text) => (ConfigFile::parse(path, &text)?, Some(path.clone())),
                    // A missing default file is the usual case, not an error.
                    Err(error)
                        if error.kind() == std::io::ErrorKind::NotFound
                            && setting.source == Source::Default =>
                    {
                        (ConfigFile::default(), None)
                    }
                    Err(error) => {
                        return Err(Error::ConfigUnreadable {
                            path: path.clone(),
                            reason: error.to_string(),
                        });
                    }
                }
            }
        };
        let config_dir = config_path
            .as_deref()
            .and_then(Path::parent)
            .map(Path::to_owned);
        let config_relative = |path: PathBuf| match &config_dir {
            Some(dir) if path.is_relative() => dir.join(path),
            _ => path,
        };
        let env_string = |name: &str| environment.var(name).map(str::to_owned);
        let env_path = |name: &str| {
            environment
                .var(name)
                .map(|p| environment.absolute(Path::new(p)))
        };
        let flag_path = |path: &Option<PathBuf>| path.as_deref().map(|p| environment.absolute(p));
        let at = config_path.as_deref();

        let intake = or_default(
            pick(
                cli.intake_url.clone(),
                "--intake",
                env_string("MUSTER_INTAKE_URL"),
                "MUSTER_INTAKE_URL",
                config.intake,
                at,
                "intake",
            ),
            DEFAULT_INTAKE_URL.to_owned(),
        );
        let escalation = or_default(
            pick(
                cli.escalation_url.clone(),
                "--escalation",
                env_string("MUSTER_ESCALATION_URL"),
                "MUSTER_ESCALATION_URL",
                config.escalation,
                at,
                "escalation",
            ),
            DEFAULT_ESCALATION_URL.to_owned(),
        );
        let dispatch = or_default(
            pick(
                cli.dispatch_url.clone(),
                "--dispatch",
                env_string("MUSTER_DISPATCH_URL"),
                "MUSTER_DISPATCH_URL",
                config.dispatch,
                at,
                "dispatch",
            ),
            DEFAULT_DISPATCH_URL.to_owned(),
        );
        let namespace = or_default(
            pick(
                cli.namespace.clone(),
                "--namespace",
                env_string("MUSTER_NAMESPACE"),
                "MUSTER_NAMESPACE",
                config.namespace,
                at,
                "namespace",
            ),
            DEFAULT_NAMESPACE.to_owned(),
        );
        let timeout_env = match environment.var("MUSTER_TIMEOUT_MS") {
            None => None,
            Some(text) => Some(text.trim().parse::<u64>().map_err(|_| Error::Setting {
                origin: "env MUSTER_TIMEOUT_MS".to_owned(),
                problem: format!("{text:?} is not a whole number of milliseconds"),
            })?),
        };
        let timeout_ms = or_default(
            pick(
                cli.timeout_ms,
                "--timeout-ms",
                timeout_env,
                "MUSTER_TIMEOUT_MS",
                config.timeout_ms,
                at,
                "timeout_ms",
            ),
            DEFAULT_TIMEOUT_MS,
        );
        let output_flag = if cli.json {
            Some((OutputFormat::Json, "--json"))
        } else {
            cli.output.map(|output| {
                let format = match output {
                    OutputArg::Table => OutputFormat::Table,
                    OutputArg::Json => OutputFormat::Json,
                };
                (format, "--output")
            })
        };
        let output_env = match environment.var("MUSTER_OUTPUT") {
            None => None,
            Some("table") => Some(OutputFormat::Table),
            Some("json") => Some(OutputFormat::Json),
            Some(other) => {
                return Err(Error::Setting {
                    origin: "env MUSTER_OUTPUT".to_owned(),
                    problem: format!("{other:?} is not an output format: use table or json"),
                });
            }
        };
        let output = match output_flag {
            Some((value, flag)) => Setting {
                value,
                source: Source::Flag(flag),
            },
            None => or_default(
                pick(
                    None,
                    "--output",
                    output_env,
                    "MUSTER_OUTPUT",
                    config.output,
                    at,
                    "output",
                ),
                OutputFormat::Table,
            ),
        };

        let ca_cert = pick(
            flag_path(&cli.ca_cert),
            "--ca-cert",
            env_path("MUSTER_CA_CERT"),
            "MUSTER_CA_CERT",
            config.ca_cert.map(config_relative),
            at,
            "ca_cert",
        );
        let tls_cert = pick(
            flag_path(&cli.tls_cert),
            "--tls-cert",
            env_path("MUSTER_TLS_CERT"),
            "MUSTER_TLS_CERT",
            config.tls_cert.map(config_relative),
            at,
            "tls_cert",
        );
        let tls_key = pick(
            flag_path(&cli.tls_key),
            "--tls-key",
            env_path("MUSTER_TLS_KEY"),
            "MUSTER_TLS_KEY",
            config.tls_key.map(config_relative),
            at,
            "tls_key",
        );
        let tls_domain = pick(
            cli.tls_domain.clone(),
            "--tls-domain",
            env_string("MUSTER_TLS_DOMAIN"),
            "MUSTER_TLS_DOMAIN",
            config.tls_domain,
            at,
            "tls_domain",
        );
        match (&tls_cert, &tls_key) {
            (Some(cert), None) => {
                return Err(Error::Setting {
                    origin: cert.source.to_string(),
                    problem: "a client certificate needs its key: give --tls-key too".to_owned(),
                });
            }
            (None, Some(key)) => {
                return Err(Error::Setting {
                    origin: key.source.to_string(),
                    problem: "a client key needs its certificate: give --tls-cert too".to_owned(),
                });
            }
            _ => {}
        }

        let token = resolve_token(
            cli,
            environment,
            config.token,
            config.token_file.map(config_relative),
            at,
        )?;

        Ok(Self {
            config_file: config_path.map(|path| Setting {
                value: path,
                source: config_file
                    .map(|setting| setting.source)
                    .unwrap_or(Source::Default),
            }),
            intake,
            escalation,
            dispatch,
            namespace,
            timeout_ms,
            output,
            token,
            ca_cert,
            tls_cert,
            tls_key,
            tls_domain,
        })
    }

    /// The config file to read: `--config`, `MUSTER_CONFIG`, else the default path.
    fn config_path(cli: &Cli, environment: &Environment) -> Option<Setting<PathBuf>> {
        if let Some(path) = &cli.config {
            return Some(Setting {
                value: environment.absolute(path),
                source: Source::Flag("--config"),
            });
        }
        if let Some(path) = environment.var("MUSTER_CONFIG") {
            return Some(Setting {
                value: environment.absolute(Path::new(path)),
                source: Source::Env("MUSTER_CONFIG"),
            });
        }
        environment.default_config_path().map(|value| Setting {
            value,
            source: Source::Default,
        })
    }

    pub fn json(&self) -> bool {
        self.output.value == OutputFormat::Json
    }

    /// True when the services are reached over TLS: a CA certificate or client identity was
    /// given, or any endpoint is `https://`.
    pub fn tls_enabled(&self) -> bool {
        self.ca_cert.is_some()
            || self.tls_cert.is_some()
            || [&self.intake, &self.escalation, &self.dispatch]
                .iter()
                .any(|setting| setting.value.trim().starts_with("https://"))
    }

    /// `config show`: every effective setting, its value and source. Never the token itself.
    pub fn describe(&self) -> Vec<(&'static str, String, String)> {
        let mut rows = Vec::new();
        rows.push(match &self.config_file {
            Some(file) => (
                "config",
                file.value.display().to_string(),
                file.source.to_string(),
            ),
            None => ("config", "-".to_owned(), "none read".to_owned()),
        });
        for (name, setting) in [
            ("intake", &self.intake),
            ("escalation", &self.escalation),
            ("dispatch", &self.dispatch),
            ("namespace", &self.namespace),
        ] {
            rows.push((name, setting.value.clone(), setting.source.to_string()));
        }
        rows.push((
            "timeout_ms",
            self.timeout_ms.value.to_string(),
            self.timeout_ms.source.to_string(),
        ));
        rows.push((
            "output",
            self.output.value.to_string(),
            self.output.source.to_string(),
        ));
        rows.push(match &self.token {
            Some(token) => (
                "token",
                format!("{}… (hidden)", token.prefix()),
                token.describe_source(),
            ),
            None => ("token", "-".to_owned(), "none found".to_owned()),
        });
        rows.push((
            "tls",
            if self.tls_enabled() { "on" } else { "off" }.to_owned(),
            if self.tls_enabled() {
                "https endpoint or certificate given".to_owned()
            } else {
                "plain http endpoints".to_owned()
            },
        ));
        for (name, setting) in [
            ("ca_cert", &self.ca_cert),
            ("tls_cert", &self.tls_cert),
            ("tls_key", &self.tls_key),
        ] {
            rows.push(match setting {
                Some(setting) => (
                    name,
                    setting.value.display().to_string(),
                    setting.source.to_string(),
                ),
                None => (name, "-".to_owned(), "not set".to_owned()),
            });
        }
        rows.push(match &self.tls_domain {
            Some(setting) => (
                "tls_domain",
                setting.value.clone(),
                setting.source.to_string(),
            ),
            None => (
                "tls_domain",
                "-".to_owned(),
                "not set (the endpoint's host)".to_owned(),
            ),
        });
        rows
    }
}

/// The token, in the order the brief fixes: `--token`, `MUSTER_TOKEN`, `--token-file` or
/// `MUSTER_TOKEN_FILE`, the config file's `token` or `token_file`, then `./.muster/admin.token`
/// if it exists. Whitespace around the token is trimmed.
fn resolve_token(
    cli: &Cli,
    environment: &Environment,
    config_token: Option<String>,
    config_token_file: Option<PathBuf>,
    config_path: Option<&Path>,
) -> Result<Option<TokenSetting>, Error> {
    let inline = |token: &str, source: Source| -> Result<TokenSetting, Error> {
        checked_token(token, &source.to_string()).map(|token| TokenSetting {
            token,
            source,
            file: None,
        })
    };
    let from_file = |path: &Path, source: Source| -> Result<TokenSetting, Error> {
        let path = environment.absolute(path);
        let text = std::fs::read_to_string(&path).map_err(|error| Error::Setting {
            origin: source.to_string(),
            problem: format!("cannot read token file {}: {error}", path.display()),
        })?;
        let described = format!("token file {}", path.display());
        checked_token(&text, &described).map(|token| TokenSetting {
            token,
            source,
            file: Some(path),
        })
    };
    if let Some(token) = &cli.token {
        return inline(&token.0, Source::Flag("--token")).map(Some);
    }
    if let Some(token) = environment.var("MUSTER_TOKEN") {
        return inline(token, Source::Env("MUSTER_TOKEN")).map(Some);
    }
    if let Some(path) = &cli.token_file {
        return from_file(path, Source::Flag("--token-file")).map(Some);
    }
    if let Some(path) = environment.var("MUSTER_TOKEN_FILE") {
        return from_file(Path::new(path), Source::Env("MUSTER_TOKEN_FILE")).map(Some);
    }
    if let Some(path) = config_path {
        if let Some(token) = &config_token {
            let source = Source::Config {
                path: path.to_owned(),
                key: "token",
            };
            return inline(token, source).map(Some);
        }
        if let Some(file) = &config_token_file {
            let source = Source::Config {
                path: path.to_owned(),
                key: "token_file",
            };
            return from_file(file, source).map(Some);
        }
    }
    let default_file = environment.absolute(Path::new(DEFAULT_TOKEN_FILE));
    if default_file.is_file() {
        return from_file(&default_file, Source::Default).map(Some);
    }
    Ok(None)
}

/// Trims the token and checks it can travel in an `authorization` header.
fn checked_token(raw: &str, source: &str) -> Result<String, Error> {
    let token = raw.trim();
    if token.is_empty() {
        return Err(Error::Setting {
            origin: source.to_owned(),
            problem: "the token is empty".to_owned(),
        });
    }
    if token.chars().any(|c| !c.is_ascii_graphic()) {
        return Err(Error::Setting {
            origin: source.to_owned(),
            problem: "the token has characters a header cannot carry (spaces, control or non-ASCII characters)".to_owned(),
        });
    }
    Ok(token.to_owned())
}

//! The config file, the precedence of flags over environment over config over defaults, token
//! resolution, TLS settings, `config show` and shell completions.

use std::path::Path;

use clap::Parser;
use musterctl::settings::{OutputFormat, Source};
use musterctl::{Environment, Error, Settings};

use crate::{DEAD, parse, run_in_environment};

fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).unwrap();
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn resolve(args: &[&str], environment: &Environment) -> Result<Settings, Error> {
    Settings::resolve(&parse(args), environment)
}

#[test]
fn flags_beat_environment_beat_config_beat_defaults() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "musterctl.toml",
        "intake = \"http://config:1\"\nescalation = \"http://config:2\"\ntimeout_ms = 900\noutput = \"json\"\n",
    );
    let config = config.to_str().unwrap();
    let environment = Environment::empty(dir.path())
        .with_var("MUSTER_CONFIG", config)
        .with_var("MUSTER_INTAKE_URL", "http://env:1");

    let settings = resolve(&["status", "--intake", "http://flag:1"], &environment).unwrap();
    assert_eq!(settings.intake.value, "http://flag:1");
    assert_eq!(settings.intake.source, Source::Flag("--intake"));

    let settings = resolve(&["status"], &environment).unwrap();
    assert_eq!(settings.intake.value, "http://env:1");
    assert_eq!(settings.intake.source, Source::Env("MUSTER_INTAKE_URL"));
    assert_eq!(settings.escalation.value, "http://config:2");
    assert!(
        matches!(&settings.escalation.source, Source::Config { key: "escalation", path } if path.ends_with("musterctl.toml")),
        "{:?}",
        settings.escalation.source
    );
    assert_eq!(settings.dispatch.value, "http://127.0.0.1:50053");
    assert_eq!(settings.dispatch.source, Source::Default);
    assert_eq!(settings.timeout_ms.value, 900);
    assert_eq!(settings.output.value, OutputFormat::Json);
    assert!(settings.json());

    // A flag turns the config's JSON back into tables.
    let settings = resolve(&["status", "--output", "table"], &environment).unwrap();
    assert_eq!(settings.output.value, OutputFormat::Table);
    assert_eq!(settings.output.source, Source::Flag("--output"));
}

#[test]
fn the_default_config_file_comes_from_xdg_config_home_then_home() {
    let dir = tempfile::tempdir().unwrap();
    write(
        dir.path(),
        "xdg/muster/musterctl.toml",
        "namespace = \"drill.9\"\n",
    );
    write(
        dir.path(),
        "home/.config/muster/musterctl.toml",
        "namespace = \"drill.home\"\n",
    );
    let xdg = dir.path().join("xdg");
    let home = dir.path().join("home");
    let both = Environment::empty(dir.path())
        .with_var("XDG_CONFIG_HOME", xdg.to_str().unwrap())
        .with_var("HOME", home.to_str().unwrap());
    assert_eq!(
        resolve(&["status"], &both).unwrap().namespace.value,
        "drill.9"
    );
    let home_only = Environment::empty(dir.path()).with_var("HOME", home.to_str().unwrap());
    assert_eq!(
        resolve(&["status"], &home_only).unwrap().namespace.value,
        "drill.home"
    );
    // A missing default file is no error; a missing named one is.
    let nowhere = Environment::empty(dir.path()).with_var("HOME", "/nonexistent/home");
    let settings = resolve(&["status"], &nowhere).unwrap();
    assert_eq!(settings.namespace.value, "live");
    assert!(settings.config_file.is_none());
    let error = resolve(&["status", "--config", "missing.toml"], &nowhere).unwrap_err();
    let line = error.to_string();
    assert!(
        line.starts_with("cannot read config file ") && line.contains("missing.toml"),
        "{line}"
    );
}

#[test]
fn config_errors_name_file_line_column_and_problem() {
    let dir = tempfile::tempdir().unwrap();
    let environment = Environment::empty(dir.path());
    let typo = write(
        dir.path(),
        "typo.toml",
        "intake = \"http://a:1\"\nintak = \"http://b:1\"\n",
    );
    let line = resolve(
        &["status", "--config", typo.to_str().unwrap()],
        &environment,
    )
    .unwrap_err()
    .to_string();
    assert!(
        line.starts_with(&format!("{}:2:1: ", typo.display())),
        "{line}"
    );
    assert!(line.contains("unknown field `intak`"), "{line}");

    let wrong_type = write(
        dir.path(),
        "type.toml",
        "# timeouts\ntimeout_ms = \"soon\"\n",
    );
    let line = resolve(
        &["status", "--config", wrong_type.to_str().unwrap()],
        &environment,
    )
    .unwrap_err()
    .to_string();
    assert!(
        line.starts_with(&format!("{}:2:14: ", wrong_type.display())),
        "{line}"
    );
    assert!(!line.contains('\n'), "one line: {line}");

    let bad_output = write(dir.path(), "output.toml", "output = \"yaml\"\n");
    let line = resolve(
        &["status", "--config", bad_output.to_str().unwrap()],
        &environment,
    )
    .unwrap_err()
    .to_string();
    assert!(line.contains(":1:10: "), "{line}");
    assert!(line.contains("yaml"), "{line}");
}

#[test]
fn the_token_comes_from_flag_env_file_config_then_the_local_admin_token() {
    let dir = tempfile::tempdir().unwrap();
    let token_file = write(dir.path(), "flag.token", "  mst1.from-file\n");
    write(dir.path(), ".muster/admin.token", "mst1.local-admin\n");
    let config = write(
        dir.path(),
        "conf/musterctl.toml",
        "token_file = \"config.token\"\n",
    );
    write(dir.path(), "conf/config.token", "mst1.config-file\n");
    let config = config.to_str().unwrap();
    let token_file = token_file.to_str().unwrap();
    let token_of = |args: &[&str], environment: &Environment| {
        resolve(args, environment)
            .unwrap()
            .token
            .map(|token| (token.token.clone(), token.describe_source()))
    };
    let everything = Environment::empty(dir.path())
        .with_var("MUSTER_TOKEN", "mst1.from-env")
        .with_var("MUSTER_TOKEN_FILE", token_file)
        .with_var("MUSTER_CONFIG", config);

    let (token, source) = token_of(&["status", "--token", "mst1.flag"], &everything).unwrap();
    assert_eq!(
        (token.as_str(), source.as_str()),
        ("mst1.flag", "flag --token")
    );
    let (token, source) = token_of(&["status"], &everything).unwrap();
    assert_eq!(
        (token.as_str(), source.as_str()),
        ("mst1.from-env", "env MUSTER_TOKEN")
    );

    let without_env_token = Environment::empty(dir.path())
        .with_var("MUSTER_TOKEN_FILE", token_file)
        .with_var("MUSTER_CONFIG", config);
    let (token, source) = token_of(&["status"], &without_env_token).unwrap();
    assert_eq!(token, "mst1.from-file", "trimmed");
    assert!(source.ends_with("(from env MUSTER_TOKEN_FILE)"), "{source}");

    // The config's token_file is relative to the config file.
    let config_only = Environment::empty(dir.path()).with_var("MUSTER_CONFIG", config);
    let (token, source) = token_of(&["status"], &config_only).unwrap();
    assert_eq!(token, "mst1.config-file");
    assert!(
        source.contains("conf/config.token") && source.contains("(token_file)"),
        "{source}"
    );

    // Nothing else: `muster up`'s admin token in the working directory.
    let bare = Environment::empty(dir.path());
    let (token, source) = token_of(&["status"], &bare).unwrap();
    assert_eq!(token, "mst1.local-admin");
    assert!(
        source.contains(".muster/admin.token") && source.ends_with("(from default)"),
        "{source}"
    );

    // A printed command line shows no more of the token than `config show` does.
    let cli = parse(&["status", "--token", "mst1.abcdefSECRET"]);
    let printed = format!("{cli:?}");
    assert!(
        printed.contains("mst1.abc") && !printed.contains("SECRET"),
        "{printed}"
    );

    // No token anywhere is not an error: the server decides.
    assert_eq!(
        token_of(&["status"], &Environment::empty("/nonexistent")),
        None
    );

    // An unreadable or empty token file is.
    let error = resolve(&["status", "--token-file", "nope.token"], &bare).unwrap_err();
    assert!(
        error
            .to_string()
            .starts_with("flag --token-file: cannot read token file"),
        "{error}"
    );
    write(dir.path(), "empty.token", " \n");
    let error = resolve(&["status", "--token-file", "empty.token"], &bare).unwrap_err();
    assert!(error.to_string().contains("the token is empty"), "{error}");
}

#[tokio::test]
async fn config_show_prints_values_and_sources_but_never_the_token() {
    let dir = tempfile::tempdir().unwrap();
    let config = write(
        dir.path(),
        "musterctl.toml",
        "dispatch = \"http://dispatch.example:7\"\ntoken = \"mst1.abcdefghSECRETSECRET\"\n",
    );
    let environment = Environment::empty(dir.path())
        .with_var("MUSTER_CONFIG", config.to_str().unwrap())
        .with_var("MUSTER_NAMESPACE", "drill.3");
    let cli = parse(&["config", "show", "--intake", "http://flag:9"]);
    let (result, output) = run_in_environment(cli, &environment).await;
    assert_eq!(result.unwrap(), 0, "{output}");
    assert!(!output.contains("SECRET"), "the token leaked:\n{output}");
    let line = |name: &str| -> Vec<String> {
        output
            .lines()
            .find(|line| line.starts_with(&format!("{name} ")))
            .unwrap_or_else(|| panic!("no {name} line in\n{output}"))
            .split("  ")
            .map(str::trim)
            .filter(|cell| !cell.is_empty())
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(line("intake"), ["intake", "http://flag:9", "flag --intake"]);
    assert_eq!(
        line("namespace"),
        ["namespace", "drill.3", "env MUSTER_NAMESPACE"]
    );
    assert_eq!(
        line("dispatch"),
        [
            "dispatch".to_owned(),
            "http://dispatch.example:7".to_owned(),
            format!("config {} (dispatch)", config.display())
        ]
    );
    assert_eq!(line("escalation")[2], "default");
    assert_eq!(
        line("token"),
        [
            "token".to_owned(),
            "mst1.abc… (hidden)".to_owned(),
            format!("config {} (token)", config.display())
        ]
    );
    assert_eq!(line("tls")[1], "off");

    let cli = parse(&["config", "show", "--json"]);
    let (result, output) = run_in_environment(cli, &environment).await;
    assert_eq!(result.unwrap(), 0);
    assert!(!output.contains("SECRET"));
    let json: serde_json::Value = serde_json::from_str(&output).unwrap();
    assert_eq!(json["namespace"]["value"], "drill.3");
    assert_eq!(json["output"]["source"], "flag --json");
}

#[test]
fn tls_settings_are_checked_before_any_call() {
    let dir = tempfile::tempdir().unwrap();
    let environment = Environment::empty(dir.path());
    let cert = write(dir.path(), "client.pem", "-----BEGIN CERTIFICATE-----\n");
    let error = resolve(
        &["status", "--tls-cert", cert.to_str().unwrap()],
        &environment,
    )
    .unwrap_err();
    assert!(error.to_string().contains("give --tls-key too"), "{error}");

    let settings = resolve(
        &[
            "status",
            "--ca-cert",
            "ca.pem",
            "--tls-domain",
            "muster.internal",
        ],
        &environment,
    )
    .unwrap();
    assert!(settings.tls_enabled());
    assert_eq!(settings.tls_domain.unwrap().value, "muster.internal");
    let settings = resolve(&["status", "--intake", "https://intake:443"], &environment).unwrap();
    assert!(settings.tls_enabled(), "an https endpoint means TLS");
    assert!(!resolve(&["status"], &environment).unwrap().tls_enabled());
}

#[tokio::test]
async fn unreadable_or_non_pem_certificates_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let environment = Environment::empty(dir.path());
    let (result, _) = run_in_environment(
        parse(&["units", "--ca-cert", "missing-ca.pem", "--dispatch", DEAD]),
        &environment,
    )
    .await;
    let line = result.unwrap_err().to_string();
    assert!(
        line.starts_with("TLS: cannot read CA certificate (--ca-cert) "),
        "{line}"
    );
    assert!(line.contains("missing-ca.pem"), "{line}");

    write(dir.path(), "not.pem", "hello");
    let (result, _) = run_in_environment(
        parse(&["units", "--ca-cert", "not.pem", "--dispatch", DEAD]),
        &environment,
    )
    .await;
    let line = result.unwrap_err().to_string();
    assert!(line.contains("is not PEM"), "{line}");
}

#[tokio::test]
async fn a_ca_certificate_turns_plain_endpoints_into_tls_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Any PEM block passes the early check; the handshake is never reached because nothing
    // listens, and the error names the https endpoint that was dialled.
    let ca = write(
        dir.path(),
        "ca.pem",
        "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
    );
    let (result, _) = run_in_environment(
        parse(&[
            "units",
            "--ca-cert",
            ca.to_str().unwrap(),
            "--dispatch",
            "127.0.0.1:1",
        ]),
        &Environment::empty(dir.path()),
    )
    .await;
    let line = result.unwrap_err().to_string();
    assert!(line.contains("https://127.0.0.1:1"), "{line}");
}

#[tokio::test]
async fn completions_cover_every_shell_and_name_the_subcommands() {
    for shell in ["bash", "zsh", "fish", "powershell", "elvish"] {
        // Completions need no settings, so even a broken config file does not stop them.
        let environment =
            Environment::empty("/nonexistent").with_var("MUSTER_CONFIG", "/nonexistent/x.toml");
        let (result, output) =
            run_in_environment(parse(&["completions", shell]), &environment).await;
        assert_eq!(result.unwrap(), 0, "{shell}");
        assert!(output.len() > 500, "{shell}: {output}");
        for subcommand in ["audit", "top", "watch", "show", "completions", "config"] {
            assert!(output.contains(subcommand), "{shell} lacks {subcommand}");
        }
        assert!(output.contains("--token"), "{shell} lacks --token");
    }
    assert!(
        musterctl::Cli::try_parse_from(["musterctl", "completions", "tcsh"]).is_err(),
        "unknown shells are usage errors"
    );
}

#[test]
fn the_example_config_file_parses_with_every_key() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("musterctl.example.toml");
    let text = std::fs::read_to_string(&path).unwrap();
    let config = musterctl::settings::ConfigFile::parse(&path, &text).unwrap();
    assert_eq!(
        config.escalation.as_deref(),
        Some("https://muster.example.gov:50052")
    );
    assert_eq!(config.token_file.as_deref(), Some(Path::new("duty.token")));
    assert_eq!(config.output, Some(OutputFormat::Table));
    assert_eq!(config.timeout_ms, Some(5000));
}

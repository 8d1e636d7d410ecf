//! The runner's own configuration: `runner.yaml`.
//!
//! Loading expands `${VAR}` references in string values, validates every
//! section and reports all problems together, each with its YAML path.
//! `docs/configuration.md` documents every key.

mod expand;
mod openmetadata;
mod prechecks;
pub mod reader;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_yaml::Value;

pub use openmetadata::OpenMetadataConfig;
pub use prechecks::PrechecksConfig;
pub use reader::ConfigIssue;
use reader::{Issues, Section};

/// Largest runner.yaml accepted, in bytes.
const MAX_CONFIG_FILE_BYTES: u64 = 1 << 20;

/// Prefix under which secret references are allowed by default.
pub const DEFAULT_ALLOWED_PREFIX: &str = "/collate/hybrid-ingestion/";

/// Environment variables passed to workflow processes by default.
pub const DEFAULT_ENV_ALLOW: &[&str] = &[
    "PATH",
    "HOME",
    "USER",
    "LANG",
    "LC_ALL",
    "LC_CTYPE",
    "TZ",
    "TMPDIR",
    "VIRTUAL_ENV",
    "SSL_CERT_FILE",
    "SSL_CERT_DIR",
    "REQUESTS_CA_BUNDLE",
    "HTTP_PROXY",
    "HTTPS_PROXY",
    "NO_PROXY",
    "http_proxy",
    "https_proxy",
    "no_proxy",
];

/// Default commands of the OpenMetadata pipeline types, as run by the
/// `metadata` CLI of `openmetadata-ingestion`.
pub const DEFAULT_PIPELINES: &[(&str, &[&str])] = &[
    ("metadata", &["metadata", "ingest", "-c", "{config}"]),
    ("lineage", &["metadata", "ingest", "-c", "{config}"]),
    ("dbt", &["metadata", "ingest", "-c", "{config}"]),
    ("usage", &["metadata", "usage", "-c", "{config}"]),
    ("profiler", &["metadata", "profile", "-c", "{config}"]),
    ("TestSuite", &["metadata", "test", "-c", "{config}"]),
    (
        "autoClassification",
        &["metadata", "classify", "-c", "{config}"],
    ),
    ("application", &["metadata", "app", "-c", "{config}"]),
];

/// Placeholders a command template may contain.
pub const PLACEHOLDERS: &[&str] = &["{config}", "{run_dir}"];

/// The whole runner configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Path of the file this was loaded from.
    pub source: PathBuf,
    pub agent_id: String,
    pub control_plane: ControlPlaneConfig,
    pub runs: RunsConfig,
    /// Command template per pipeline type.
    pub pipelines: BTreeMap<String, CommandTemplate>,
    pub exec: ExecConfig,
    pub secrets: SecretsConfig,
    pub state_dir: PathBuf,
    pub work_dir: PathBuf,
    pub log: LogConfig,
    /// Lua hooks; `None` when runner.yaml has no `hooks` section.
    pub hooks: Option<HooksConfig>,
    /// OpenMetadata server set in every workflow config; `None` leaves configs as sent.
    pub openmetadata: Option<OpenMetadataConfig>,
    /// Scheduled pre-checks (`prechecks`, `prechecks_timezone`).
    pub prechecks: PrechecksConfig,
}

/// The `hooks` section: where the Lua scripts are and their limits.
#[derive(Debug, Clone)]
pub struct HooksConfig {
    pub dir: PathBuf,
    pub limits: crate::hooks::HookLimits,
    /// Quiet time after a change in the hooks folder before a reload.
    pub debounce: Duration,
}

/// Connection settings of the control plane session.
#[derive(Debug, Clone)]
pub struct ControlPlaneConfig {
    /// `wss://` URL of the control plane's runner endpoint.
    pub url: String,
    pub token: TokenSource,
    /// Extra PEM file of CA certificates to trust besides the public roots.
    pub ca_file: Option<PathBuf>,
    pub heartbeat_interval: Duration,
    pub reconnect_initial_delay: Duration,
    pub reconnect_max_delay: Duration,
    pub connect_timeout: Duration,
    /// Bound of unacknowledged messages kept for the control plane, in bytes.
    pub outbox_max_bytes: usize,
    /// Keys that every `run.request` must be signed with; `None` accepts
    /// unsigned requests.
    pub signing: Option<std::sync::Arc<crate::signing::RequestVerifier>>,
}

/// Source of the bearer token, which is never written in runner.yaml.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    File(PathBuf),
    Env(String),
}

/// Errors from reading the bearer token.
#[derive(Debug, thiserror::Error)]
pub enum TokenError {
    #[error("cannot read token file {path}: {source}; check control_plane.token_file")]
    File {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("environment variable {0} is not set; set it or change control_plane.token_env")]
    EnvMissing(String),
    #[error("the token from {0} is empty")]
    Empty(String),
}

impl TokenSource {
    /// Reads the current token. Called at every connect, so a rotated token
    /// is picked up without a restart.
    pub fn read(&self) -> Result<String, TokenError> {
        let (token, origin) = match self {
            TokenSource::File(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| TokenError::File {
                    path: path.clone(),
                    source,
                })?;
                (text, path.display().to_string())
            }
            TokenSource::Env(name) => {
                let text = std::env::var(name).map_err(|_| TokenError::EnvMissing(name.clone()))?;
                (text, format!("${name}"))
            }
        };
        let token = token.trim().to_string();
        if token.is_empty() {
            return Err(TokenError::Empty(origin));
        }
        Ok(token)
    }
}

/// Limits and defaults of runs.
#[derive(Debug, Clone)]
pub struct RunsConfig {
    /// Maximum number of runs at once.
    pub capacity: usize,
    pub default_timeout: Duration,
    /// Time between SIGTERM and SIGKILL when a run is stopped.
    pub cancel_grace: Duration,
    /// Largest workflow config accepted in a run request, in bytes.
    pub max_config_bytes: usize,
    /// Maximum log line length sent; longer lines are cut and marked.
    pub max_log_line_bytes: usize,
    /// Time active runs get to finish after the first shutdown signal.
    pub drain_timeout: Duration,
    /// Time the outbox gets to be acknowledged before the runner exits.
    pub flush_timeout: Duration,
}

/// A command line with placeholders, never taken from a run request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandTemplate {
    pub program: String,
    pub args: Vec<String>,
}

impl CommandTemplate {
    /// Substitutes the placeholders.
    pub fn render(&self, config: &Path, run_dir: &Path) -> (String, Vec<String>) {
        let config = config.to_string_lossy();
        let run_dir = run_dir.to_string_lossy();
        let substitute = |text: &str| {
            let mut out = String::with_capacity(text.len());
            for piece in template_pieces(text) {
                match piece {
                    Piece::Text(text) => out.push_str(text),
                    Piece::Placeholder("{config}") => out.push_str(&config),
                    Piece::Placeholder("{run_dir}") => out.push_str(&run_dir),
                    // `load` rejects unknown placeholders, so none reach here.
                    Piece::Placeholder(other) => out.push_str(other),
                }
            }
            out
        };
        (
            substitute(&self.program),
            self.args.iter().map(|arg| substitute(arg)).collect(),
        )
    }
}

/// The environment of workflow processes.
#[derive(Debug, Clone)]
pub struct ExecConfig {
    /// Names of the runner's environment variables passed through.
    pub env_allow: Vec<String>,
    /// Fixed variables set for every run.
    pub env: BTreeMap<String, String>,
}

/// Secret resolution settings.
#[derive(Debug, Clone)]
pub struct SecretsConfig {
    /// The stores by name. A single `secrets.provider` is one store named
    /// after its type.
    pub providers: BTreeMap<String, ProviderConfig>,
    /// Reference prefixes served by a store other than the default one.
    pub routes: Vec<crate::secrets::Route>,
    /// The store for references that match no route.
    pub default_provider: String,
    /// True when the stores came from `secrets.provider`, not `providers`.
    pub single_store: bool,
    /// Audit log of every resolution attempt.
    pub audit: crate::secrets::audit::AuditSettings,
    /// Only references under one of these prefixes are resolved.
    pub allowed_prefixes: Vec<String>,
    /// Values shorter than this many bytes are not redacted.
    pub min_redact_length: usize,
    /// Timeouts, retries, concurrency and caching of lookups.
    pub resolver: crate::secrets::ResolverSettings,
}

/// The secrets store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ProviderConfig {
    /// A YAML file mapping reference paths to values, for development.
    File { path: PathBuf },
    /// Environment variables named after the reference path.
    Env { prefix: String },
    /// AWS Secrets Manager.
    #[cfg(feature = "aws")]
    Aws(crate::secrets::aws::AwsSettings),
    /// Azure Key Vault.
    #[cfg(feature = "azure")]
    Azure(crate::secrets::azure::AzureSettings),
    /// GCP Secret Manager.
    #[cfg(feature = "gcp")]
    Gcp(crate::secrets::gcp::GcpSettings),
    /// Kubernetes Secrets.
    #[cfg(feature = "kubernetes")]
    Kubernetes(crate::secrets::kubernetes::KubernetesSettings),
}

impl SecretsConfig {
    /// Returns the YAML path of the settings of store `name`.
    pub fn provider_path(&self, name: &str) -> String {
        if self.single_store {
            "secrets.provider".to_string()
        } else {
            format!("secrets.providers.{name}")
        }
    }
}

impl ProviderConfig {
    /// Returns the `type` name of the provider.
    pub fn kind(&self) -> &'static str {
        match self {
            ProviderConfig::File { .. } => "file",
            ProviderConfig::Env { .. } => "env",
            #[cfg(feature = "aws")]
            ProviderConfig::Aws(_) => "aws",
            #[cfg(feature = "azure")]
            ProviderConfig::Azure(_) => "azure",
            #[cfg(feature = "gcp")]
            ProviderConfig::Gcp(_) => "gcp",
            #[cfg(feature = "kubernetes")]
            ProviderConfig::Kubernetes(_) => "kubernetes",
        }
    }
}

/// Provider types compiled into this build.
/// Size at which the audit log is rotated, by default.
pub const DEFAULT_AUDIT_MAX_BYTES: u64 = 10 * 1024 * 1024;

/// Rotated audit files kept, by default.
pub const DEFAULT_AUDIT_KEEP: u32 = 5;

pub const PROVIDER_TYPES: &[&str] = &[
    "file",
    "env",
    #[cfg(feature = "aws")]
    "aws",
    #[cfg(feature = "azure")]
    "azure",
    #[cfg(feature = "gcp")]
    "gcp",
    #[cfg(feature = "kubernetes")]
    "kubernetes",
];

/// Runner log output.
#[derive(Debug, Clone)]
pub struct LogConfig {
    /// A `tracing` filter such as `info` or `hybrid_runner=debug`.
    pub level: String,
    pub json: bool,
}

/// Errors from loading runner.yaml.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{path} is larger than {MAX_CONFIG_FILE_BYTES} bytes")]
    TooLarge { path: PathBuf },
    #[error("{path} is not valid YAML: {message}")]
    Syntax { path: PathBuf, message: String },
    #[error("{path} has {} problem(s):\n{}", issues.len(), format_issues(issues))]
    Invalid {
        path: PathBuf,
        issues: Vec<ConfigIssue>,
    },
}

fn format_issues(issues: &[ConfigIssue]) -> String {
    issues
        .iter()
        .map(|issue| format!("  - {issue}"))
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Loads and validates a runner.yaml file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let read_error = |source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        };
        let size = std::fs::metadata(path).map_err(read_error)?.len();
        if size > MAX_CONFIG_FILE_BYTES {
            return Err(ConfigError::TooLarge {
                path: path.to_path_buf(),
            });
        }
        let text = std::fs::read_to_string(path).map_err(read_error)?;
        // Absolute, because workflow processes run in their own directory and
        // get paths such as {config} from this base.
        let parent = path
            .parent()
            .filter(|dir| !dir.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        let base_dir = std::path::absolute(parent).map_err(read_error)?;
        Config::parse(&text, path, &base_dir, &|name| std::env::var(name).ok())
    }

    /// Parses runner.yaml text; `env` looks up `${VAR}` references.
    pub fn parse(
        text: &str,
        source: &Path,
        base_dir: &Path,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if text.trim().is_empty() {
            return Err(ConfigError::Syntax {
                path: source.to_path_buf(),
                message: "the file is empty; required keys: agent_id, control_plane, secrets"
                    .into(),
            });
        }
        let mut value: Value = serde_yaml::from_str(text).map_err(|error| ConfigError::Syntax {
            path: source.to_path_buf(),
            message: error.to_string(),
        })?;
        // A file of comments parses as null, which no check below reports.
        if value.is_null() {
            return Err(ConfigError::Syntax {
                path: source.to_path_buf(),
                message: "the file contains no settings, only comments or null; required keys: agent_id, control_plane, secrets".into(),
            });
        }
        let mut issues = Issues::default();
        expand::expand_env(&mut value, "", env, &mut issues);

        let config = read_config(&value, source, base_dir, &mut issues);
        match config {
            Some(config) if issues.0.is_empty() => Ok(config),
            _ => Err(ConfigError::Invalid {
                path: source.to_path_buf(),
                issues: issues.0,
            }),
        }
    }
}

fn read_config(
    value: &Value,
    source: &Path,
    base_dir: &Path,
    issues: &mut Issues,
) -> Option<Config> {
    let mut root = Section::new(Some(value), "", base_dir, issues);
    if !root.is_present() {
        return None;
    }
    let agent_id = root.required_string("agent_id", issues);
    if let Some(id) = &agent_id {
        check_agent_id(id, issues);
    }
    let control_plane = read_control_plane(root.section("control_plane", issues), issues);
    let runs = read_runs(root.section("runs", issues), issues);
    let pipelines = read_pipelines(root.section("pipelines", issues), issues);
    let exec = read_exec(root.section("exec", issues), issues);
    let state_dir = root
        .path("state_dir", issues)
        .unwrap_or_else(|| root.resolve("state"));
    let secrets = read_secrets(root.section("secrets", issues), &state_dir, issues);
    let work_dir = root
        .path("work_dir", issues)
        .unwrap_or_else(|| state_dir.join("runs"));
    let log = read_log(root.section("log", issues), issues);
    let mut hooks = read_hooks(root.section("hooks", issues), issues);
    let prechecks = prechecks::read_prechecks(&mut root, issues);
    if let Some(hooks) = hooks.as_mut() {
        hooks.limits.work_dir = Some(work_dir.clone());
        hooks.limits.declared_checks = prechecks.declared_checks();
    } else if !prechecks.checks.is_empty() {
        issues.push(
            "prechecks",
            "pre-checks call hook functions; add a hooks section with the folder of the scripts",
        );
    }
    let openmetadata = openmetadata::read(root.section("openmetadata", issues), issues);
    root.finish(issues);

    Some(Config {
        source: source.to_path_buf(),
        agent_id: agent_id?,
        control_plane: control_plane?,
        runs: runs?,
        pipelines,
        exec,
        secrets: secrets?,
        state_dir,
        work_dir,
        log,
        hooks,
        openmetadata,
        prechecks,
    })
}

fn read_hooks(mut section: Section, issues: &mut Issues) -> Option<HooksConfig> {
    if !section.is_present() {
        return None;
    }
    let dir = section.path("dir", issues);
    if dir.is_none() {
        issues.push(
            &section.path_of("dir"),
            "missing folder of the hook scripts",
        );
    }
    let time_limit = section
        .duration("time_limit", issues)
        .unwrap_or(crate::hooks::HookLimits::DEFAULT_TIME_LIMIT);
    let memory_limit_bytes = section
        .integer("memory_limit_bytes", 1 << 20, 4 << 30, issues)
        .map_or(
            crate::hooks::HookLimits::DEFAULT_MEMORY_LIMIT_BYTES,
            |bytes| bytes as usize,
        );
    let env_allowlist = section.string_list("env_allow", issues).unwrap_or_default();
    let debounce = section
        .duration("reload_debounce", issues)
        .unwrap_or(Duration::from_millis(100));
    section.finish(issues);
    Some(HooksConfig {
        dir: dir?,
        limits: crate::hooks::HookLimits {
            time_limit,
            memory_limit_bytes,
            env_allowlist,
            events: None,
            secrets: None,
            redactor: None,
            declared_checks: Vec::new(),
            work_dir: None,
        },
        debounce,
    })
}

fn check_agent_id(id: &str, issues: &mut Issues) {
    let valid = !id.is_empty()
        && id.len() <= 128
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if !valid {
        issues.push(
            "agent_id",
            format!("invalid agent id {id:?}; use 1 to 128 letters, digits, '-', '_' or '.'"),
        );
    }
}

fn read_control_plane(mut section: Section, issues: &mut Issues) -> Option<ControlPlaneConfig> {
    if !section.is_present() {
        issues.push(
            "control_plane",
            "missing required section (url and token_file or token_env)",
        );
        return None;
    }
    let url = section.required_string("url", issues);
    if let Some(url) = &url {
        check_url(url, &section.path_of("url"), issues);
    }

    let token_file = section.path("token_file", issues);
    let token_env = section.string("token_env", issues);
    let token = match (token_file, token_env) {
        (Some(path), None) => Some(TokenSource::File(path)),
        (None, Some(name)) => Some(TokenSource::Env(name)),
        (Some(_), Some(_)) => {
            issues.push(
                &section.path_of("token_file"),
                "set either token_file or token_env, not both",
            );
            None
        }
        (None, None) => {
            issues.push(
                &section.path_of("token_file"),
                "missing token: set token_file (a file holding the bearer token) or token_env (a variable name)",
            );
            None
        }
    };

    let mut tls = section.section("tls", issues);
    let ca_file = tls.path("ca_file", issues);
    tls.finish(issues);
    let signing = read_signing(section.section("signing", issues), issues);

    let heartbeat_interval = section
        .duration("heartbeat_interval", issues)
        .unwrap_or(Duration::from_secs(10));
    let reconnect_initial_delay = section
        .duration("reconnect_initial_delay", issues)
        .unwrap_or(Duration::from_millis(500));
    let reconnect_max_delay = section
        .duration("reconnect_max_delay", issues)
        .unwrap_or(Duration::from_secs(30));
    let connect_timeout = section
        .duration("connect_timeout", issues)
        .unwrap_or(Duration::from_secs(15));
    let outbox_max_bytes = section
        .integer("outbox_max_bytes", 1 << 20, 4 << 30, issues)
        .map_or(crate::control::outbox::DEFAULT_MAX_BYTES, |bytes| {
            bytes as usize
        });
    if reconnect_max_delay < reconnect_initial_delay {
        issues.push(
            &section.path_of("reconnect_max_delay"),
            "must not be shorter than reconnect_initial_delay",
        );
    }
    section.finish(issues);

    Some(ControlPlaneConfig {
        url: url?,
        token: token?,
        ca_file,
        heartbeat_interval,
        reconnect_initial_delay,
        reconnect_max_delay,
        connect_timeout,
        outbox_max_bytes,
        signing,
    })
}

/// Reads `control_plane.signing` and loads its key, so a bad key file is
/// reported with the other config errors.
fn read_signing(
    mut section: Section,
    issues: &mut Issues,
) -> Option<std::sync::Arc<crate::signing::RequestVerifier>> {
    if !section.is_present() {
        return None;
    }
    let public_key_file = section.path("public_key_file", issues);
    let jwks_file = section.path("jwks_file", issues);
    let path_key = if jwks_file.is_some() {
        "jwks_file"
    } else {
        "public_key_file"
    };
    let path = section.path_of(path_key);
    section.finish(issues);
    let loaded = match (public_key_file, jwks_file) {
        (Some(file), None) => crate::signing::RequestVerifier::load_public_key(&file),
        (None, Some(file)) => crate::signing::RequestVerifier::load_jwks(&file),
        (Some(_), Some(_)) => {
            issues.push(&path, "set either public_key_file or jwks_file, not both");
            return None;
        }
        (None, None) => {
            issues.push(
                &path,
                "missing key: set public_key_file (an Ed25519 public key) or jwks_file (a JWKS)",
            );
            return None;
        }
    };
    match loaded {
        Ok(verifier) => Some(std::sync::Arc::new(verifier)),
        Err(error) => {
            issues.push(&path, error.to_string());
            None
        }
    }
}

/// Accepts `wss://` URLs, and `ws://` only for loopback hosts (development).
fn check_url(url: &str, path: &str, issues: &mut Issues) {
    let Ok(uri) = url.parse::<tokio_tungstenite::tungstenite::http::Uri>() else {
        issues.push(path, format!("invalid URL {url:?}"));
        return;
    };
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("wss") if !host.is_empty() => {}
        Some("ws") if is_loopback(host) => {}
        Some("ws") => issues.push(
            path,
            format!("plain ws:// is allowed only for loopback hosts, not {host:?}; use wss://"),
        ),
        _ => issues.push(
            path,
            format!("invalid URL {url:?}; expected wss://HOST[:PORT]/PATH"),
        ),
    }
}

/// Accepts `https://` URLs, and `http://` only for loopback hosts (development).
fn check_http_url(url: &str, path: &str, issues: &mut Issues) {
    let Ok(uri) = url.parse::<tokio_tungstenite::tungstenite::http::Uri>() else {
        issues.push(path, format!("invalid URL {url:?}"));
        return;
    };
    let host = uri.host().unwrap_or_default();
    match uri.scheme_str() {
        Some("https") if !host.is_empty() => {}
        Some("http") if is_loopback(host) => {}
        Some("http") => issues.push(
            path,
            format!("plain http:// is allowed only for loopback hosts, not {host:?}; use https://"),
        ),
        _ => issues.push(
            path,
            format!("invalid URL {url:?}; expected https://HOST[:PORT]/api"),
        ),
    }
}

fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host == "localhost"
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|address| address.is_loopback())
}

fn read_runs(mut section: Section, issues: &mut Issues) -> Option<RunsConfig> {
    let capacity = section.integer("capacity", 1, 10_000, issues).unwrap_or(4) as usize;
    let default_timeout = section
        .duration("default_timeout", issues)
        .unwrap_or(Duration::from_secs(4 * 3600));
    let cancel_grace = section
        .duration("cancel_grace", issues)
        .unwrap_or(Duration::from_secs(30));
    let max_config_bytes = section
        .integer("max_config_bytes", 1024, 256 << 20, issues)
        .unwrap_or(4 << 20) as usize;
    let max_log_line_bytes = section
        .integer("max_log_line_bytes", 256, 16 << 20, issues)
        .unwrap_or(64 << 10) as usize;
    let drain_timeout = section
        .duration("drain_timeout", issues)
        .unwrap_or(Duration::from_secs(60));
    let flush_timeout = section
        .duration("flush_timeout", issues)
        .unwrap_or(Duration::from_secs(5));
    section.finish(issues);
    Some(RunsConfig {
        capacity,
        default_timeout,
        cancel_grace,
        max_config_bytes,
        max_log_line_bytes,
        drain_timeout,
        flush_timeout,
    })
}

fn read_pipelines(mut section: Section, issues: &mut Issues) -> BTreeMap<String, CommandTemplate> {
    let mut pipelines: BTreeMap<String, CommandTemplate> = DEFAULT_PIPELINES
        .iter()
        .map(|(name, argv)| {
            let template = CommandTemplate {
                program: argv[0].to_string(),
                args: argv[1..].iter().map(|arg| arg.to_string()).collect(),
            };
            (name.to_string(), template)
        })
        .collect();

    for (name, value) in section.keys() {
        let path = section.path_of(&name);
        if name.is_empty() {
            issues.push(&path, "empty pipeline type name");
            continue;
        }
        match read_command(value, &path, issues) {
            Some(Some(template)) => {
                pipelines.insert(name, template);
            }
            Some(None) => {
                pipelines.remove(&name);
            }
            None => {}
        }
    }
    section.accept_all_keys();
    section.finish(issues);
    pipelines
}

/// Reads a command as a list of arguments or a string split on whitespace.
/// `false` disables a default pipeline type (returns `Some(None)`).
fn read_command(value: &Value, path: &str, issues: &mut Issues) -> Option<Option<CommandTemplate>> {
    let argv: Vec<String> = match value {
        Value::Bool(false) => return Some(None),
        Value::String(text) => text.split_whitespace().map(str::to_string).collect(),
        Value::Sequence(items) => {
            let mut argv = Vec::new();
            for (index, item) in items.iter().enumerate() {
                match item.as_str() {
                    Some(text) => argv.push(text.to_string()),
                    None => {
                        issues.push(&format!("{path}[{index}]"), "expected a string");
                        return None;
                    }
                }
            }
            argv
        }
        other => {
            issues.push(
                path,
                format!(
                    "expected a command (a list of arguments or a string), or false to disable; found {}",
                    reader::kind_of(other)
                ),
            );
            return None;
        }
    };
    let Some((program, args)) = argv.split_first() else {
        issues.push(path, "empty command");
        return None;
    };
    for argument in &argv {
        check_placeholders(argument, path, issues);
    }
    Some(Some(CommandTemplate {
        program: program.clone(),
        args: args.to_vec(),
    }))
}

fn check_placeholders(argument: &str, path: &str, issues: &mut Issues) {
    for piece in template_pieces(argument) {
        if let Piece::Placeholder(placeholder) = piece
            && !PLACEHOLDERS.contains(&placeholder)
        {
            issues.push(
                path,
                format!(
                    "unknown placeholder {placeholder}; available: {}; write {{{{ and }}}} for literal braces",
                    PLACEHOLDERS.join(", ")
                ),
            );
        }
    }
}

/// A part of a command argument.
enum Piece<'a> {
    Text(&'a str),
    /// `{name}`, braces included.
    Placeholder(&'a str),
}

/// Splits an argument into text and `{name}` placeholders; `{{` and `}}`
/// are literal braces.
fn template_pieces(argument: &str) -> Vec<Piece<'_>> {
    let mut pieces = Vec::new();
    let mut rest = argument;
    while let Some(at) = rest.find(['{', '}']) {
        pieces.push(Piece::Text(&rest[..at]));
        rest = &rest[at..];
        if rest.starts_with("{{") || rest.starts_with("}}") {
            pieces.push(Piece::Text(&rest[..1]));
            rest = &rest[2..];
        } else if rest.starts_with('{')
            && let Some(end) = rest.find('}')
        {
            pieces.push(Piece::Placeholder(&rest[..=end]));
            rest = &rest[end + 1..];
        } else {
            pieces.push(Piece::Text(&rest[..1]));
            rest = &rest[1..];
        }
    }
    pieces.push(Piece::Text(rest));
    pieces
}

fn read_exec(mut section: Section, issues: &mut Issues) -> ExecConfig {
    let env_allow = section.string_list("env_allow", issues).unwrap_or_else(|| {
        DEFAULT_ENV_ALLOW
            .iter()
            .map(|name| name.to_string())
            .collect()
    });
    let env: BTreeMap<String, String> = section
        .string_map("env", issues)
        .unwrap_or_default()
        .into_iter()
        .collect();
    let env_path = section.path_of("env");
    for name in env.keys() {
        if name.starts_with("HYBRID_RUNNER_") {
            issues.push(
                &reader::join(&env_path, name),
                "names starting with HYBRID_RUNNER_ are set by the runner",
            );
        }
    }
    section.finish(issues);
    ExecConfig { env_allow, env }
}

fn read_secrets(
    mut section: Section,
    state_dir: &Path,
    issues: &mut Issues,
) -> Option<SecretsConfig> {
    let prefixes_path = section.path_of("allowed_prefixes");
    let allowed_prefixes = section
        .string_list("allowed_prefixes", issues)
        .unwrap_or_else(|| vec![DEFAULT_ALLOWED_PREFIX.to_string()]);
    for (index, prefix) in allowed_prefixes.iter().enumerate() {
        if !is_prefix(prefix) {
            issues.push(
                &format!("{prefixes_path}[{index}]"),
                format!("invalid prefix {prefix:?}; write a path that starts and ends with '/', like {DEFAULT_ALLOWED_PREFIX:?}"),
            );
        } else if !placeholders_are_segments(prefix) {
            issues.push(
                &format!("{prefixes_path}[{index}]"),
                format!(
                    "invalid prefix {prefix:?}: braces may only form a whole path segment {}, as in \"/collate/hybrid-ingestion/{{service}}/\"",
                    crate::secrets::policy::PLACEHOLDERS.join(" or ")
                ),
            );
        }
    }
    let min_redact_length = section
        .integer("min_redact_length", 1, 1024, issues)
        .unwrap_or(crate::redact::DEFAULT_MIN_SECRET_LEN as u64)
        as usize;
    let defaults = crate::secrets::ResolverSettings::default();
    let resolver = crate::secrets::ResolverSettings {
        timeout: section
            .duration("timeout", issues)
            .unwrap_or(defaults.timeout),
        max_attempts: section
            .integer("max_attempts", 1, 20, issues)
            .map_or(defaults.max_attempts, |attempts| attempts as u32),
        cache_ttl: section
            .duration("cache_ttl", issues)
            .filter(|ttl| !ttl.is_zero()),
        concurrency: section
            .integer("concurrency", 1, 256, issues)
            .map_or(defaults.concurrency, |count| count as usize),
        ..defaults
    };
    let single_store = section.raw("provider").is_some();
    let stores = read_stores(&mut section, issues);
    let audit = read_audit(section.section("audit", issues), state_dir, issues);
    section.finish(issues);
    let (providers, routes, default_provider) = stores?;
    Some(SecretsConfig {
        providers,
        routes,
        default_provider,
        single_store,
        audit,
        allowed_prefixes,
        min_redact_length,
        resolver,
    })
}

/// Reads `provider` (one store) or `providers`, `routes` and
/// `default_provider` (several named stores).
fn read_stores(
    section: &mut Section,
    issues: &mut Issues,
) -> Option<(
    BTreeMap<String, ProviderConfig>,
    Vec<crate::secrets::Route>,
    String,
)> {
    let single = section.section("provider", issues);
    let mut named = section.section("providers", issues);
    let route_sections = section.list_sections("routes", issues);
    let default = section.string("default_provider", issues);
    let default_path = section.path_of("default_provider");

    if single.is_present() {
        if named.is_present() || !route_sections.is_empty() || default.is_some() {
            issues.push(
                &section.path_of("provider"),
                "set either provider (one store) or providers with routes and default_provider (several stores), not both",
            );
        }
        let provider = read_provider(single, issues)?;
        let name = provider.kind().to_string();
        return Some((BTreeMap::from([(name.clone(), provider)]), Vec::new(), name));
    }
    if !named.is_present() {
        issues.push(
            &section.path_of("provider"),
            format!(
                "missing required section; set type to one of: {}, or list several stores under secrets.providers",
                PROVIDER_TYPES.join(", ")
            ),
        );
        return None;
    }

    let mut providers = BTreeMap::new();
    for (name, _) in named.keys() {
        let store = named.section(&name, issues);
        if !is_store_name(&name) {
            issues.push(
                &named.path_of(&name),
                format!("invalid provider name {name:?}; use letters, digits, '_' and '-'"),
            );
        }
        if let Some(provider) = read_provider(store, issues) {
            providers.insert(name, provider);
        }
    }
    let names = providers.keys().cloned().collect::<Vec<_>>().join(", ");
    named.finish(issues);
    if providers.is_empty() {
        return None;
    }

    let mut routes = Vec::new();
    for mut route in route_sections {
        let prefix = route.required_string("prefix", issues);
        let provider = route.required_string("provider", issues);
        if let Some(prefix) = &prefix
            && !is_prefix(prefix)
        {
            issues.push(
                &route.path_of("prefix"),
                format!("invalid prefix {prefix:?}; write a path that starts and ends with '/', like {DEFAULT_ALLOWED_PREFIX:?}"),
            );
        }
        if let Some(provider) = &provider
            && !providers.contains_key(provider)
        {
            issues.push(
                &route.path_of("provider"),
                format!("unknown provider {provider:?}; configured providers: {names}"),
            );
        }
        route.finish(issues);
        if let (Some(prefix), Some(provider)) = (prefix, provider) {
            routes.push(crate::secrets::Route { prefix, provider });
        }
    }

    let default = match default {
        Some(default) if providers.contains_key(&default) => default,
        Some(default) => {
            issues.push(
                &default_path,
                format!("unknown provider {default:?}; configured providers: {names}"),
            );
            return None;
        }
        None if providers.len() == 1 => names.clone(),
        None => {
            issues.push(
                &default_path,
                format!("missing: with several providers, name the one for references that match no route ({names})"),
            );
            return None;
        }
    };
    Some((providers, routes, default))
}

/// Reads `secrets.audit`. The log is always on, in the state folder unless
/// `path` names another file.
fn read_audit(
    mut section: Section,
    state_dir: &Path,
    issues: &mut Issues,
) -> crate::secrets::audit::AuditSettings {
    use crate::secrets::audit::{AuditSettings, Fsync};
    let path = section
        .path("path", issues)
        .unwrap_or_else(|| state_dir.join("audit.jsonl"));
    let max_bytes = section
        .integer("max_bytes", 4096, u64::MAX, issues)
        .unwrap_or(DEFAULT_AUDIT_MAX_BYTES);
    let keep = section
        .integer("keep", 0, 1000, issues)
        .map_or(DEFAULT_AUDIT_KEEP, |keep| keep as u32);
    let fsync = match section.string("fsync", issues).as_deref() {
        None | Some("interval") => Fsync::Interval,
        Some("always") => Fsync::Always,
        Some("never") => Fsync::Never,
        Some(other) => {
            issues.push(
                &section.path_of("fsync"),
                format!("unknown fsync policy {other:?}; use interval, always or never"),
            );
            Fsync::Interval
        }
    };
    section.finish(issues);
    AuditSettings {
        path,
        max_bytes,
        keep,
        fsync,
    }
}

/// Reports whether `name` may name a store: letters, digits, `_` and `-`.
fn is_store_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-'))
}

/// Reports whether every `{` or `}` in `prefix` belongs to a placeholder that
/// is a whole path segment, such as `/{service}/`.
fn placeholders_are_segments(prefix: &str) -> bool {
    prefix.split('/').all(|segment| {
        !segment.contains(['{', '}']) || crate::secrets::policy::PLACEHOLDERS.contains(&segment)
    })
}

/// Reports whether `prefix` is an absolute path prefix ending in `/`.
fn is_prefix(prefix: &str) -> bool {
    prefix.starts_with('/') && prefix.ends_with('/') && !prefix.contains("//")
}

fn read_provider(mut section: Section, issues: &mut Issues) -> Option<ProviderConfig> {
    let kind = section.required_string("type", issues);
    let provider = match kind.as_deref() {
        Some("file") => section
            .path("path", issues)
            .map(|path| ProviderConfig::File { path })
            .or_else(|| {
                issues.push(&section.path_of("path"), "missing path of the secrets file");
                None
            }),
        Some("env") => Some(ProviderConfig::Env {
            prefix: section
                .string("prefix", issues)
                .unwrap_or_else(|| "HYBRID_RUNNER_SECRET_".to_string()),
        }),
        #[cfg(feature = "aws")]
        Some("aws") => Some(ProviderConfig::Aws(crate::secrets::aws::AwsSettings::read(
            &mut section,
            issues,
        ))),
        #[cfg(feature = "gcp")]
        Some("gcp") => Some(ProviderConfig::Gcp(crate::secrets::gcp::GcpSettings::read(
            &mut section,
            issues,
        ))),
        #[cfg(feature = "kubernetes")]
        Some("kubernetes") => Some(ProviderConfig::Kubernetes(
            crate::secrets::kubernetes::KubernetesSettings::read(&mut section, issues),
        )),
        #[cfg(feature = "azure")]
        Some("azure") => {
            crate::secrets::azure::read(&mut section, issues).map(ProviderConfig::Azure)
        }
        Some(other) => {
            issues.push(
                &section.path_of("type"),
                format!(
                    "unknown provider {other:?}; this build supports: {}",
                    PROVIDER_TYPES.join(", ")
                ),
            );
            None
        }
        None => None,
    };
    section.finish(issues);
    provider
}

fn read_log(mut section: Section, issues: &mut Issues) -> LogConfig {
    let level = section
        .string("level", issues)
        .unwrap_or_else(|| "info".into());
    let format = section.string("format", issues);
    let json = match format.as_deref() {
        None | Some("text") => false,
        Some("json") => true,
        Some(other) => {
            issues.push(
                &section.path_of("format"),
                format!("unknown format {other:?}; use text or json"),
            );
            false
        }
    };
    section.finish(issues);
    LogConfig { level, json }
}

#[cfg(test)]
mod tests;

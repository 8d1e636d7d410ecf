//! The subcommands behind `main`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use crate::config::{Config, ProviderConfig};
use crate::redact::Redactor;

/// Exit status for invalid configuration or arguments (`EX_USAGE`).
pub const EXIT_USAGE: u8 = 64;

/// Arguments of `hybrid-runner control-plane`.
#[derive(Debug, clap::Args)]
pub struct ControlPlaneArgs {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:8585", value_name = "ADDR")]
    pub listen: SocketAddr,
    /// File holding a bearer token that runners must present (repeatable).
    #[arg(long = "token-file", value_name = "FILE")]
    pub token_files: Vec<PathBuf>,
    /// Environment variable holding a runner bearer token.
    #[arg(long, value_name = "NAME")]
    pub token_env: Option<String>,
    /// File holding a token required on the /v1/ HTTP API; the API is open without it.
    #[arg(long, value_name = "FILE")]
    pub api_token_file: Option<PathBuf>,
    /// PEM certificate for HTTPS and WSS; plain HTTP without it.
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// Heartbeat interval announced to runners, such as 10s.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    pub heartbeat_interval: Duration,
    /// Ed25519 private key (PKCS#8 PEM) that signs every run request.
    #[arg(long, value_name = "FILE")]
    pub signing_key: Option<PathBuf>,
    /// Key id written as `kid` in the signature header, for runners that
    /// verify with a JWKS.
    #[arg(long, value_name = "KID", requires = "signing_key")]
    pub signing_kid: Option<String>,
}

/// Arguments of `hybrid-runner secrets get`.
#[derive(Debug, clap::Args)]
pub struct SecretsGetArgs {
    /// The reference, such as 'secret:/collate/hybrid-ingestion/mysql/password'.
    pub reference: String,
    /// Path of runner.yaml.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Print the value itself; rejected when standard output is not a terminal.
    #[arg(long)]
    pub reveal: bool,
    /// With --reveal, print the value even when standard output is not a terminal.
    #[arg(long, requires = "reveal")]
    pub force: bool,
    /// Check the reference as a run of this service would, filling in
    /// {service} in secrets.allowed_prefixes.
    #[arg(long, value_name = "NAME")]
    pub service: Option<String>,
    /// Check the reference as a run of this pipeline type would, filling in
    /// {pipelineType} in secrets.allowed_prefixes.
    #[arg(long, value_name = "TYPE")]
    pub pipeline_type: Option<String>,
}

/// Arguments of `hybrid-runner audit tail`.
#[derive(Debug, clap::Args)]
pub struct AuditTailArgs {
    /// Path of runner.yaml.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
    /// Number of entries to print.
    #[arg(short = 'n', long, default_value_t = 20)]
    pub lines: usize,
    /// Print the JSON lines as stored.
    #[arg(long)]
    pub json: bool,
}

/// Arguments of `hybrid-runner precheck run`.
#[derive(Debug, clap::Args)]
pub struct PrecheckRunArgs {
    /// Name of the pre-check, as shown by `precheck list`.
    pub name: String,
    /// Path of runner.yaml.
    #[arg(short, long, value_name = "FILE")]
    pub config: PathBuf,
}

/// Arguments of `hybrid-runner hooks test`.
#[derive(Debug, clap::Args)]
pub struct HooksTestArgs {
    /// The hook: pre_run, post_run, map_secret or on_message.
    pub hook: String,
    /// JSON file with the hook's input.
    #[arg(long, value_name = "FILE")]
    pub input: PathBuf,
    /// The hooks folder.
    #[arg(long, default_value = "hooks", value_name = "DIR")]
    pub dir: PathBuf,
}

/// Arguments of `hybrid-runner quickstart`.
#[derive(Debug, clap::Args)]
pub struct QuickstartArgs {
    /// Folder with the quickstart files (runs.yaml, secrets.yaml, workflows).
    #[arg(long, default_value = "examples", value_name = "DIR")]
    pub examples: PathBuf,
}

/// `hybrid-runner run`: the agent.
pub fn run(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let redactor = Arc::new(Redactor::new(config.secrets.min_redact_length));
    crate::logging::init(&config.log.level, config.log.json, Arc::clone(&redactor));
    crate::logging::install_panic_hook(Arc::clone(&redactor));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(crate::agent::run(config, redactor)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!(%error, "hybrid-runner failed");
            ExitCode::FAILURE
        }
    }
}

/// `hybrid-runner check`: validates runner.yaml and what it points to.
pub fn check(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let (errors, warnings) = check_environment(&config);
    for warning in &warnings {
        eprintln!("warning: {warning}");
    }
    if !errors.is_empty() {
        for error in &errors {
            eprintln!("error: {error}");
        }
        return ExitCode::from(EXIT_USAGE);
    }
    println!(
        "{} is valid: agent {}, pipeline types {}, secrets from {}, allowed prefixes {}",
        path.display(),
        config.agent_id,
        config
            .pipelines
            .keys()
            .cloned()
            .collect::<Vec<_>>()
            .join(", "),
        config
            .secrets
            .providers
            .iter()
            .map(|(name, provider)| if name == provider.kind() {
                name.clone()
            } else {
                format!("{name} ({})", provider.kind())
            })
            .collect::<Vec<_>>()
            .join(", "),
        config.secrets.allowed_prefixes.join(", ")
    );
    ExitCode::SUCCESS
}

/// Checks the files and programs runner.yaml names, without connecting.
fn check_environment(config: &Config) -> (Vec<String>, Vec<String>) {
    let mut errors = Vec::new();
    let mut warnings = Vec::new();
    if let Err(error) = config.control_plane.token.read() {
        errors.push(error.to_string());
    }
    if let Some(settings) = &config.openmetadata
        && settings.jwt_token.is_some()
        && let Err(error) = crate::openmetadata::read_token(settings, &config.control_plane.token)
    {
        errors.push(error.to_string());
    }
    if let Some(ca_file) = &config.control_plane.ca_file
        && let Err(error) = crate::tls::read_certificates(ca_file)
    {
        errors.push(error.to_string());
    }
    // Loading runs each script's top-level code, so syntax errors, runtime
    // errors and pre-checks naming a missing function show here as in `run`.
    if config.hooks.is_some()
        && let Err(error) = crate::agent::load_hooks(config, crate::agent::HookServices::default())
    {
        errors.push(error.to_string());
    }
    for (name, provider) in &config.secrets.providers {
        if let ProviderConfig::File { path } = provider
            && !path.is_file()
        {
            errors.push(format!(
                "secrets file {} does not exist; check {}.path",
                path.display(),
                config.secrets.provider_path(name)
            ));
        }
    }
    // One warning per missing program: the default pipeline types all run
    // `metadata`.
    let mut missing: std::collections::BTreeMap<&str, Vec<&str>> =
        std::collections::BTreeMap::new();
    for (pipeline, command) in &config.pipelines {
        if !program_exists(&command.program) {
            missing.entry(&command.program).or_default().push(pipeline);
        }
    }
    for (program, pipelines) in missing {
        let problem = if program.contains('/') {
            format!("program {program:?} does not exist")
        } else {
            format!("program {program:?} is not on PATH")
        };
        let keys: Vec<String> = pipelines
            .iter()
            .map(|pipeline| format!("pipelines.{pipeline}"))
            .collect();
        warnings.push(format!(
            "{}: {problem}; runs of these types fail until it is installed (set a type to false if this runner does not run it)",
            keys.join(", ")
        ));
    }
    (errors, warnings)
}

fn program_exists(program: &str) -> bool {
    if program.contains('/') {
        return Path::new(program).is_file();
    }
    std::env::var_os("PATH")
        .map(|paths| std::env::split_paths(&paths).any(|dir| dir.join(program).is_file()))
        .unwrap_or(false)
}

/// Loads runner.yaml; every kind of load failure is a usage error.
fn load(path: &Path) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|error| {
        eprintln!("error: {error}");
        ExitCode::from(EXIT_USAGE)
    })
}

/// `hybrid-runner secrets get`: resolves one reference as a run would.
/// Prints the last entries of the secret access audit log. Exits 1 when the
/// log cannot be read, and 64 for an invalid runner.yaml.
pub fn audit_tail(args: AuditTailArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let settings = &config.secrets.audit;
    let entries = match crate::secrets::audit::tail(&settings.path, args.lines, settings.keep) {
        Ok(entries) => entries,
        Err(error) => {
            eprintln!(
                "error: cannot read the audit log {}: {error}",
                settings.path.display()
            );
            return ExitCode::FAILURE;
        }
    };
    if entries.is_empty() {
        eprintln!("the audit log {} has no entries", settings.path.display());
    }
    let mut code = ExitCode::SUCCESS;
    for entry in entries {
        match entry {
            Ok(entry) if args.json => match serde_json::to_string(&entry) {
                Ok(line) => println!("{line}"),
                Err(error) => eprintln!("error: {error}"),
            },
            Ok(entry) => println!("{}", entry.readable()),
            Err(error) => {
                eprintln!("error: {error}");
                code = ExitCode::FAILURE;
            }
        }
    }
    code
}

pub fn secrets_get(args: SecretsGetArgs) -> ExitCode {
    use std::io::IsTerminal;

    let config = match load(&args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    if args.reveal && !args.force && !std::io::stdout().is_terminal() {
        eprintln!(
            "error: --reveal prints the secret value, and standard output is not a terminal; add --force to print it anyway"
        );
        return ExitCode::from(EXIT_USAGE);
    }
    let reference = match crate::secrets::SecretRef::parse(&args.reference) {
        Ok(reference) if crate::secrets::SecretRef::is_reference(&args.reference) => reference,
        Ok(_) => {
            eprintln!(
                "error: {:?} is not a reference; write it as secret:/path",
                args.reference
            );
            return ExitCode::from(EXIT_USAGE);
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let redactor = Arc::new(Redactor::new(config.secrets.min_redact_length));
    crate::logging::init("warn", false, Arc::clone(&redactor));
    crate::logging::install_panic_hook(Arc::clone(&redactor));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let resolver = match crate::secrets::resolver_from_config(&config.secrets, redactor).await {
            Ok(resolver) => resolver,
            Err(error) => {
                eprintln!("error: cannot set up the secrets provider: {error}");
                return ExitCode::FAILURE;
            }
        };
        // A map_secret hook maps names for runs, so it maps them here too.
        match crate::agent::load_hooks(&config, crate::agent::HookServices::default()) {
            Ok(Some(hooks)) => resolver.set_mapper(hooks),
            Ok(None) => {}
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        }
        let scope = crate::secrets::Scope {
            service: args.service.clone(),
            pipeline_type: args.pipeline_type.clone(),
            ..crate::secrets::Scope::default()
        };
        print_lookup(&resolver, &reference, &scope, args.reveal).await
    })
}

async fn print_lookup(
    resolver: &crate::secrets::Resolver,
    reference: &crate::secrets::SecretRef,
    scope: &crate::secrets::Scope,
    reveal: bool,
) -> ExitCode {
    println!("reference: {reference}");
    // A denied reference is never looked up, so nothing about a store is shown.
    if let Err(error) = resolver.authorize(reference, scope).await {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    match resolver.mapped(reference).await {
        Ok(mapped) => {
            println!("provider:  {}", mapped.provider.label());
            println!("name:      {}", mapped.name);
            println!(
                "version:   {}",
                mapped.version.as_deref().unwrap_or("latest")
            );
        }
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::FAILURE;
        }
    }
    match resolver
        .resolve_in(reference, scope)
        .await
        .map(|(value, _)| value)
    {
        Ok(value) if reveal => {
            println!("value:     {}", value.expose());
            ExitCode::SUCCESS
        }
        Ok(value) => {
            println!(
                "value:     {} ({} bytes; --reveal prints it)",
                crate::redact::MASK,
                value.expose().len()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `hybrid-runner hooks check`: loads a hooks folder and reports the result.
pub fn hooks_check(dir: &Path) -> ExitCode {
    crate::logging::init("warn", false, Arc::new(Redactor::default()));
    let set = match crate::hooks::HookSet::load(dir, crate::hooks::HookLimits::default()) {
        Ok(set) => set,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let engine = set.current();
    let files: Vec<String> = engine
        .files()
        .iter()
        .map(|file| file.display().to_string())
        .collect();
    let hooks: Vec<&str> = engine
        .defined_hooks()
        .iter()
        .map(|hook| hook.function_name())
        .collect();
    println!(
        "{} loaded: {} file(s): {}",
        dir.display(),
        files.len(),
        files.join(", ")
    );
    println!("hooks defined: {}", list_or_none(&hooks));
    let checks: Vec<String> = engine
        .scheduled_checks()
        .iter()
        .map(|check| {
            let gate = if check.gate { ", gate" } else { "" };
            format!("{} ({}{gate})", check.name, check.schedule)
        })
        .collect();
    println!("scheduled checks: {}", list_or_none(&checks));
    println!("content hash: {}", engine.content_hash());
    ExitCode::SUCCESS
}

/// Joins `items` with commas, or returns "none" for an empty list.
fn list_or_none<T: AsRef<str>>(items: &[T]) -> String {
    if items.is_empty() {
        return "none".to_string();
    }
    let items: Vec<&str> = items.iter().map(AsRef::as_ref).collect();
    items.join(", ")
}

/// `hybrid-runner hooks test`: calls one hook and prints its result as JSON.
pub fn hooks_test(args: HooksTestArgs) -> ExitCode {
    use crate::hooks::{HookOutcome, HookPoint};

    crate::logging::init("info", false, Arc::new(Redactor::default()));
    let Some(hook) = HookPoint::ALL
        .into_iter()
        .find(|hook| hook.function_name() == args.hook)
    else {
        eprintln!(
            "error: unknown hook {:?}; use pre_run, post_run, map_secret or on_message",
            args.hook
        );
        return ExitCode::from(EXIT_USAGE);
    };
    let input = match read_json_file(&args.input) {
        Ok(input) => input,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };

    // Events a hook sends are printed instead of going to a control plane.
    let events = crate::hooks::EventSink(Arc::new(|kind, payload| {
        eprintln!("event {kind}: {payload}");
    }));
    let limits = crate::hooks::HookLimits {
        events: Some(events),
        ..crate::hooks::HookLimits::default()
    };
    let set = match crate::hooks::HookSet::load(&args.dir, limits) {
        Ok(set) => set,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };

    match runtime.block_on(set.fire(hook, input)) {
        Ok(HookOutcome::NotDefined) => {
            eprintln!(
                "error: {} defines no {} function",
                args.dir.display(),
                args.hook
            );
            ExitCode::FAILURE
        }
        Ok(HookOutcome::Returned(value)) => {
            println!(
                "{}",
                serde_json::to_string_pretty(&value).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("error: {error}");
            ExitCode::FAILURE
        }
    }
}

fn read_json_file(path: &Path) -> Result<serde_json::Value, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read {}: {error}", path.display()))?;
    serde_json::from_str(&text)
        .map_err(|error| format!("{} is not valid JSON: {error}", path.display()))
}

/// `hybrid-runner control-plane`: serves until Ctrl-C or SIGTERM.
pub fn control_plane(args: ControlPlaneArgs) -> ExitCode {
    let redactor = Arc::new(Redactor::default());
    crate::logging::init("info", false, redactor);
    let options = match control_plane_options(&args) {
        Ok(options) => options,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    let tls = options.tls.is_some();
    runtime.block_on(async move {
        let handle = match crate::control_plane::start(options).await {
            Ok(handle) => handle,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::FAILURE;
            }
        };
        // Tests read this first line to learn the port; keep it first.
        println!("control plane listening on {}", handle.local_addr());
        let scheme = if tls { "wss" } else { "ws" };
        println!(
            "runner endpoint: {scheme}://{}{}",
            handle.local_addr(),
            crate::protocol::CONNECT_PATH
        );
        wait_for_signal().await;
        handle.shutdown().await;
        ExitCode::SUCCESS
    })
}

fn control_plane_options(
    args: &ControlPlaneArgs,
) -> Result<crate::control_plane::ControlPlaneOptions, String> {
    let mut runner_tokens = Vec::new();
    for path in &args.token_files {
        runner_tokens.push(read_token_file(path)?);
    }
    if let Some(name) = &args.token_env {
        let token =
            std::env::var(name).map_err(|_| format!("environment variable {name} is not set"))?;
        runner_tokens.push(token.trim().to_string());
    }
    if runner_tokens.is_empty() {
        return Err("no runner token: pass --token-file FILE or --token-env NAME".into());
    }
    let api_token = args
        .api_token_file
        .as_deref()
        .map(read_token_file)
        .transpose()?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(crate::control_plane::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    let signer = args
        .signing_key
        .as_deref()
        .map(|path| crate::signing::RequestSigner::load(path, args.signing_kid.clone()))
        .transpose()
        .map_err(|error| format!("invalid --signing-key: {error}"))?
        .map(Arc::new);
    Ok(crate::control_plane::ControlPlaneOptions {
        listen: args.listen,
        runner_tokens,
        api_token,
        tls,
        heartbeat_interval: args.heartbeat_interval,
        signer,
    })
}

fn read_token_file(path: &Path) -> Result<String, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|error| format!("cannot read token file {}: {error}", path.display()))?;
    let token = text.trim().to_string();
    if token.is_empty() {
        return Err(format!("token file {} is empty", path.display()));
    }
    Ok(token)
}

async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut terminate) => {
            tokio::select! {
                _ = terminate.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// `hybrid-runner quickstart`.
pub fn quickstart(args: QuickstartArgs) -> ExitCode {
    match crate::quickstart::run(&args.examples) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(error) => {
            eprintln!("quickstart failed: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// `hybrid-runner demo-connector`.
pub fn demo_connector(config: &Path) -> ExitCode {
    match crate::demo::connect(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("demo connector failed: {error}");
            ExitCode::FAILURE
        }
    }
}

/// `hybrid-runner precheck list`: prints every pre-check of runner.yaml and
/// of the hook scripts with its schedule and next run.
pub fn precheck_list(path: &Path) -> ExitCode {
    let config = match load(path) {
        Ok(config) => config,
        Err(code) => return code,
    };
    let hooks = match crate::agent::load_hooks(&config, crate::agent::HookServices::default()) {
        Ok(hooks) => hooks,
        Err(error) => {
            eprintln!("error: {error}");
            return ExitCode::from(EXIT_USAGE);
        }
    };
    let prechecks = crate::prechecks::Prechecks::new(
        config.prechecks.checks.clone(),
        config.prechecks.zone,
        hooks,
        Arc::new(|_| {}),
    );
    prechecks.sync_hooks();
    let checks = prechecks.list();
    if checks.is_empty() {
        println!("no pre-checks are configured");
        return ExitCode::SUCCESS;
    }
    let zone = prechecks.zone();
    let rows: Vec<[String; 5]> = checks
        .iter()
        .map(|check| {
            let next = prechecks
                .next_run(&check.spec)
                .map(|time| {
                    time.with_timezone(&zone)
                        .format("%Y-%m-%d %H:%M:%S %Z")
                        .to_string()
                })
                .unwrap_or_else(|| "never".into());
            [
                check.spec.name.clone(),
                check.spec.schedule.to_string(),
                next,
                if check.spec.gate { "yes" } else { "no" }.into(),
                check.spec.source.kind().into(),
            ]
        })
        .collect();
    print_table(["NAME", "SCHEDULE", "NEXT RUN", "GATE", "SOURCE"], &rows);
    ExitCode::SUCCESS
}

fn print_table(header: [&str; 5], rows: &[[String; 5]]) {
    let mut widths = header.map(str::len);
    for row in rows {
        for (width, cell) in widths.iter_mut().zip(row) {
            *width = (*width).max(cell.chars().count());
        }
    }
    let line = |cells: [&str; 5]| {
        let padded: Vec<String> = cells
            .iter()
            .zip(widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(header);
    for row in rows {
        line(row.each_ref().map(String::as_str));
    }
}

/// `hybrid-runner precheck run`: runs one pre-check now, with the secrets
/// provider and hooks of runner.yaml, and prints the result. Exits 0 when it
/// passes, 1 when it fails and 64 for an unknown name or invalid config.
pub fn precheck_run(args: PrecheckRunArgs) -> ExitCode {
    let config = match load(&args.config) {
        Ok(config) => config,
        Err(code) => return code,
    };
    // Checks of the work directory see it as the agent creates it.
    if let Err(error) = crate::agent::create_private_dir(&config.work_dir) {
        eprintln!("error: {error}");
        return ExitCode::FAILURE;
    }
    let redactor = Arc::new(Redactor::new(config.secrets.min_redact_length));
    crate::logging::init("warn", false, Arc::clone(&redactor));
    crate::logging::install_panic_hook(Arc::clone(&redactor));
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async move {
        let resolver = match crate::secrets::resolver_from_config(
            &config.secrets,
            Arc::clone(&redactor),
        )
        .await
        {
            Ok(resolver) => Arc::new(resolver),
            Err(error) => {
                eprintln!("error: cannot set up the secrets provider: {error}");
                return ExitCode::FAILURE;
            }
        };
        // Events a check sends are printed instead of going to a control plane.
        let services = crate::agent::HookServices {
            events: Some(crate::hooks::EventSink(Arc::new(|kind, payload| {
                eprintln!("event {kind}: {payload}");
            }))),
            secrets: Some(crate::agent::secret_lookup(Arc::clone(&resolver))),
            redactor: Some(crate::hooks::HookRedactor(Arc::clone(&redactor))),
        };
        let hooks = match crate::agent::load_hooks(&config, services) {
            Ok(hooks) => hooks,
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(EXIT_USAGE);
            }
        };
        if let Some(hooks) = &hooks {
            resolver.set_mapper(Arc::clone(hooks) as Arc<dyn crate::secrets::NameMapper>);
        }
        let prechecks = crate::prechecks::Prechecks::new(
            config.prechecks.checks.clone(),
            config.prechecks.zone,
            hooks,
            Arc::new(|_| {}),
        );
        prechecks.sync_hooks();
        let Some(result) = prechecks.run_now(&args.name).await else {
            let names: Vec<String> = prechecks
                .list()
                .into_iter()
                .map(|check| check.spec.name)
                .collect();
            eprintln!(
                "error: no pre-check is named {:?}; the pre-checks are: {}",
                args.name,
                if names.is_empty() {
                    "(none)".to_string()
                } else {
                    names.join(", ")
                }
            );
            return ExitCode::from(EXIT_USAGE);
        };
        let verdict = if result.ok { "passed" } else { "failed" };
        println!(
            "pre-check {} {verdict} in {} ms: {}",
            result.name,
            result.duration_ms,
            redactor.redact(&result.message)
        );
        if result.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        }
    })
}

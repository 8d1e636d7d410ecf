//! Command-line entry point: parses arguments and calls the library.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use hybrid_runner::commands;

/// Runs OpenMetadata ingestion workflows inside your cloud, resolving their
/// secrets locally and reporting to a SaaS control plane over an outbound
/// WebSocket.
#[derive(Parser)]
#[command(name = "hybrid-runner", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the agent: connect to the control plane and execute run requests.
    Run {
        /// Path of runner.yaml.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Validate runner.yaml without connecting; exits 64 when it is invalid.
    Check {
        /// Path of runner.yaml.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Look up secrets the way runs do, to check access and name mapping.
    #[command(subcommand)]
    Secrets(SecretsCommand),
    /// Check and try Lua hook scripts without starting the runner.
    #[command(subcommand)]
    Hooks(HooksCommand),
    /// Read the secret access audit log.
    #[command(subcommand)]
    Audit(AuditCommand),
    /// List the scheduled pre-checks or run one now.
    #[command(subcommand)]
    Precheck(PrecheckCommand),
    /// Run the reference control plane (for development, demos and tests).
    ControlPlane(commands::ControlPlaneArgs),
    /// Start a control plane and a runner on 127.0.0.1, submit the example
    /// workflows and show each run's status timeline and redacted log.
    Quickstart(commands::QuickstartArgs),
    /// Example workflow program used by the quickstart: reads a resolved
    /// OpenMetadata config and logs in to the demo database it names.
    #[command(hide = true)]
    DemoConnector {
        /// Path of the resolved workflow config.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
}

#[derive(Subcommand)]
enum SecretsCommand {
    /// Resolve one reference through the policy and provider of runner.yaml
    /// and print the provider, mapped name, version and value length. Exits 1
    /// when the lookup fails and 64 for invalid arguments or config.
    Get(commands::SecretsGetArgs),
}

#[derive(Subcommand)]
enum HooksCommand {
    /// Load every script of a hooks folder and report errors with file and
    /// line; exits 64 when loading fails.
    Check {
        /// The hooks folder.
        dir: PathBuf,
    },
    /// Call one hook with a JSON input and print what it returns.
    Test(commands::HooksTestArgs),
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Print the last entries of the audit log that runner.yaml names, oldest
    /// first, one line each.
    Tail(commands::AuditTailArgs),
}

#[derive(Subcommand)]
enum PrecheckCommand {
    /// Print every pre-check of runner.yaml and of the hook scripts with its
    /// schedule, next run time, gate flag and source (yaml or lua).
    List {
        /// Path of runner.yaml.
        #[arg(short, long, value_name = "FILE")]
        config: PathBuf,
    },
    /// Run one pre-check now and print its result. Exits 0 when it passes, 1
    /// when it fails, and 64 for an unknown name or invalid config.
    Run(commands::PrecheckRunArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Run { config } => commands::run(&config),
        Command::Check { config } => commands::check(&config),
        Command::Secrets(SecretsCommand::Get(args)) => commands::secrets_get(args),
        Command::Hooks(HooksCommand::Check { dir }) => commands::hooks_check(&dir),
        Command::Hooks(HooksCommand::Test(args)) => commands::hooks_test(args),
        Command::Audit(AuditCommand::Tail(args)) => commands::audit_tail(args),
        Command::Precheck(PrecheckCommand::List { config }) => commands::precheck_list(&config),
        Command::Precheck(PrecheckCommand::Run(args)) => commands::precheck_run(args),
        Command::ControlPlane(args) => commands::control_plane(args),
        Command::Quickstart(args) => commands::quickstart(args),
        Command::DemoConnector { config } => commands::demo_connector(&config),
    }
}

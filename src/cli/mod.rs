//! The `lifeboat` command line: argument parsing, dispatch, exit codes.

mod client;
mod manifest;
mod output;
mod server;
mod snapshot;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

pub use client::Failure;

/// Exit codes (DESIGN.md): stable, for runbooks and scripts.
pub mod exit {
    pub const OK: u8 = 0;
    pub const FAILED: u8 = 1;
    pub const INVALID: u8 = 2;
    pub const NOT_FOUND: u8 = 3;
    pub const CONFLICT: u8 = 4;
    pub const DENIED: u8 = 5;
    pub const UNREACHABLE: u8 = 6;
}

#[derive(Debug, Parser)]
#[command(name = "lifeboat", version, about = "Disaster-recovery orchestration for immutable infrastructure")]
pub struct Cli {
    /// The lifeboat server to talk to.
    #[arg(long, global = true, env = "LIFEBOAT_SERVER", default_value = "http://127.0.0.1:7700")]
    pub server: String,
    /// Result format on stdout.
    #[arg(long, global = true, value_enum, default_value_t = Output::Text)]
    pub output: Output,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the lifeboat server (gRPC API).
    Server(ServerArgs),
    /// Work with manifests offline.
    #[command(subcommand)]
    Manifest(ManifestCmd),
    /// Store, inspect and promote snapshots.
    #[command(subcommand)]
    Snapshot(SnapshotCmd),
}

#[derive(Debug, clap::Args)]
pub struct ServerArgs {
    /// Configuration file (TOML); see lifeboat.example.toml.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where state lives: a directory, file:///path, or s3://BUCKET/PREFIX [default: ./lifeboat-data].
    #[arg(long, env = "LIFEBOAT_STORE")]
    pub store: Option<String>,
    /// gRPC listen address [default: 127.0.0.1:7700]; port 0 picks a free port.
    #[arg(long)]
    pub listen: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum ManifestCmd {
    /// Check a manifest offline and list every problem with its location.
    Validate {
        /// A TOML or JSON manifest.
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Store a manifest as the environment's next snapshot version.
    Push {
        file: PathBuf,
        /// What changed and why.
        #[arg(long, short, default_value = "")]
        message: String,
        /// A label, KEY=VALUE (repeatable).
        #[arg(long = "label", value_parser = parse_label)]
        labels: Vec<(String, String)>,
    },
    /// List an environment's snapshots, oldest first.
    List { environment: String },
    /// Show one snapshot: a version, latest, known-good, a tag, or a digest.
    Show { environment: String, reference: String },
    /// Show what changed between two snapshots, per service.
    Diff { environment: String, from: String, to: String },
    /// Make a snapshot the environment's known-good one.
    Promote {
        environment: String,
        reference: String,
        #[arg(long)]
        reason: String,
        /// Only if known-good points at this version now (0: not set yet).
        #[arg(long)]
        expect: Option<u64>,
    },
    /// Mark a snapshot bad so it is never promoted or recovered.
    Reject {
        environment: String,
        reference: String,
        #[arg(long)]
        reason: String,
    },
    /// Point a tag at a snapshot.
    Tag {
        environment: String,
        reference: String,
        tag: String,
        /// Only if the tag points at this version now (0: not set yet).
        #[arg(long)]
        expect: Option<u64>,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not KEY=VALUE")),
    }
}

pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::INVALID } else { exit::OK });
        }
    };
    let level = if matches!(cli.command, Command::Server(_)) { "info" } else { "warn" };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lifeboat: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        Err(f) => {
            eprintln!("lifeboat: {}", f.message);
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    match cli.command {
        Command::Server(args) => server::run(args).await,
        Command::Manifest(ManifestCmd::Validate { file }) => manifest::validate(&file, cli.output),
        Command::Snapshot(cmd) => snapshot::run(&cli.server, cli.output, cmd).await,
    }
}

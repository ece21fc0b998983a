//! The `lifeboat` command line: argument parsing, dispatch, exit codes.

mod audit;
mod client;
mod demo;
mod demo_service;
mod drift;
mod drill;
mod env;
mod follow;
mod image;
mod logs;
mod manifest;
mod output;
mod recovery;
mod server;
mod snapshot;
mod status;
mod store;

use std::path::PathBuf;
use std::process::ExitCode;

use std::io::IsTerminal;

use clap::{CommandFactory, FromArgMatches, Parser, Subcommand, ValueEnum};

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
    /// `plan --detailed-exitcode`, `snapshot diff --exit-code`: there are
    /// changes (opt-in; the one exception to the table, as in Terraform and git).
    pub const CHANGES: u8 = 2;
    /// Ctrl-C while following a run (which goes on), as shells count SIGINT.
    pub const INTERRUPTED: u8 = 130;
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
    /// The bearer token to call the server with (`lifeboat token create` makes one).
    #[arg(long, global = true, env = "LIFEBOAT_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate (PEM) that an https:// server's certificate must chain to [default: the system's].
    #[arg(long, global = true, env = "LIFEBOAT_CA")]
    pub ca: Option<PathBuf>,
    /// Client certificate (PEM) for servers that require one (mTLS).
    #[arg(long, global = true, env = "LIFEBOAT_CERT", requires = "key")]
    pub cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, global = true, env = "LIFEBOAT_KEY", requires = "cert")]
    pub key: Option<PathBuf>,
    /// Who you act for, in audit records and snapshot authors [default: user@host].
    #[arg(long, global = true, env = "LIFEBOAT_ACTOR")]
    pub author: Option<String>,
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
    /// Store local-provider artifacts by content.
    #[command(subcommand)]
    Image(ImageCmd),
    /// Show what a recovery would do: steps, critical path, preflight.
    Plan {
        #[command(flatten)]
        target: TargetArgs,
        #[arg(long, value_enum, default_value_t = PlanFormat::Text)]
        format: PlanFormat,
        /// Exit 0 when nothing would change and 2 when something would (as
        /// `terraform plan -detailed-exitcode`); 1 still means a failed preflight.
        #[arg(long)]
        detailed_exitcode: bool,
    },
    /// Remove every instance of an environment in a region (the old region
    /// after a fail-back, or an environment being retired): planned,
    /// confirmed, audited and followed like a recovery. Refused while the
    /// region serves traffic, unless --force.
    Decommission {
        environment: String,
        /// The region to empty.
        #[arg(long)]
        region: String,
        /// Remove it even though traffic still reaches it.
        #[arg(long)]
        force: bool,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long)]
        yes: bool,
        /// Print the run ID and return instead of following it.
        #[arg(long)]
        detach: bool,
    },
    /// Redeploy an environment from a snapshot, in dependency order, blue-green.
    Recover {
        #[command(flatten)]
        target: TargetArgs,
        /// Services launched at once [default: 16].
        #[arg(long)]
        parallelism: Option<u32>,
        /// Print the plan and change nothing.
        #[arg(long)]
        dry_run: bool,
        /// Do not ask for confirmation.
        #[arg(long, short)]
        yes: bool,
        /// Start the run and return without following it.
        #[arg(long)]
        detach: bool,
        /// Plan the run and wait, launching nothing, until `lifeboat run approve ID`.
        #[arg(long)]
        propose: bool,
    },
    /// Manage runs (recoveries and drills).
    #[command(subcommand)]
    Run(RunCmd),
    /// What runs where: the deployed snapshot, whether it matches known-good,
    /// each service's instances and health, the last run.
    Status {
        /// One environment [default: all].
        environment: Option<String>,
    },
    /// Bearer tokens for the server's `[[auth.tokens]]`.
    #[command(subcommand)]
    Token(TokenCmd),
    /// Read the audit records: who did what, when, with what outcome.
    #[command(subcommand)]
    Audit(AuditCmd),
    /// What the server keeps per environment: its promotion policy.
    #[command(subcommand)]
    Env(env::EnvCmd),
    /// DR drills: isolated test recoveries judged against the RTO objective, torn down after.
    #[command(subcommand)]
    Drill(drill::DrillCmd),
    /// Compare what runs with known-good, per service (exit 0 in sync, 1 drifted).
    Drift {
        environment: String,
        /// Target region [default: known-good's region].
        #[arg(long)]
        region: Option<String>,
    },
    /// Show the output of a service's running instances (as `nomad alloc logs`).
    Logs {
        environment: String,
        service: String,
        /// Target region [default: the environment's home region].
        #[arg(long)]
        region: Option<String>,
        #[command(flatten)]
        read: LogArgs,
    },
    /// Inspect the object store.
    #[command(subcommand)]
    Store(StoreCmd),
    /// The main job end to end on the embedded default: a sample region is
    /// snapshotted, promoted, brought up, failed and recovered.
    Demo,
    #[command(hide = true)]
    DemoService(demo_service::DemoServiceArgs),
    /// The process that serves a local-provider directory's stable
    /// addresses; started by the server, outlives it.
    #[command(hide = true)]
    Router {
        #[arg(long)]
        dir: PathBuf,
    },
}

/// Which environment to recover, to what, where.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    pub environment: String,
    /// The snapshot to recover to (version, latest, known-good, tag, digest).
    #[arg(long, default_value = "known-good")]
    pub snapshot: String,
    /// Target region [default: the manifest's region].
    #[arg(long)]
    pub region: Option<String>,
    /// Replace services even if they already run the snapshot's image and settings.
    #[arg(long)]
    pub force: bool,
    /// Leave running services that are absent from the snapshot alone
    /// (by default they are deleted once every other service is healthy).
    #[arg(long)]
    pub no_prune: bool,
    /// Plan (and run) the region's decommission instead (`lifeboat decommission`).
    #[arg(skip)]
    pub decommission: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum PlanFormat {
    Text,
    Json,
    Dot,
    Mermaid,
}

#[derive(Debug, Subcommand)]
pub enum ImageCmd {
    /// Store an executable or a .tar/.tar.gz of a directory; prints its sha256: ID.
    Import { path: PathBuf },
    /// List stored images.
    List,
}

#[derive(Debug, Subcommand)]
pub enum RunCmd {
    /// Recent runs, newest first.
    List {
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// Print only run IDs, newest first (`RUN_ID=$(lifeboat run list --environment ENV --limit 1 -q)`).
        #[arg(long, short)]
        quiet: bool,
        /// Only runs waiting for an approval: a proposed run (from a pager webhook or `recover --propose`)
        /// or a service with `approval = true`.
        #[arg(long)]
        awaiting_approval: bool,
    },
    /// One run's per-service report.
    Show(RunPick),
    /// A finished run's stored report: the summary, the HTML page (--html FILE) or the JSON document (--json).
    Report(drill::ReportArgs),
    /// Follow a run until it finishes (exit 1 unless it succeeds).
    Watch(RunPick),
    /// Stop launching and remove instances not yet cut over.
    Cancel {
        /// A run ID, or a unique prefix of it.
        id: String,
    },
    /// Let a service marked `approval = true` proceed.
    Approve {
        /// A run ID, or a unique prefix of it.
        id: String,
        /// A service with `approval = true` [default: the whole run, if it was proposed].
        service: Option<String>,
    },
    /// Take over a run whose server stopped.
    Resume {
        /// A run ID, or a unique prefix of it.
        id: String,
    },
    /// Show the output of a run's instances of a service, failed attempts included.
    Logs {
        /// A run ID, or a unique prefix of it.
        id: String,
        service: String,
        #[command(flatten)]
        read: LogArgs,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Print a new random token and the config entry that admits it (only
    /// its SHA-256 goes into the config).
    Create {
        name: String,
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCmd {
    /// Records newest first, filtered.
    List {
        /// How far back: a duration (2h, 7d) or an RFC 3339 time [default: 24h].
        #[arg(long)]
        since: Option<String>,
        #[arg(long)]
        actor: Option<String>,
        /// `snapshot.promote`, or just `promote`.
        #[arg(long)]
        action: Option<String>,
        #[arg(long)]
        environment: Option<String>,
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=1000))]
        limit: u32,
    },
}

/// How much output to show.
#[derive(Debug, clap::Args)]
pub struct LogArgs {
    /// Keep printing new lines as they are written (Ctrl-C stops).
    #[arg(long, short)]
    pub follow: bool,
    /// The last N lines of each instance (1..10000).
    #[arg(long, short = 'n', default_value_t = 100, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub lines: u32,
}

/// One run: by ID (or a unique prefix of it), or the newest of an environment.
#[derive(Debug, clap::Args)]
pub struct RunPick {
    /// A run ID, or a unique prefix of it.
    #[arg(required_unless_present = "latest")]
    pub id: Option<String>,
    /// The newest run of this environment instead of an ID.
    #[arg(long, value_name = "ENV", conflicts_with = "id")]
    pub latest: Option<String>,
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
    /// HTTP address for /healthz, /readyz and /metrics [default: 127.0.0.1:7701];
    /// port 0 picks a free port.
    #[arg(long)]
    pub http_listen: Option<String>,
    /// Serve the API on a non-loopback address although callers are not
    /// authenticated yet.
    #[arg(long)]
    pub insecure: bool,
    /// The local provider's directory: instances, logs, unpacked images [default: ./lifeboat-local].
    #[arg(long, env = "LIFEBOAT_LOCAL_DIR")]
    pub local_dir: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum StoreCmd {
    /// Run the store self-test: create-if-absent, compare-and-swap,
    /// read-after-write, list-after-write; report versioning and Object Lock.
    /// Exit 0 when every guarantee holds, 1 otherwise.
    Check {
        /// Check this store directly instead of asking the server: a
        /// directory, file:///path, or s3://BUCKET/PREFIX.
        #[arg(long, env = "LIFEBOAT_STORE")]
        store: Option<String>,
        /// Server configuration whose [store] table applies (endpoint, region, path style).
        #[arg(long, requires = "store")]
        config: Option<PathBuf>,
    },
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
        /// Store it even though a rejected snapshot has exactly this manifest.
        #[arg(long)]
        force: bool,
        /// Print only the new version (`V=$(lifeboat snapshot push shop.toml -q)`).
        #[arg(long, short)]
        quiet: bool,
    },
    /// List an environment's snapshots, oldest first.
    List { environment: String },
    /// Show one snapshot: a version, latest, known-good, a tag, or a digest.
    Show {
        environment: String,
        reference: String,
        /// Print only the version number (`V=$(lifeboat snapshot show ENV known-good -q)`).
        #[arg(long, short)]
        quiet: bool,
    },
    /// Show what changed between two snapshots, per service.
    Diff {
        environment: String,
        from: String,
        to: String,
        /// Exit 0 when there is no difference and 2 when there is (as `git diff --exit-code`).
        #[arg(long)]
        exit_code: bool,
    },
    /// Make a snapshot the environment's known-good one. Refused when one of
    /// its images is missing, or when the environment's drill gate is not met.
    Promote {
        environment: String,
        /// A version, tag, `latest` or digest (leave it out with --from-drill).
        #[arg(required_unless_present = "from_drill")]
        reference: Option<String>,
        /// Why (required, unless --from-drill, whose reason names the drill).
        #[arg(long, required_unless_present = "from_drill")]
        reason: Option<String>,
        /// Promote exactly the snapshot this drill restored, and only if it passed.
        #[arg(long, value_name = "RUN_ID")]
        from_drill: Option<String>,
        /// Only if known-good points at this version now (0: not set yet).
        #[arg(long)]
        expect: Option<u64>,
        /// Promote even though an image of the snapshot cannot be found (recorded with the promotion).
        #[arg(long)]
        force: bool,
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
        /// Move the tag even if it points at another snapshot.
        #[arg(long)]
        force: bool,
    },
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("label {s:?} is not KEY=VALUE")),
    }
}

/// The parser, with the client-only options (`--server`/`LIFEBOAT_SERVER`,
/// `--output`) hidden from the server's help: they mean nothing to it.
pub fn command() -> clap::Command {
    let mut cmd = Cli::command();
    cmd.build();
    cmd.mut_subcommand("server", |s| {
        // In place (`mut_arg` would reorder the built argument list).
        s.mut_args(|a| {
            if matches!(a.get_id().as_str(), "server" | "output" | "token" | "ca" | "cert" | "key") {
                a.hide(true)
            } else {
                a
            }
        })
    })
}

pub fn main() -> ExitCode {
    let parsed = command().try_get_matches().and_then(|m| Cli::from_arg_matches(&m));
    let cli = match parsed {
        Ok(c) => c,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::INVALID } else { exit::OK });
        }
    };
    let level = match cli.command {
        Command::Server(_) => "info",
        Command::Demo => "error",
        Command::Router { .. } => "info",
        _ => "warn",
    };
    // Colour only on a terminal, and never with NO_COLOR set (no-color.org):
    // log files get plain text.
    let colour = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    // A closed stdout (`lifeboat … | head -1`) ends the command quietly
    // instead of a "Broken pipe" panic.
    let default_hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(move |info| {
        let message = info
            .payload()
            .downcast_ref::<String>()
            .map(String::as_str)
            .or_else(|| info.payload().downcast_ref::<&str>().copied())
            .unwrap_or_default();
        if message.contains("failed printing to stdout") && message.contains("Broken pipe") {
            std::process::exit(0);
        }
        default_hook(info);
    }));
    tracing_subscriber::fmt()
        .with_ansi(colour)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("LIFEBOAT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(level)),
        )
        .with_writer(std::io::stderr)
        .init();
    // Both rustls crypto back ends are linked (the AWS SDK brings one, tonic
    // the other): pick one for the process, for TLS on gRPC.
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("lifeboat: cannot start the async runtime: {e}");
            return ExitCode::from(exit::FAILED);
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::from(exit::OK),
        // An exit code that is itself the answer (`--exit-code`): nothing to add.
        Err(f) if f.message.is_empty() => ExitCode::from(f.code),
        Err(f) => {
            // Messages may quote user input: never let it drive the terminal.
            let lines: Vec<String> = f.message.lines().map(output::safe).collect();
            eprintln!("lifeboat: {}", lines.join("\n"));
            ExitCode::from(f.code)
        }
    }
}

async fn run(cli: Cli) -> Result<(), Failure> {
    let output = cli.output;
    if let Some(t) = &cli.token {
        client::set_token(t);
    }
    if let Some(a) = &cli.author {
        client::set_author(a);
    }
    client::set_tls(client::TlsFiles { ca: cli.ca.clone(), cert: cli.cert.clone(), key: cli.key.clone() });
    match cli.command {
        Command::Server(args) => server::run(args).await,
        Command::Manifest(ManifestCmd::Validate { file }) => manifest::validate(&file, output),
        Command::Snapshot(cmd) => snapshot::run(&cli.server, output, cmd).await,
        Command::Demo => demo::run().await,
        Command::DemoService(args) => demo_service::run(args).await,
        Command::Router { dir } => crate::provider::local::router::run(dir.clone())
            .await
            .map_err(|e| Failure::new(exit::FAILED, format!("router for {} failed: {e:#}", dir.display()))),
        Command::Image(cmd) => {
            let client = client::Client::connect(&cli.server).await?;
            match cmd {
                ImageCmd::Import { path } => image::import(&client, &path, output).await,
                ImageCmd::List => image::list(&client, output).await,
            }
        }
        Command::Plan { target, format, detailed_exitcode } => {
            // Two formats asked for at once: refuse rather than pick one.
            if output == Output::Json && !matches!(format, PlanFormat::Text | PlanFormat::Json) {
                return Err(Failure::invalid(format!(
                    "--output json and --format {} ask for two formats; use one of them",
                    format.to_possible_value().map(|v| v.get_name().to_string()).unwrap_or_default()
                )));
            }
            let client = client::Client::connect(&cli.server).await?;
            recovery::plan(&client, target, format, output, detailed_exitcode).await
        }
        Command::Recover { target, parallelism, dry_run, yes, detach, propose } => {
            let client = client::Client::connect(&cli.server).await?;
            let options = recovery::RecoverOptions { parallelism, dry_run, yes, detach, propose };
            recovery::recover(&client, target, options, output).await
        }
        Command::Decommission { environment, region, force, dry_run, yes, detach } => {
            let client = client::Client::connect(&cli.server).await?;
            let target = TargetArgs {
                environment,
                snapshot: "known-good".into(),
                region: Some(region),
                force,
                no_prune: false,
                decommission: true,
            };
            let options = recovery::RecoverOptions { parallelism: None, dry_run, yes, detach, propose: false };
            recovery::recover(&client, target, options, output).await
        }
        Command::Run(cmd) => {
            let client = client::Client::connect(&cli.server).await?;
            recovery::run_cmd(&client, cmd, output).await
        }
        Command::Store(cmd) => store::run(&cli.server, output, cmd).await,
        Command::Token(TokenCmd::Create { name, role }) => {
            if !crate::domain::manifest::is_valid_name(&name) {
                return Err(Failure::invalid(format!("\"{name}\" is not a token name: use a-z, 0-9 and -")));
            }
            let token = format!("lbt_{}{}", uuid::Uuid::new_v4().simple(), uuid::Uuid::new_v4().simple());
            let digest = crate::api::auth::sha256_hex(&token);
            println!("{token}");
            eprintln!(
                "Give the token to its holder (it is shown once), and add this to the server's configuration:\n\n[[auth.tokens]]\nname = \"{name}\"\nrole = \"{role}\"\nsha256 = \"{digest}\""
            );
            Ok(())
        }
        Command::Env(cmd) => {
            let client = client::Client::connect(&cli.server).await?;
            env::run(&client, cmd, output).await
        }
        Command::Audit(cmd) => {
            let client = client::Client::connect(&cli.server).await?;
            audit::run(&client, cmd, output).await
        }
        Command::Drill(cmd) => {
            let client = client::Client::connect(&cli.server).await?;
            drill::run(&client, cmd, output).await
        }
        Command::Drift { environment, region } => {
            let client = client::Client::connect(&cli.server).await?;
            drift::run(&client, environment, region, output).await
        }
        Command::Status { environment } => {
            let client = client::Client::connect(&cli.server).await?;
            status::run(&client, environment, output).await
        }
        Command::Logs { environment, service, region, read } => {
            let client = client::Client::connect(&cli.server).await?;
            let req = crate::api::pb::LogsRequest {
                environment,
                service,
                region: region.unwrap_or_default(),
                run_id: String::new(),
                lines: read.lines,
                follow: read.follow,
            };
            logs::print(&client, req, output).await
        }
    }
}

//! Assembling a server: store, local provider, engine, gRPC API. Used by
//! `lifeboat server` and, in-process, by `lifeboat demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::api;
use crate::engine::clock::SystemClock;
use crate::engine::{Engine, RunContext};
use crate::provider::Providers;
use crate::provider::ec2::Ec2Provider;
use crate::provider::local::LocalProvider;
use crate::store::DynStore;

pub struct Options {
    pub store: DynStore,
    pub local_dir: PathBuf,
    pub listen: String,
    pub lease_ttl: Duration,
    /// How long a proposed run waits for approval before it expires.
    pub proposal_timeout: Duration,
    /// What the cutover's safety rests on (`[engine] max_clock_skew`, `cutover`).
    pub safety: crate::engine::Safety,
    /// Let the local provider serve stable addresses on non-loopback interfaces.
    pub allow_public_listen: bool,
    /// How many bytes one tarball artifact may unpack to.
    pub max_unpacked_bytes: Option<u64>,
    /// How the local provider keeps drills off production's addresses.
    pub drill_network: crate::provider::local::DrillNetwork,
    /// How long an image import may send nothing before it is dropped.
    pub import_idle_timeout: Option<Duration>,
    /// The ec2 provider's settings; `None` leaves it out.
    pub ec2: Option<crate::provider::ec2::Ec2Config>,
    /// How often every environment is checked for drift.
    pub drift_interval: Duration,
    /// How often drill leftovers are swept, and due schedules fired.
    pub drill_sweep_interval: Duration,
    pub schedule_interval: Duration,
    /// Where the HTTP side (/healthz, /readyz, /metrics) listens; `None`: nowhere.
    pub http_listen: Option<String>,
    /// Bearer tokens with roles; none: authentication is off.
    pub tokens: crate::api::auth::Tokens,
    /// `[[notify]]` receivers of run notifications.
    pub notify: Vec<crate::engine::notify::Receiver>,
    /// TLS (and mTLS) for the gRPC port.
    pub tls: Option<crate::config::TlsPem>,
    /// Pager webhooks and their routing rules.
    pub webhooks: crate::config::WebhooksSection,
    /// Connection caps and request deadlines on both ports.
    pub admission: api::admission::Settings,
}

pub struct Running {
    pub addr: SocketAddr,
    /// The HTTP side's address, when it listens.
    pub http_addr: Option<SocketAddr>,
    pub engine: Arc<Engine>,
    pub provider: Arc<LocalProvider>,
    shutdown: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<anyhow::Result<()>>,
    supervisor: tokio::task::JoinHandle<()>,
    drift: tokio::task::JoinHandle<()>,
    drills: tokio::task::JoinHandle<()>,
    schedules: tokio::task::JoinHandle<()>,
    http: Option<(oneshot::Sender<()>, tokio::task::JoinHandle<anyhow::Result<()>>)>,
}

/// Aborts a task when dropped (with the task that holds it).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// A name for this server process in leases and journals.
fn owner_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname").map(|h| h.trim().to_string()).unwrap_or_default();
    let host = if host.is_empty() { "localhost".to_string() } else { host };
    format!("{host}/{}/{}", std::process::id(), &uuid::Uuid::new_v4().simple().to_string()[..6])
}

/// Starts serving; unfinished runs whose server stopped are taken over in the background.
pub async fn start(opts: Options) -> anyhow::Result<Running> {
    let provider = LocalProvider::open(&opts.local_dir, opts.store.clone()).await?;
    provider.allow_public_listen(opts.allow_public_listen);
    provider.drill_network(opts.drill_network);
    if let Some(max) = opts.max_unpacked_bytes {
        provider.max_unpacked_bytes(max);
    }
    let store_id = crate::store::store_id(&opts.store).await?;
    let engine = Engine::new(RunContext {
        store: opts.store.clone(),
        providers: match &opts.ec2 {
            Some(c) => Providers::new()
                .with(provider.clone())
                .with(Ec2Provider::new(crate::provider::ec2::Ec2Config { store_id: Some(store_id), ..c.clone() })),
            None => Providers::new().with(provider.clone()),
        },
        clock: Arc::new(SystemClock),
        owner: owner_name(),
        lease_ttl: opts.lease_ttl,
        proposal_timeout: opts.proposal_timeout,
        safety: opts.safety,
        notifier: crate::engine::notify::Notifier::start(opts.notify.clone()).map_err(|e| anyhow::anyhow!(e))?,
    });
    let listener =
        TcpListener::bind(&opts.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", opts.listen))?;
    let addr = listener.local_addr()?;
    let http_listener = match &opts.http_listen {
        Some(a) => Some(TcpListener::bind(a).await.map_err(|e| anyhow::anyhow!("cannot listen on {a} (HTTP): {e}"))?),
        None => None,
    };
    let webhooks = Arc::new(api::webhooks::Webhooks::new(&opts.webhooks, opts.store.clone(), engine.clone())?);
    let supervisor = engine.supervise();
    let drift = engine.check_drift_every(opts.drift_interval);
    let drills = {
        // Drill leftovers, and processed webhook events past their max_age.
        let (sweep, webhooks) = (engine.sweep_drills_every(opts.drill_sweep_interval), webhooks.clone());
        let every = opts.drill_sweep_interval;
        tokio::spawn(async move {
            let _sweep = AbortOnDrop(sweep);
            loop {
                webhooks.prune_events().await;
                tokio::time::sleep(every).await;
            }
        })
    };
    let schedules = engine.fire_schedules_every(opts.schedule_interval);
    let mut limits = api::Limits::default();
    if let Some(max) = opts.max_unpacked_bytes {
        limits.unpack = crate::store::archive::Limits { max_total_bytes: max, max_entry_bytes: max, ..limits.unpack };
    }
    if let Some(idle) = opts.import_idle_timeout {
        limits.import_idle = idle;
    }
    let ctx = api::Ctx::new(opts.store, engine.clone(), limits);
    let admission = api::admission::Admission::for_this_process(opts.admission);
    let (tx, rx) = oneshot::channel::<()>();
    let task = tokio::spawn(api::serve(listener, ctx, Arc::new(opts.tokens), opts.tls, admission, async {
        let _ = rx.await;
    }));
    // The store passed its self-test before we got here: ready.
    let ready = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut http_addr = None;
    let http = match http_listener {
        Some(l) => {
            http_addr = Some(l.local_addr()?);
            let (htx, hrx) = oneshot::channel::<()>();
            let task = tokio::spawn(api::http::serve(l, ready, webhooks, admission, async {
                let _ = hrx.await;
            }));
            Some((htx, task))
        }
        None => None,
    };
    Ok(Running { addr, http_addr, engine, provider, shutdown: tx, task, supervisor, drift, drills, schedules, http })
}

impl Running {
    /// Stops serving. Runs stop where they are and stay resumable.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.supervisor.abort();
        self.drift.abort();
        self.drills.abort();
        self.schedules.abort();
        self.engine.abort_all();
        if let Some((stop, task)) = self.http {
            let _ = stop.send(());
            let _ = task.await;
        }
        let _ = self.shutdown.send(());
        self.task.await?
    }

    /// Waits until the server stops by itself (an error).
    pub async fn wait(&mut self) -> anyhow::Result<()> {
        (&mut self.task).await?
    }
}

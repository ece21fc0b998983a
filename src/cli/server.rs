//! `lifeboat server`: open the store, serve the API until SIGINT/SIGTERM.

use std::time::Duration;

use super::{Failure, ServerArgs, exit};
use crate::config::{Config, DEFAULT_HTTP_LISTEN, DEFAULT_LISTEN, DEFAULT_LOCAL_DIR, DEFAULT_STORE};
use crate::server;

pub async fn run(args: ServerArgs) -> Result<(), Failure> {
    let config = match &args.config {
        Some(p) => Config::load(p).map_err(|e| Failure::invalid(e.to_string()))?,
        None => Config::default(),
    };
    let url = args.store.or(config.store.url.clone()).unwrap_or_else(|| DEFAULT_STORE.into());
    let listen = args.listen.or(config.server.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.into());
    let http_listen =
        args.http_listen.or(config.server.http_listen.clone()).unwrap_or_else(|| DEFAULT_HTTP_LISTEN.into());
    let local_dir = args.local_dir.or(config.provider.local.dir.clone()).unwrap_or_else(|| DEFAULT_LOCAL_DIR.into());
    let lease_ttl = config.engine.lease_ttl.map_or(Duration::from_secs(15), |d| d.0);
    let safety = crate::engine::Safety {
        max_clock_skew: config.engine.max_clock_skew.map_or(crate::engine::DEFAULT_MAX_CLOCK_SKEW, |d| d.0),
        cutover: config.engine.cutover.unwrap_or_default(),
    };
    // Past the TTL less a third (pauses) less the skew the lease no longer
    // surely holds; with no time left, every cutover would be fenced and no
    // journal write retried.
    if safety.max_clock_skew >= lease_ttl / 3 {
        return Err(Failure::invalid(format!(
            "engine.max_clock_skew ({}) must be under a third of engine.lease_ttl ({}): a run's owner acts without a journal write only while its lease surely holds (the TTL less a third for pauses, less the skew); raise lease_ttl or synchronise the clocks",
            crate::domain::duration::human(safety.max_clock_skew),
            crate::domain::duration::human(lease_ttl)
        )));
    }
    let tokens = crate::api::auth::Tokens::new(config.auth.tokens).map_err(Failure::invalid)?;
    crate::api::webhooks::Webhooks::check(&config.webhooks).map_err(Failure::invalid)?;
    let tls = match &config.server.tls {
        Some(t) => Some(t.read().map_err(|e| Failure::invalid(format!("{e:#}")))?),
        None => None,
    };
    let mtls = config.server.tls.as_ref().is_some_and(|t| t.client_ca.is_some());
    // Without tokens or client certificates anyone who reaches the API may
    // change everything: loopback only.
    if !tokens.enabled() && !mtls {
        check_exposure(&listen, args.insecure)?;
        check_exposure(&http_listen, args.insecure)?;
    }
    let allow_public_listen = config.provider.local.allow_public_listen.unwrap_or(false);
    let store = crate::store::open(&url, &config.store.s3())
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot open store {url}: {e:#}")))?;
    let describe = store.describe();
    let mut running = server::start(server::Options {
        store,
        local_dir,
        listen,
        lease_ttl,
        proposal_timeout: config.engine.proposal_timeout.map_or(crate::engine::DEFAULT_PROPOSAL_TIMEOUT, |d| d.0),
        safety,
        allow_public_listen,
        max_unpacked_bytes: config.provider.local.max_unpacked_bytes,
        drill_network: config.provider.local.drill_network.unwrap_or_default(),
        import_idle_timeout: config.server.import_idle_timeout.map(|d| d.0),
        ec2: config.provider.ec2.provider_config(),
        drift_interval: config.engine.drift_interval.map_or(crate::engine::drift::DEFAULT_DRIFT_INTERVAL, |d| d.0),
        drill_sweep_interval: config.engine.drill_sweep_interval.map_or(Duration::from_secs(60), |d| d.0),
        schedule_interval: config.engine.schedule_interval.map_or(Duration::from_secs(15), |d| d.0),
        http_listen: Some(http_listen),
        tokens,
        notify: config.notify,
        webhooks: config.webhooks,
        tls,
        admission: crate::api::admission::Settings {
            max_http_connections: config.server.max_http_connections,
            max_grpc_connections: config.server.max_grpc_connections,
            header_timeout: config.server.header_timeout.map(|d| d.0),
            body_timeout: config.server.body_timeout.map(|d| d.0),
        },
    })
    .await
    .map_err(|e| Failure::new(exit::FAILED, format!("{e:#}")))?;
    // The first stdout line is for scripts and tests that start a server on port 0.
    println!("lifeboat server listening on {}", running.addr);
    if let Some(a) = running.http_addr {
        println!("lifeboat http listening on {a}");
    }
    tracing::info!(grpc = %running.addr, store = %describe, "lifeboat server started");
    tokio::select! {
        r = running.wait() => return r.map_err(|e| Failure::new(exit::FAILED, format!("server failed: {e:#}"))),
        _ = shutdown_signal() => {}
    }
    running.stop().await.map_err(|e| Failure::new(exit::FAILED, format!("server failed: {e:#}")))?;
    tracing::info!("lifeboat server stopped; unfinished runs resume when it starts again");
    Ok(())
}

/// Until callers are authenticated, whoever reaches the API can recover,
/// reject, and run programs through manifests: serve it on loopback only,
/// unless told otherwise.
fn check_exposure(listen: &str, insecure: bool) -> Result<(), Failure> {
    use std::net::ToSocketAddrs;
    let addrs: Vec<std::net::SocketAddr> = listen
        .to_socket_addrs()
        .map_err(|e| Failure::invalid(format!("--listen {listen:?} is not an address with a port: {e}")))?
        .collect();
    if let Some(a) = addrs.iter().find(|a| !a.ip().is_loopback()) {
        if insecure {
            tracing::warn!(address = %a, "serving the API on a non-loopback address without authentication (--insecure)");
        } else {
            return Err(Failure::invalid(format!(
                "refusing to serve the API on {a}: it is not a loopback address, and no tokens are configured (anyone who reaches it could start recoveries and run programs on this host through manifests); add [[auth.tokens]] to the configuration (`lifeboat token create`), listen on 127.0.0.1, or pass --insecure to accept that"
            )));
        }
    }
    Ok(())
}

async fn shutdown_signal() {
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(s) => s,
        Err(_) => return std::future::pending().await,
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

//! `lifeboat server`: open the store, serve the API until SIGINT/SIGTERM.

use std::time::Duration;

use super::{Failure, ServerArgs, exit};
use crate::config::{Config, DEFAULT_LISTEN, DEFAULT_LOCAL_DIR, DEFAULT_STORE};
use crate::server;

pub async fn run(args: ServerArgs) -> Result<(), Failure> {
    let config = match &args.config {
        Some(p) => Config::load(p).map_err(|e| Failure::invalid(e.to_string()))?,
        None => Config::default(),
    };
    let url = args.store.or(config.store.url.clone()).unwrap_or_else(|| DEFAULT_STORE.into());
    let listen = args.listen.or(config.server.listen.clone()).unwrap_or_else(|| DEFAULT_LISTEN.into());
    let local_dir = args.local_dir.or(config.provider.local.dir.clone()).unwrap_or_else(|| DEFAULT_LOCAL_DIR.into());
    let lease_ttl = config.engine.lease_ttl.map_or(Duration::from_secs(15), |d| d.0);
    let store = crate::store::open(&url, &config.store.s3())
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("cannot open store {url}: {e:#}")))?;
    let describe = store.describe();
    let mut running = server::start(server::Options { store, local_dir, listen, lease_ttl })
        .await
        .map_err(|e| Failure::new(exit::FAILED, format!("{e:#}")))?;
    // The first stdout line is for scripts and tests that start a server on port 0.
    println!("lifeboat server listening on {}", running.addr);
    tracing::info!(grpc = %running.addr, store = %describe, "lifeboat server started");
    tokio::select! {
        r = running.wait() => return r.map_err(|e| Failure::new(exit::FAILED, format!("server failed: {e:#}"))),
        _ = shutdown_signal() => {}
    }
    running.stop().await.map_err(|e| Failure::new(exit::FAILED, format!("server failed: {e:#}")))?;
    tracing::info!("lifeboat server stopped; unfinished runs resume when it starts again");
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

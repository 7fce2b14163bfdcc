//! `accounts-server --url amqp://...`: serves the accounts and limits services on the broker
//! at the URL until Ctrl-C (or SIGTERM), then shuts down gracefully.

use std::sync::Arc;
use std::time::Duration;

use accounts_server::{serve_accounts, serve_limits, Bank, DailyLimit, Db, Outbox};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "warn".into()),
        )
        .init();
    let url = url_arg()?;

    // Each worker on a connection of its own; the bank's client (its nested calls and
    // enqueues) on a third.
    let client_conn = lepus::connect(&url).await?;
    let client = lepus::Client::new(&client_conn).await?;
    let pool = Arc::new(Db::default());
    let bank = Bank::new(pool, &client);
    let limits = DailyLimit {
        limit: 10_000,
        delay: Duration::from_millis(5),
    };

    let accounts_conn = lepus::connect(&url).await?;
    let limits_conn = lepus::connect(&url).await?;
    let mut accounts =
        serve_accounts(lepus::Worker::new(&accounts_conn), bank, Outbox::default()).spawn();
    let mut limits = serve_limits(lepus::Worker::new(&limits_conn), limits).spawn();
    accounts.ready(Duration::from_secs(10)).await?;
    limits.ready(Duration::from_secs(10)).await?;
    println!("accounts-server serving on {url}");

    shutdown_signal().await;
    accounts.shutdown().await?;
    limits.shutdown().await?;
    for conn in [accounts_conn, limits_conn, client_conn] {
        conn.close().await;
    }
    Ok(())
}

/// `--url URL`, or `LEPUS_URL`, or the local default.
fn url_arg() -> Result<String, String> {
    let mut args = std::env::args().skip(1);
    match (args.next().as_deref(), args.next()) {
        (Some("--url"), Some(url)) => Ok(url),
        (None, _) => Ok(std::env::var("LEPUS_URL")
            .unwrap_or_else(|_| "amqp://guest:guest@127.0.0.1:5672/%2f".to_owned())),
        _ => Err("usage: accounts-server [--url AMQP_URL]".to_owned()),
    }
}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => {
                    let _ = tokio::signal::ctrl_c().await;
                    return;
                }
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = tokio::signal::ctrl_c().await;
}

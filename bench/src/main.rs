//! `lepus-bench`: a load generator for AMQP 0-9-1 brokers, in the manner of RabbitMQ PerfTest
//! and lavinmqperf, used to put the bundled Lepus broker side by side with RabbitMQ
//! (`bench/compare` runs it against both).
//!
//! # Layout
//! - `cli`: options and subcommands.
//! - `amqp`: connections, the loopback check, run-unique names, the stamped body layout.
//! - `window`: a bounded window of pipelined publishes, acks and confirms.
//! - `producer`, `consumer`: one connection each, publishing / consuming, through lapin or
//!   through `raw_client` (the bench's own minimal client; frames in `raw_frame`).
//! - `throughput` (and the shared producer/consumer run), `fanout`, `backlog`, `rpc`
//!   (with `rpc_lapin`, the hand-written baseline, `rpc_lepus`, the framework's stub, and
//!   `raw_rpc`, the same pair on the bench's own client):
//!   the scenarios; `tasks`, background tasks through `#[lepus::task]` (the Lepus side of
//!   `bench/celery`).
//! - `stats`: counters, latency histograms, the live progress line.
//! - `proc_stat`: CPU seconds and RSS from `/proc`.
//! - `report`: the final table and JSON.
//! - `error`: the error type.

mod amqp;
mod backlog;
mod cli;
mod consumer;
mod error;
mod fanout;
mod proc_stat;
mod producer;
mod raw_client;
mod raw_frame;
mod raw_rpc;
mod report;
mod rpc;
mod rpc_lapin;
mod rpc_lepus;
mod stats;
mod tasks;
mod throughput;
mod window;

use clap::Parser;

use crate::cli::{Cli, Scenario};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    #[cfg(feature = "otel")]
    let _otel = match otel::install() {
        Ok(guard) => guard,
        Err(err) => {
            eprintln!("lepus-bench: {err}");
            return std::process::ExitCode::FAILURE;
        }
    };
    #[cfg(not(feature = "otel"))]
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("lepus-bench: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(cli: &Cli) -> error::Result<()> {
    amqp::check_loopback(&cli.url)?;
    let report = match &cli.scenario {
        Scenario::Throughput(a) => throughput::throughput(cli, a).await?,
        Scenario::Fanout(a) => fanout::fanout(cli, a).await?,
        Scenario::Backlog(a) => backlog::backlog(cli, a).await?,
        Scenario::Rpc(a) => rpc::rpc(cli, a).await?,
        Scenario::Tasks(a) => tasks::tasks(cli, a).await?,
    };
    report.print(cli.json)
}

/// The `otel` build: OpenTelemetry with a batch exporter that drops what it is given.
#[cfg(feature = "otel")]
mod otel {
    use lepus::otel::opentelemetry_sdk::error::OTelSdkResult;
    use lepus::otel::opentelemetry_sdk::trace::{SdkTracerProvider, SpanData, SpanExporter};

    /// Drops every span: the figure is the runtime's and the SDK's work, not a network's.
    #[derive(Debug)]
    struct Discard;

    impl SpanExporter for Discard {
        async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
            drop(batch);
            Ok(())
        }
    }

    pub(crate) fn install() -> Result<lepus::otel::OtelGuard, lepus::Error> {
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(Discard)
            .build();
        lepus::otel::install_with(provider)
    }
}

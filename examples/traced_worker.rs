//! A worker whose spans join its callers' traces, whatever their language (issue 17).
//!
//! ```sh
//! cargo run --release --example traced_worker -- --url amqp://guest:guest@127.0.0.1:5672/%2f
//! ```
//! A service gets this with `lepus = { version = "0.1", features = ["otel"] }` and one line of
//! setup (`lepus::otel::install("name")` with the `otlp` feature exports over OTLP; here a
//! provider without an exporter, since nothing collects the spans). It serves `trace_echo` on
//! `traced` (or `--queue`): the answer is the trace id and span id of the worker's own
//! `lepus.request` span, `<32 hex>-<16 hex>`. A request carrying a W3C `traceparent` header
//! (`tests/pika/test_traceparent.py` sends one from pika) gets back its own trace id. Prints
//! `serving <queue>` once it consumes, and stops on Ctrl-C, SIGTERM or after `--seconds`.

mod common;

use std::time::Duration;

use clap::Parser;
use lepus::otel::opentelemetry::trace::TraceContextExt;
use lepus::otel::opentelemetry_sdk::trace::SdkTracerProvider;
use lepus::otel::tracing_opentelemetry::OpenTelemetrySpanExt;
use lepus::{Context, Worker};

/// Answers with the trace id and span id of the span this request runs in.
#[lepus::rpc(queue = "traced")]
async fn trace_echo(ctx: Context) -> String {
    let otel = ctx.span().context();
    let span = otel.span();
    let ids = span.span_context();
    format!("{}-{}", ids.trace_id(), ids.span_id())
}

#[derive(Parser)]
#[command(about = "Serve trace_echo, answering with the worker span's trace id")]
struct Args {
    #[command(flatten)]
    broker: common::BrokerUrl,
    /// The queue to serve on.
    #[arg(long, default_value = "traced")]
    queue: String,
    /// Stop after this many seconds.
    #[arg(long, default_value_t = 60)]
    seconds: u64,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args = Args::parse();
    // The one line of setup: spans become OpenTelemetry spans, W3C trace context is read and
    // written, logs go to stderr under RUST_LOG. Dropping the guard flushes the exporter.
    let _otel = lepus::otel::install_with(SdkTracerProvider::builder().build())?;
    let conn = lepus::connect(&args.broker.url).await?;
    let mut worker = Worker::new(&conn)
        .serve(trace_echo::handler().on_queue(args.queue.clone()))
        .spawn();
    worker.ready(Duration::from_secs(30)).await?;
    println!("serving {}", args.queue);
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
        _ = tokio::time::sleep(Duration::from_secs(args.seconds)) => {}
    }
    worker.shutdown().await?;
    conn.close().await;
    Ok(())
}

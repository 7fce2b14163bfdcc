//! OpenTelemetry for Lepus in one call (the `otel` feature; `install` with the `otlp`
//! feature): makes the runtime's spans (see the README's "Observability") OpenTelemetry spans,
//! installs the W3C trace context propagator, and logs to stderr under `RUST_LOG`
//! (default `warn`).
//!
//! `let _otel = lepus::otel::install("billing")?;` exports over OTLP/HTTP to
//! `$OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4318`) and flushes the spans when
//! the guard is dropped. With a tracer provider of one's own (another exporter, a sampler, a
//! test's in-memory exporter):
//! ```no_run
//! use lepus_runtime::otel::{install_with, opentelemetry_sdk::trace::SdkTracerProvider};
//!
//! let provider = SdkTracerProvider::builder().build(); // add an exporter here
//! let _otel = install_with(provider)?;
//! # Ok::<(), lepus_runtime::Error>(())
//! ```
//! An application with its own `tracing_subscriber` stack adds [`layer`] to it instead.
//!
//! The crates are re-exported ([`opentelemetry`], [`opentelemetry_sdk`],
//! [`tracing_opentelemetry`]) so that an application builds its provider with the versions
//! Lepus was built with.

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing_subscriber::filter::LevelFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

use crate::error::Error;

pub use opentelemetry;
pub use opentelemetry_sdk;
pub use tracing_opentelemetry;

/// The instrumentation scope name of Lepus' spans.
pub const TRACER_NAME: &str = "lepus";

/// Keeps the tracer provider of `install` / [`install_with`]; dropping it flushes the spans
/// not exported yet and shuts the provider down.
#[derive(Debug)]
#[must_use = "dropping the guard shuts the exporter down"]
pub struct OtelGuard {
    provider: SdkTracerProvider,
}

impl OtelGuard {
    /// The tracer provider (to flush it at a moment of one's choosing).
    pub fn provider(&self) -> &SdkTracerProvider {
        &self.provider
    }
}

impl Drop for OtelGuard {
    fn drop(&mut self) {
        if let Err(cause) = self.provider.shutdown() {
            eprintln!("lepus: OpenTelemetry shutdown: {cause}");
        }
    }
}

/// A `tracing` layer that turns spans into OpenTelemetry spans of `provider`, for an
/// application that builds its own subscriber (`registry().with(lepus::otel::layer(&p))`).
pub fn layer<S>(provider: &SdkTracerProvider) -> impl Layer<S>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    tracing_opentelemetry::layer().with_tracer(provider.tracer(TRACER_NAME))
}

/// Sets up OpenTelemetry with `provider`: the global tracer provider and W3C trace context
/// propagator, and a global `tracing` subscriber with [`layer`] (spans at INFO and above) and a
/// stderr log filtered by `RUST_LOG` (default `warn`; the filter applies to the log only, so
/// `RUST_LOG=warn` keeps the spans). Fails if a global subscriber is already set.
pub fn install_with(provider: SdkTracerProvider) -> Result<OtelGuard, Error> {
    opentelemetry::global::set_text_map_propagator(TraceContextPropagator::new());
    opentelemetry::global::set_tracer_provider(provider.clone());
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    let log = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_filter(filter);
    tracing_subscriber::registry()
        .with(log)
        .with(layer(&provider).with_filter(LevelFilter::INFO))
        .try_init()
        .map_err(|e| Error::Config(format!("installing the tracing subscriber: {e}")))?;
    Ok(OtelGuard { provider })
}

/// [`install_with`] a provider that exports in batches over OTLP/HTTP (protobuf) to
/// `$OTEL_EXPORTER_OTLP_ENDPOINT` (default `http://localhost:4318`), naming the service
/// `service_name` (OpenTelemetry's `service.name`). The `otlp` feature.
#[cfg(feature = "otlp")]
pub fn install(service_name: &str) -> Result<OtelGuard, Error> {
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()
        .map_err(|e| Error::Config(format!("OTLP exporter: {e}")))?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name(service_name.to_owned())
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    install_with(provider)
}

//! The seed's routing (RabbitMQ tutorial 4, `emit_log_direct.py` /
//! `receive_logs_direct.py`): a direct exchange `direct_logs`; a message goes to the handlers
//! bound with its severity. Here one handler keeps errors only, another prints every severity.
//!
//! ```text
//! cargo run --example logs_direct                              # whole flow, in-process broker
//! cargo run --example logs_direct -- --url URL                 # same, on any broker
//! cargo run --example logs_direct -- --url URL receive errors  # or: receive all
//! cargo run --example logs_direct -- --url URL emit error "Run. Run. Or it will explode."
//! ```

mod common;

use clap::ValueEnum;
use common::logs;
use lepus::Handler;

/// Keeps errors only (`binding = "error"`).
#[lepus::event(
    exchange = "direct_logs",
    kind = "direct",
    binding = "error",
    delivery = "broadcast"
)]
async fn save_errors(line: String) {
    println!(" [errors] {line}");
}

/// Prints every severity (three bindings on one queue).
#[lepus::event(
    exchange = "direct_logs",
    kind = "direct",
    binding = ["info", "warning", "error"],
    delivery = "broadcast"
)]
async fn print_all(ctx: lepus::Context, line: String) {
    // The event's context: its routing key is the severity.
    let severity = ctx.routing_key().unwrap_or_default();
    println!(" [all] {severity}: {line}");
}

/// The handlers, by name on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// Errors only.
    Errors,
    /// Info, warning and error.
    All,
}

impl Which {
    /// The handler this name stands for.
    fn handler(self) -> Handler {
        match self {
            Which::Errors => save_errors::handler(),
            Which::All => print_all::handler(),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let about = "Direct logs: routing by severity";
    logs::routed_main::<print_all, _>(about, demo, Which::handler).await
}

/// Four lines of three severities: `save_errors` gets the two errors, `print_all` all four.
async fn demo(url: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut bed = common::demo_bed(url).await?;
    let mut errors = bed.serve(save_errors::handler()).await?;
    let mut all = bed.serve(print_all::handler()).await?;
    let lines = [
        ("info", "service started"),
        ("error", "disk full"),
        ("warning", "slow response"),
        ("error", "out of memory"),
    ];
    logs::send_all::<print_all>(bed.client(), lines).await?;
    let extra = logs::lines_beyond(&mut [(&mut all, 4), (&mut errors, 2)]).await?;
    println!(
        "print_all got 4 lines; save_errors got {} errors",
        2 + extra
    );
    common::finish(bed, extra == 0, "save_errors received a non-error line").await
}

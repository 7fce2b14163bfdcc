//! The seed's topics (RabbitMQ tutorial 5, `emit_log_topic.py` / `receive_logs_topic.py`): a
//! topic exchange `topic_logs` with `<facility>.<severity>` routing keys; bindings match words
//! (`*` exactly one, `#` zero or more).
//!
//! ```text
//! cargo run --example logs_topic                                  # whole flow, in-process broker
//! cargo run --example logs_topic -- --url URL                     # same, on any broker
//! cargo run --example logs_topic -- --url URL receive kern        # kern.* ; or critical, all
//! cargo run --example logs_topic -- --url URL emit kern.critical "A critical kernel error"
//! ```

mod common;

use clap::ValueEnum;
use common::logs;
use lepus::Handler;

/// A handler on `topic_logs` bound with `binding`: prints each line it gets, with its key.
/// The three below differ in their binding only. (`binding` is a `tt`, not a `literal`: the
/// attribute reads it as a plain string literal.)
macro_rules! topic_handler {
    ($(#[$doc:meta])* $name:ident, $binding:tt) => {
        $(#[$doc])*
        #[lepus::event(
            exchange = "topic_logs",
            kind = "topic",
            binding = $binding,
            delivery = "broadcast"
        )]
        async fn $name(ctx: lepus::Context, line: String) {
            let key = ctx.routing_key().unwrap_or_default();
            println!(" [{}] {key}: {line}", $binding);
        }
    };
}

topic_handler!(
    /// Everything from the kernel: `kern.*`.
    kernel,
    "kern.*"
);
topic_handler!(
    /// Critical messages from anywhere: `*.critical`.
    critical,
    "*.critical"
);
topic_handler!(
    /// Everything: `#`.
    everything,
    "#"
);

/// The handlers, by binding on the command line.
#[derive(Clone, Copy, ValueEnum)]
enum Which {
    /// `kern.*`
    Kern,
    /// `*.critical`
    Critical,
    /// `#`
    All,
}

impl Which {
    /// The handler this name stands for.
    fn handler(self) -> Handler {
        match self {
            Which::Kern => kernel::handler(),
            Which::Critical => critical::handler(),
            Which::All => everything::handler(),
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let about = "Topic logs: routing by pattern";
    logs::routed_main::<everything, _>(about, demo, Which::handler).await
}

/// Four keys, three bindings: who gets what follows the patterns.
async fn demo(url: Option<&str>) -> Result<(), Box<dyn std::error::Error>> {
    let mut bed = common::demo_bed(url).await?;
    let mut kern = bed.serve(kernel::handler()).await?;
    let mut crit = bed.serve(critical::handler()).await?;
    let mut all = bed.serve(everything::handler()).await?;
    let lines = [
        ("kern.critical", "A critical kernel error"),
        ("kern.info", "kernel booted"),
        ("cron.critical", "cron died"),
        ("app.audit.login", "user logged in"),
    ];
    logs::send_all::<everything>(bed.client(), lines).await?;
    // kern.* matches 2, *.critical 2, # all 4.
    let expected = &mut [(&mut kern, 2), (&mut crit, 2), (&mut all, 4)];
    let extra = logs::lines_beyond(expected).await?;
    println!("kern.* got 2, *.critical got 2, # got 4");
    let failure = "a handler received a line its binding does not match";
    common::finish(bed, extra == 0, failure).await
}

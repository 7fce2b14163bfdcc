//! The `fanout` scenario: one producer publishes to a fanout exchange bound to N queues, one
//! consumer per queue; "out" counts every copy delivered.

use crate::amqp::run_prefix;
use crate::cli::{Cli, FanoutArgs};
use crate::error::{BenchError, Result};
use crate::producer::Target;
use crate::report::Report;
use crate::throughput::{run_flow, Topology};

/// Runs `fanout`.
pub(crate) async fn fanout(cli: &Cli, args: &FanoutArgs) -> Result<Report> {
    if args.queues == 0 {
        return Err(BenchError::BadOptions("--queues must be ≥ 1".into()));
    }
    let prefix = run_prefix();
    let queues: Vec<String> = (0..args.queues).map(|i| format!("{prefix}-q{i}")).collect();
    let exchange = format!("{prefix}-fanout");
    let topo = Topology {
        producers: vec![Target {
            exchange: exchange.clone(),
            routing_key: String::new(),
        }],
        consumers: queues.clone(),
        copies: queues.len() as u64,
        queues,
        fanout: Some(exchange),
    };
    run_flow(
        cli,
        "fanout",
        serde_json::to_value(args)?,
        &args.flow,
        topo,
        false,
    )
    .await
}

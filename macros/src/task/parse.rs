//! Reads `#[lepus::task(queue = "emails", retries = 5, backoff = "1s..5m", time_limit = "30s",
//! max_priority = 9, dead_letter_queue = "...", quorum = true, name = "...", blocking = true,
//! cancellable = true, rate_limit = "20/s", result_ttl = "1h")]`.

use std::time::Duration;

use proc_macro2::{Span, TokenStream};
use syn::LitStr;

use super::attr;
use crate::rpc::parse::{Errors, QueueName};

/// The keys `#[lepus::task]` accepts.
const KEYS: &[&str] = &[
    "queue",
    "name",
    "retries",
    "backoff",
    "time_limit",
    "max_priority",
    "dead_letter_queue",
    "quorum",
    "blocking",
    "cancellable",
    "rate_limit",
    "result_ttl",
];

/// The attribute's arguments.
#[derive(Default)]
pub(crate) struct TaskArgs {
    pub(crate) queue: Option<QueueName>,
    pub(crate) name: Option<LitStr>,
    pub(crate) retries: Option<u32>,
    pub(crate) backoff: Option<(Duration, Duration)>,
    pub(crate) time_limit: Option<Duration>,
    pub(crate) max_priority: Option<u8>,
    pub(crate) dead_letter_queue: Option<LitStr>,
    pub(crate) quorum: bool,
    pub(crate) blocking: bool,
    pub(crate) cancellable: bool,
    /// `(count, period in seconds)`.
    pub(crate) rate_limit: Option<(u32, u64)>,
    pub(crate) result_ttl: Option<Duration>,
}

/// Parses the attribute, reporting every problem at its token (combined).
pub(crate) fn parse_args(attr: TokenStream) -> syn::Result<TaskArgs> {
    let mut errors = Errors::default();
    let pairs = attr::pairs(attr, "#[lepus::task]", KEYS, &mut errors)?;
    let mut args = TaskArgs::default();
    for pair in &pairs {
        let result = match pair.key.as_str() {
            "queue" => QueueName::parse(&pair.value, "queue").map(|v| args.queue = Some(v)),
            "name" => attr::short_string(pair).map(|v| args.name = Some(v)),
            "dead_letter_queue" => {
                attr::short_string(pair).map(|v| args.dead_letter_queue = Some(v))
            }
            "retries" => attr::int::<u32>(pair).map(|v| args.retries = Some(v)),
            "max_priority" => attr::int::<u8>(pair).map(|v| args.max_priority = Some(v)),
            "backoff" => attr::duration_range(pair).map(|v| args.backoff = Some(v)),
            "time_limit" => attr::positive_duration(pair).map(|v| args.time_limit = Some(v)),
            "quorum" => attr::boolean(pair).map(|v| args.quorum = v),
            "blocking" => attr::boolean(pair).map(|v| args.blocking = v),
            "cancellable" => attr::boolean(pair).map(|v| args.cancellable = v),
            "rate_limit" => attr::rate_limit(pair).map(|v| args.rate_limit = Some(v)),
            "result_ttl" => attr::positive_duration(pair).map(|v| args.result_ttl = Some(v)),
            _ => Err(syn::Error::new_spanned(&pair.path, "unknown key")),
        };
        if let Err(err) = result {
            errors.push(err);
        }
    }
    if args.queue.is_none() && !pairs.iter().any(|p| p.key == "queue") {
        errors.push(syn::Error::new(
            Span::call_site(),
            "missing `queue = \"...\"`: #[lepus::task] needs the queue to enqueue the task on",
        ));
    }
    errors.finish()?;
    Ok(args)
}

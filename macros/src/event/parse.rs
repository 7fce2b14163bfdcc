//! Reads `#[lepus::event(exchange = "logs", kind = "topic", binding = ["kern.*", "*.critical"],
//! delivery = "pool" | "broadcast", queue = "...", name = "...", time_limit = "30s",
//! blocking = true)]`.

use proc_macro2::{Span, TokenStream};
use syn::LitStr;

use crate::rpc::parse::{Errors, QueueName};
use crate::task::attr;

/// The keys `#[lepus::event]` accepts.
const KEYS: &[&str] = &[
    "exchange",
    "kind",
    "binding",
    "delivery",
    "queue",
    "name",
    "time_limit",
    "blocking",
];

/// The exchange types.
#[derive(Clone, Copy)]
pub(crate) enum Kind {
    Fanout,
    Direct,
    Topic,
}

/// The attribute's arguments.
pub(crate) struct EventArgs {
    pub(crate) exchange: LitStr,
    pub(crate) kind: Kind,
    pub(crate) bindings: Vec<LitStr>,
    pub(crate) broadcast: bool,
    pub(crate) queue: Option<QueueName>,
    pub(crate) name: Option<LitStr>,
    pub(crate) time_limit: Option<std::time::Duration>,
    pub(crate) blocking: bool,
}

/// Parses the attribute, reporting every problem at its token (combined).
pub(crate) fn parse_args(attr: TokenStream) -> syn::Result<EventArgs> {
    let mut errors = Errors::default();
    let pairs = attr::pairs(attr, "#[lepus::event]", KEYS, &mut errors)?;
    let mut exchange = None;
    let mut kind = None;
    let mut bindings = Vec::new();
    let mut broadcast = false;
    let mut queue = None;
    let mut name = None;
    let mut time_limit = None;
    let mut blocking = false;
    for pair in &pairs {
        let result = match pair.key.as_str() {
            "exchange" => attr::short_string(pair).map(|v| exchange = Some(v)),
            "queue" => QueueName::parse(&pair.value, "queue").map(|v| queue = Some(v)),
            "name" => attr::short_string(pair).map(|v| name = Some(v)),
            "binding" => attr::string_list(pair).map(|v| bindings = v),
            "time_limit" => attr::positive_duration(pair).map(|v| time_limit = Some(v)),
            "blocking" => attr::boolean(pair).map(|v| blocking = v),
            "kind" => attr::short_string(pair).and_then(|v| {
                kind = Some(match v.value().as_str() {
                    "fanout" => Kind::Fanout,
                    "direct" => Kind::Direct,
                    "topic" => Kind::Topic,
                    _ => {
                        return Err(syn::Error::new_spanned(
                            &v,
                            "`kind` must be \"fanout\", \"direct\" or \"topic\"",
                        ))
                    }
                });
                Ok(())
            }),
            "delivery" => attr::short_string(pair).and_then(|v| {
                broadcast = match v.value().as_str() {
                    "pool" => false,
                    "broadcast" => true,
                    _ => {
                        return Err(syn::Error::new_spanned(
                            &v,
                            "`delivery` must be \"pool\" (one queue per service) or \
                             \"broadcast\" (one queue per running instance)",
                        ))
                    }
                };
                Ok(())
            }),
            _ => Err(syn::Error::new_spanned(&pair.path, "unknown key")),
        };
        if let Err(err) = result {
            errors.push(err);
        }
    }
    if exchange.is_none() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "missing `exchange = \"...\"`: #[lepus::event] needs the exchange to listen to",
        ));
    }
    if kind.is_none() && !pairs.iter().any(|p| p.key == "kind") {
        errors.push(syn::Error::new(
            Span::call_site(),
            "missing `kind = \"fanout\" | \"direct\" | \"topic\"`",
        ));
    }
    if matches!(kind, Some(Kind::Direct | Kind::Topic)) && bindings.is_empty() {
        errors.push(syn::Error::new(
            Span::call_site(),
            "missing `binding = \"...\"`: a direct or topic handler needs binding keys",
        ));
    }
    errors.finish()?;
    match (exchange, kind) {
        (Some(exchange), Some(kind)) => Ok(EventArgs {
            exchange,
            kind,
            bindings,
            broadcast,
            queue,
            name,
            time_limit,
            blocking,
        }),
        _ => Err(syn::Error::new(
            Span::call_site(),
            "missing `exchange` or `kind`",
        )),
    }
}

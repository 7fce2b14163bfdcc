//! Exchanges: their declared attributes, their bindings, and routing for each exchange type.
//!
//! An exchange lives in its vhost's topology (`crate::vhost::Topology`, behind the vhost's
//! `RwLock`). Its bindings carry their own routing index ([`Bindings`]: a key lookup for
//! direct, a trie automaton for topic, see `topic`); exchange-to-exchange bindings and
//! alternate exchanges are followed by the vhost (`VHost::route`).

mod bindings;
mod topic;

pub(crate) use bindings::Bindings;

use amq_protocol::types::{AMQPValue, FieldTable};

use crate::field_value::string_field;
use crate::persistence::{BindingChange, ExchangeDeclared};

/// The four exchange types of AMQP 0-9-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) enum ExchangeKind {
    /// Routes to bindings whose key equals the routing key.
    Direct,
    /// Routes to every binding.
    Fanout,
    /// Routes by dotted-word patterns: `*` is one word, `#` zero or more.
    Topic,
    /// Routes by message headers against binding arguments (`x-match` all/any).
    Headers,
}

impl ExchangeKind {
    /// Parses the `type` field of `exchange.declare`.
    pub(crate) fn parse(kind: &str) -> Option<Self> {
        match kind {
            "direct" => Some(Self::Direct),
            "fanout" => Some(Self::Fanout),
            "topic" => Some(Self::Topic),
            "headers" => Some(Self::Headers),
            _ => None,
        }
    }

    /// The type's name as clients spell it.
    pub(crate) fn name(self) -> &'static str {
        match self {
            Self::Direct => "direct",
            Self::Fanout => "fanout",
            Self::Topic => "topic",
            Self::Headers => "headers",
        }
    }
}

/// Where a binding leads.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Destination {
    /// A queue, by name.
    Queue(String),
    /// An exchange (exchange-to-exchange binding), by name.
    Exchange(String),
}

/// One binding from an exchange (the source) to a destination.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Binding {
    /// The queue or exchange the binding leads to.
    pub(crate) destination: Destination,
    /// The binding key (a pattern for topic exchanges).
    pub(crate) routing_key: String,
    /// Binding arguments (the match table for headers exchanges).
    pub(crate) arguments: FieldTable,
}

/// A declared exchange.
#[derive(Debug)]
pub(crate) struct Exchange {
    /// Its name (`""` is the default exchange).
    pub(crate) name: String,
    /// Its type.
    pub(crate) kind: ExchangeKind,
    /// Survives a restart (recorded for the durability work; not acted on here).
    pub(crate) durable: bool,
    /// Deleted when its last binding as a source goes away.
    pub(crate) auto_delete: bool,
    /// Clients may not publish to it directly (403), only through e2e bindings.
    pub(crate) internal: bool,
    /// `alternate-exchange`: where messages this exchange cannot route go.
    pub(crate) alternate: Option<String>,
    /// Bindings with this exchange as source, in creation order, with their routing index.
    pub(crate) bindings: Bindings,
    /// The declare's arguments as given (the management API and definitions show them).
    pub(crate) arguments: FieldTable,
}

impl Exchange {
    /// A new exchange without bindings.
    pub(crate) fn new(
        name: &str,
        kind: ExchangeKind,
        durable: bool,
        auto_delete: bool,
        internal: bool,
        arguments: FieldTable,
    ) -> Self {
        let alternate = string_field(&arguments, "alternate-exchange");
        Self {
            name: name.to_owned(),
            kind,
            durable,
            auto_delete,
            internal,
            alternate,
            bindings: Bindings::new(kind),
            arguments,
        }
    }

    /// This exchange as the store records its declaration.
    pub(crate) fn declared(&self) -> ExchangeDeclared<'_> {
        ExchangeDeclared {
            name: &self.name,
            kind: self.kind.name(),
            auto_delete: self.auto_delete,
            internal: self.internal,
            arguments: &self.arguments,
        }
    }
}

impl Binding {
    /// This binding from exchange `source`, as the store records it.
    pub(crate) fn change<'a>(&'a self, source: &'a str) -> BindingChange<'a> {
        let (to_exchange, destination) = match &self.destination {
            Destination::Queue(name) => (false, name),
            Destination::Exchange(name) => (true, name),
        };
        BindingChange {
            source,
            to_exchange,
            destination,
            routing_key: &self.routing_key,
            arguments: &self.arguments,
        }
    }
}

/// How a headers-exchange binding matches, read once from its `x-match` argument: `all`
/// (default) or `any`, and whether `x-` arguments take part (`all-with-x`/`any-with-x`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct HeadersRule {
    /// `any` rather than `all`.
    any: bool,
    /// `x-` arguments are compared too.
    with_x: bool,
}

impl HeadersRule {
    /// The rule of binding `arguments`.
    pub(crate) fn of(arguments: &FieldTable) -> Self {
        let mode = match arguments.inner().get("x-match") {
            Some(AMQPValue::LongString(s)) => s.as_bytes(),
            Some(AMQPValue::ShortString(s)) => s.as_str().as_bytes(),
            _ => b"all",
        };
        let (any, with_x) = match mode {
            b"any" => (true, false),
            b"any-with-x" => (true, true),
            b"all-with-x" => (false, true),
            _ => (false, false),
        };
        Self { any, with_x }
    }
}

/// Headers matching as RabbitMQ does: binding arguments starting with `x-` are ignored;
/// `x-match` is `all` (default) or `any` (also `all-with-x`/`any-with-x`, which include `x-`
/// keys); an argument of type void matches on presence alone.
#[cfg(test)]
pub(crate) fn headers_match(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    headers_match_rule(arguments, HeadersRule::of(arguments), headers)
}

/// [`headers_match`] with the binding's rule already read.
pub(crate) fn headers_match_rule(
    arguments: &FieldTable,
    rule: HeadersRule,
    headers: Option<&FieldTable>,
) -> bool {
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut checks = arguments
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (rule.with_x || !k.as_str().starts_with("x-")))
        .map(|(k, v)| match (headers.get(k.as_str()), v) {
            (Some(_), AMQPValue::Void) => true,
            (Some(h), v) => values_equal(h, v),
            (None, _) => false,
        });
    if rule.any {
        checks.any(|ok| ok)
    } else {
        checks.all(|ok| ok)
    }
}

/// Equality that treats short and long strings with the same bytes as equal (clients differ in
/// which one they send for string headers).
fn values_equal(a: &AMQPValue, b: &AMQPValue) -> bool {
    match (a, b) {
        (AMQPValue::LongString(x), AMQPValue::ShortString(y))
        | (AMQPValue::ShortString(y), AMQPValue::LongString(x)) => {
            x.as_bytes() == y.as_str().as_bytes()
        }
        _ => a == b,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn headers_all_and_any() {
        let mut args = FieldTable::default();
        args.insert("format".into(), AMQPValue::LongString("pdf".into()));
        args.insert("type".into(), AMQPValue::LongString("report".into()));
        let mut h = FieldTable::default();
        h.insert("format".into(), AMQPValue::LongString("pdf".into()));
        assert!(!headers_match(&args, Some(&h)));
        args.insert("x-match".into(), AMQPValue::LongString("any".into()));
        assert!(headers_match(&args, Some(&h)));
        assert!(!headers_match(&args, None));
        h.insert("type".into(), AMQPValue::ShortString("report".into()));
        args.insert("x-match".into(), AMQPValue::LongString("all".into()));
        assert!(headers_match(&args, Some(&h)));
    }
}

//! Exchanges: their declared attributes, their bindings, and routing for each exchange type.
//!
//! An exchange lives in its vhost's topology (`crate::vhost::Topology`, behind the vhost's
//! `RwLock`); routing only reads it. Exchange-to-exchange bindings and alternate exchanges are
//! followed by the vhost (`VHost::route`), which calls [`Exchange::route_into`] per exchange.

use amq_protocol::types::{AMQPValue, FieldTable};

/// The four exchange types of AMQP 0-9-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
    /// Bindings with this exchange as source, in creation order.
    pub(crate) bindings: Vec<Binding>,
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
        let alternate = match arguments.inner().get("alternate-exchange") {
            Some(AMQPValue::LongString(s)) => Some(String::from_utf8_lossy(s.as_bytes()).into()),
            Some(AMQPValue::ShortString(s)) => Some(s.as_str().to_owned()),
            _ => None,
        };
        Self {
            name: name.to_owned(),
            kind,
            durable,
            auto_delete,
            internal,
            alternate,
            bindings: Vec::new(),
            arguments,
        }
    }

    /// Appends the destinations of every binding that matches to `out`.
    pub(crate) fn route_into<'a>(
        &'a self,
        routing_key: &str,
        headers: Option<&FieldTable>,
        out: &mut Vec<&'a Destination>,
    ) {
        for binding in &self.bindings {
            let matched = match self.kind {
                ExchangeKind::Direct => binding.routing_key == routing_key,
                ExchangeKind::Fanout => true,
                ExchangeKind::Topic => topic_matches(&binding.routing_key, routing_key),
                ExchangeKind::Headers => headers_match(&binding.arguments, headers),
            };
            if matched {
                out.push(&binding.destination);
            }
        }
    }
}

/// Topic matching: words are separated by `.`; `*` matches exactly one word, `#` zero or more.
pub(crate) fn topic_matches(pattern: &str, key: &str) -> bool {
    // An empty key or pattern has zero words (not one empty word), as in RabbitMQ.
    let pattern = topic_words_of(pattern);
    let key = topic_words_of(key);
    topic_words(&pattern, &key)
}

fn topic_words_of(s: &str) -> Vec<&str> {
    if s.is_empty() {
        Vec::new()
    } else {
        s.split('.').collect()
    }
}

fn topic_words(pattern: &[&str], key: &[&str]) -> bool {
    match pattern.split_first() {
        None => key.is_empty(),
        Some((&"#", rest)) => (0..=key.len()).any(|skip| topic_words(rest, &key[skip..])),
        Some((&word, rest)) => match key.split_first() {
            Some((first, key_rest)) => {
                (word == "*" || word == *first) && topic_words(rest, key_rest)
            }
            None => false,
        },
    }
}

/// Headers matching as RabbitMQ does: binding arguments starting with `x-` are ignored;
/// `x-match` is `all` (default) or `any` (also `all-with-x`/`any-with-x`, which include `x-`
/// keys); an argument of type void matches on presence alone.
pub(crate) fn headers_match(arguments: &FieldTable, headers: Option<&FieldTable>) -> bool {
    let mode = match arguments.inner().get("x-match") {
        Some(AMQPValue::LongString(s)) => String::from_utf8_lossy(s.as_bytes()).into_owned(),
        Some(AMQPValue::ShortString(s)) => s.as_str().to_owned(),
        _ => "all".to_owned(),
    };
    let (any, with_x) = match mode.as_str() {
        "any" => (true, false),
        "any-with-x" => (true, true),
        "all-with-x" => (false, true),
        _ => (false, false),
    };
    let empty = FieldTable::default();
    let headers = headers.unwrap_or(&empty).inner();
    let mut checks = arguments
        .inner()
        .iter()
        .filter(|(k, _)| k.as_str() != "x-match" && (with_x || !k.as_str().starts_with("x-")))
        .map(|(k, v)| match (headers.get(k.as_str()), v) {
            (Some(_), AMQPValue::Void) => true,
            (Some(h), v) => values_equal(h, v),
            (None, _) => false,
        });
    if any {
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
    fn topic_hash_matches_zero_or_more_words_and_star_exactly_one() {
        assert!(topic_matches("a.#", "a"));
        assert!(topic_matches("a.#", "a.b.c"));
        assert!(topic_matches("#", ""));
        assert!(topic_matches("#.b", "b"));
        assert!(topic_matches("a.#.c", "a.c"));
        assert!(topic_matches("*.orange.*", "quick.orange.rabbit"));
        assert!(!topic_matches("*.orange.*", "orange.rabbit"));
        assert!(!topic_matches("*.orange.*", "a.quick.orange.rabbit"));
        assert!(!topic_matches("a.*", "a"));
        assert!(topic_matches("lazy.#", "lazy.orange.male.rabbit"));
        assert!(!topic_matches("*", ""));
        assert!(topic_matches("", ""));
        assert!(!topic_matches("", "a"));
    }

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

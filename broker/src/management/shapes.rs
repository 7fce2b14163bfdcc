//! RabbitMQ's JSON shapes of exchanges and bindings (and the `properties_key` that names a
//! binding, and `amq.default`, the path name of the default exchange), shared by the read
//! routes (`api`), the topology write routes (`topology`) and publishing (`messages`).

use serde_json::{json, Value};

use super::field_table;
use crate::exchange::Destination;
use crate::vhost::VHost;

/// An exchange in RabbitMQ's shape (the default exchange is named `""`, as RabbitMQ lists it).
pub(crate) fn exchange_json(vh: &VHost, x: &crate::exchange::Exchange) -> Value {
    json!({
        "name": x.name,
        "vhost": vh.name,
        "type": x.kind.name(),
        "durable": x.durable,
        "auto_delete": x.auto_delete,
        "internal": x.internal,
        "arguments": field_table::to_json(&x.arguments),
    })
}

/// The exchange a path segment names: the API names the default exchange `amq.default`.
pub(crate) fn exchange_name(name: &str) -> &str {
    if name == "amq.default" {
        ""
    } else {
        name
    }
}

/// The key that names a binding among those between the same source and destination
/// (RabbitMQ's `properties_key`, the last segment of `/api/bindings/.../{props}`): the routing
/// key (`~` when empty), then, when the binding has arguments, `~` and a digest of them.
/// RabbitMQ's digest is another one; clients treat the key as opaque.
pub(crate) fn properties_key(
    routing_key: &str,
    arguments: &amq_protocol::types::FieldTable,
) -> String {
    let base = if routing_key.is_empty() {
        "~".to_owned()
    } else {
        routing_key.to_owned()
    };
    if arguments.inner().is_empty() {
        base
    } else {
        let digest = crc32fast::hash(field_table::to_json(arguments).to_string().as_bytes());
        format!("{base}~{digest:08x}")
    }
}

/// One binding in RabbitMQ's shape.
pub(crate) fn binding_json(vhost: &str, source: &str, b: &crate::exchange::Binding) -> Value {
    let (dest, kind) = match &b.destination {
        Destination::Queue(q) => (q.as_str(), "queue"),
        Destination::Exchange(e) => (e.as_str(), "exchange"),
    };
    json!({
        "source": source, "vhost": vhost, "destination": dest,
        "destination_type": kind, "routing_key": b.routing_key,
        "arguments": field_table::to_json(&b.arguments),
        "properties_key": properties_key(&b.routing_key, &b.arguments),
    })
}

/// The bindings of `vh` that `keep` accepts (given source, destination, destination type),
/// the default exchange's implicit ones first, as RabbitMQ lists them.
pub(crate) fn bindings_of(vh: &VHost, keep: impl Fn(&str, &str, &str) -> bool) -> Vec<Value> {
    let mut out = Vec::new();
    let topo = vh.read();
    let mut names: Vec<_> = topo.queues.keys().cloned().collect();
    names.sort();
    for q in names {
        if keep("", &q, "queue") {
            out.push(json!({
                "source": "", "vhost": vh.name, "destination": q,
                "destination_type": "queue", "routing_key": q, "arguments": {},
                "properties_key": q,
            }));
        }
    }
    let mut xs: Vec<_> = topo.exchanges.values().collect();
    xs.sort_by(|a, b| a.name.cmp(&b.name));
    for x in xs {
        for b in &x.bindings {
            let (dest, kind) = match &b.destination {
                Destination::Queue(q) => (q.as_str(), "queue"),
                Destination::Exchange(e) => (e.as_str(), "exchange"),
            };
            if keep(&x.name, dest, kind) {
                out.push(binding_json(&vh.name, &x.name, b));
            }
        }
    }
    out
}

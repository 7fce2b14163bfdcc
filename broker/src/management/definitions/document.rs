//! The definitions document as RabbitMQ writes it (`GET /api/definitions`): users, vhosts,
//! permissions, queues, exchanges and bindings, every section optional and unknown keys ignored.

use super::*;

/// A definitions document; every section optional, unknown keys ignored.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
pub(crate) struct DefinitionsJson {
    pub(super) users: Vec<UserJson>,
    pub(super) vhosts: Vec<VHostJson>,
    pub(super) permissions: Vec<PermissionJson>,
    pub(super) topic_permissions: Vec<Value>,
    pub(super) parameters: Vec<Value>,
    pub(super) global_parameters: Vec<Value>,
    pub(super) policies: Vec<Value>,
    pub(super) queues: Vec<QueueJson>,
    pub(super) exchanges: Vec<ExchangeJson>,
    pub(super) bindings: Vec<BindingJson>,
}

#[derive(Debug, Deserialize)]
pub(super) struct UserJson {
    pub(super) name: String,
    #[serde(default)]
    pub(super) password_hash: Option<String>,
    #[serde(default)]
    pub(super) password: Option<String>,
    #[serde(default)]
    pub(super) hashing_algorithm: Option<String>,
    /// A list, or a comma-separated string (RabbitMQ before 3.10 wrote a string).
    #[serde(default)]
    pub(super) tags: Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct VHostJson {
    pub(super) name: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct PermissionJson {
    pub(super) user: String,
    pub(super) vhost: String,
    pub(super) configure: String,
    pub(super) write: String,
    pub(super) read: String,
}

#[derive(Debug, Deserialize)]
pub(super) struct QueueJson {
    pub(super) name: String,
    #[serde(default)]
    pub(super) vhost: Option<String>,
    #[serde(default = "yes")]
    pub(super) durable: bool,
    #[serde(default)]
    pub(super) auto_delete: bool,
    #[serde(default)]
    pub(super) arguments: Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct ExchangeJson {
    pub(super) name: String,
    #[serde(default)]
    pub(super) vhost: Option<String>,
    #[serde(rename = "type")]
    pub(super) kind: String,
    #[serde(default = "yes")]
    pub(super) durable: bool,
    #[serde(default)]
    pub(super) auto_delete: bool,
    #[serde(default)]
    pub(super) internal: bool,
    #[serde(default)]
    pub(super) arguments: Value,
}

#[derive(Debug, Deserialize)]
pub(super) struct BindingJson {
    pub(super) source: String,
    #[serde(default)]
    pub(super) vhost: Option<String>,
    pub(super) destination: String,
    pub(super) destination_type: String,
    #[serde(default)]
    pub(super) routing_key: String,
    #[serde(default)]
    pub(super) arguments: Value,
}

pub(super) fn yes() -> bool {
    true
}

/// Tags as RabbitMQ writes them: a list, or one comma-separated string.
pub(super) fn tags_of(v: &Value) -> Vec<String> {
    match v {
        Value::String(s) => s
            .split(',')
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .collect(),
        Value::Array(items) => items
            .iter()
            .filter_map(Value::as_str)
            .map(str::to_owned)
            .collect(),
        _ => Vec::new(),
    }
}

//! The unit tests of `management/definitions.rs`.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn tags_come_as_a_list_or_a_comma_separated_string() {
    assert_eq!(
        tags_of(&json!("administrator, monitoring")),
        ["administrator", "monitoring"]
    );
    assert_eq!(tags_of(&json!(["management"])), ["management"]);
    assert!(tags_of(&json!("")).is_empty());
    assert!(tags_of(&Value::Null).is_empty());
}

#[test]
fn a_rabbitmq_export_parses_with_unknown_keys_and_missing_sections() {
    let defs = parse(
        br#"{"rabbit_version":"3.10.8","users":[{"name":"u","password_hash":"x","hashing_algorithm":"rabbit_password_hashing_sha256","tags":["administrator"],"limits":{}}],
            "queues":[{"name":"q","vhost":"/","durable":true,"auto_delete":false,"arguments":{"x-queue-type":"quorum"}}]}"#,
    )
    .unwrap();
    assert_eq!(defs.users.len(), 1);
    assert_eq!(defs.queues[0].arguments, json!({"x-queue-type": "quorum"}));
    assert!(defs.bindings.is_empty());
    assert!(parse(b"[]").is_err());
    assert!(
        parse(b"{\"queues\": [{\"vhost\": \"/\"}]}").is_err(),
        "a queue needs a name"
    );
}

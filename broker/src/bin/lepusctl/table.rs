//! rabbitmqctl's output: a header row and one tab-separated row per item.

use serde_json::Value;

/// Renders one JSON value as rabbitmqctl prints a cell.
pub(crate) fn cell(v: Option<&Value>) -> String {
    match v {
        None | Some(Value::Null) => String::new(),
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(items)) => format!(
            "[{}]",
            items
                .iter()
                .map(|i| cell(Some(i)))
                .collect::<Vec<_>>()
                .join(", ")
        ),
        Some(Value::Object(map)) if map.is_empty() => "[]".to_owned(),
        Some(other) => other.to_string(),
    }
}

/// Prints a header row and one row per item, tab separated.
pub(crate) fn table(
    items: &Value,
    columns: &[&str],
    value: impl Fn(&Value, &str) -> Option<Value>,
) {
    println!("{}", columns.join("\t"));
    for item in items.as_array().map(Vec::as_slice).unwrap_or_default() {
        let row: Vec<String> = columns
            .iter()
            .map(|c| cell(value(item, c).as_ref()))
            .collect();
        println!("{}", row.join("\t"));
    }
}

pub(crate) fn field(item: &Value, c: &str) -> Option<Value> {
    item.get(c).cloned()
}

pub(crate) fn columns<'a>(given: &'a [String], default: &[&'a str]) -> Vec<&'a str> {
    if given.is_empty() {
        default.to_vec()
    } else {
        given.iter().map(String::as_str).collect()
    }
}

//! The unit tests of `management/rabbitmq_metrics.rs`.

use super::*;

#[test]
fn bucket_bounds_are_written_as_prometheus_normalizes_them() {
    let written: Vec<String> = SIZE_BUCKETS.iter().map(|&b| prometheus_float(b)).collect();
    assert_eq!(
        written,
        ["100.0", "1000.0", "10000.0", "100000.0", "1e+06", "1e+07", "5e+07", "1e+08"]
    );
}

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}

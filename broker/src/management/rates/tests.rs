//! The unit tests of `management/rates.rs`.

#![allow(clippy::unwrap_used)]

use super::*;

#[test]
fn the_rate_is_the_last_difference_over_the_last_interval() {
    let series = [(1_000, 10), (6_000, 60), (11_000, 110)];
    assert_eq!(details(&series, None, true), json!({"rate": 10.0}));
    // A counter that went down (its queue was replaced) is not a negative rate.
    assert_eq!(
        details(&[(0, 50), (5_000, 0)], None, true),
        json!({"rate": 0.0})
    );
    // A length may fall.
    assert_eq!(
        details(&[(0, 50), (5_000, 0)], None, false),
        json!({"rate": -10.0})
    );
    assert_eq!(details(&[], None, true), json!({"rate": 0.0}));
}

#[test]
fn samples_are_newest_first_within_the_age_at_the_increment() {
    let series: Vec<(u64, u64)> = (0..10).map(|i| (i * 5_000, i * 5)).collect();
    let w = Window {
        age_ms: 20_000,
        incr_ms: 10_000,
    };
    let d = details(&series, Some(w), true);
    let times: Vec<u64> = d["samples"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["timestamp"].as_u64().unwrap())
        .collect();
    assert_eq!(times, vec![45_000, 35_000, 25_000]);
    assert_eq!(d["avg_rate"], json!(1.0));
    assert_eq!(d["avg"], json!(35.0));
}

#[test]
fn a_late_or_early_sample_is_still_picked() {
    // The sampler ran 10 ms late once and on time after: every sample counts at an
    // increment of one interval, every other one at two, and the oldest is within the age.
    let series = [(0, 0), (5_000, 5), (9_990, 10), (15_000, 15), (20_005, 20)];
    let times = |d: Value| -> Vec<u64> {
        d["samples"]
            .as_array()
            .unwrap()
            .iter()
            .map(|s| s["timestamp"].as_u64().unwrap())
            .collect()
    };
    let every = Window {
        age_ms: 20_000,
        incr_ms: 5_000,
    };
    assert_eq!(
        times(details(&series, Some(every), true)),
        vec![20_005, 15_000, 9_990, 5_000, 0]
    );
    let every_other = Window {
        age_ms: 20_000,
        incr_ms: 10_000,
    };
    assert_eq!(
        times(details(&series, Some(every_other), true)),
        vec![20_005, 9_990, 0]
    );
}

#[test]
fn rings_are_bounded() {
    let mut ring = VecDeque::new();
    for i in 0..(QUEUE_SAMPLES * 3) {
        push(&mut ring, i, QUEUE_SAMPLES);
    }
    assert_eq!(ring.len(), QUEUE_SAMPLES);
    assert_eq!(ring.front(), Some(&(QUEUE_SAMPLES * 2)));
}

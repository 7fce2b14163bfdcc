//! Issue 13, Done means 3: the topic matcher's routing time against keys of 1 to 128 words
//! (`a.a.a...`, up to 255 bytes) for patterns full of `#`, one binding and many.
//!
//! Run: `cargo bench -p lepus-broker --features fuzzing --bench topic_route`
//! (`-- --quick` for fewer samples). Prints, per case and key length, the nanoseconds per
//! route (best and median of 7 batches, each batch at least 5 ms of routes), the nanoseconds
//! per key word (constant when routing is linear in the key's words) and the matcher's own
//! work count; then the slowest route of a 255-byte key against any single 255-byte pattern
//! among the structured cases and 2,000 random patterns over `#`, `*`, `a` and `b`.
//!
//! Timing lives here, never in a test (the machine may be loaded; the figures say so).

use std::hint::black_box;
use std::time::{Duration, Instant};

use lepus_broker::fuzzing::TopicBindings;

mod common;
use common::Rng;

/// `words` words of `a`, dot separated (`2 * words - 1` bytes).
fn key(words: usize) -> String {
    vec!["a"; words].join(".")
}

/// Nanoseconds per route of `key`: (best, median) over `batches` batches of at least
/// `batch` each.
fn time(bindings: &TopicBindings, key: &str, batches: usize, batch: Duration) -> (f64, f64) {
    // Calibrate: routes per batch.
    let mut n = 1u64;
    loop {
        let t = Instant::now();
        for _ in 0..n {
            black_box(bindings.route(black_box(key)));
        }
        if t.elapsed() >= batch || n >= 1 << 30 {
            break;
        }
        n *= 2;
    }
    let mut per: Vec<f64> = (0..batches)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..n {
                black_box(bindings.route(black_box(key)));
            }
            t.elapsed().as_nanos() as f64 / n as f64
        })
        .collect();
    per.sort_by(f64::total_cmp);
    (per[0], per[per.len() / 2])
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let (batches, batch) = if quick {
        (3, Duration::from_millis(2))
    } else {
        (7, Duration::from_millis(5))
    };
    let hashes_b = "#.".repeat(127) + "b";
    let all_hashes = "#.".repeat(127) + "#";
    let hash_a = "#.a.".repeat(63) + "#.a";
    let hash_star = "#.*.".repeat(63) + "#.*";
    let star_hash = "*.#.".repeat(63) + "*.#";
    for p in [&hashes_b, &all_hashes, &hash_a, &hash_star, &star_hash] {
        assert_eq!(p.len(), 255, "{p}");
    }
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let many_random: Vec<String> = (0..1000).map(|_| rng.pattern(&["#", "*", "a"])).collect();
    let many_hashes: Vec<String> = (0..1000)
        .map(|i| format!("{}{i}", "#.".repeat(126 - i.to_string().len() / 2)))
        .collect();
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("1 x #.#.#...#.b (127 #)", vec![&hashes_b]),
        ("1 x #.#.#...#   (128 #)", vec![&all_hashes]),
        ("1 x #.a.#.a...#.a", vec![&hash_a]),
        ("1 x #.*.#.*...#.*", vec![&hash_star]),
        ("1 x *.#.*.#...*.#", vec![&star_hash]),
        (
            "5 x the five above",
            vec![&hashes_b, &all_hashes, &hash_a, &hash_star, &star_hash],
        ),
        (
            "1000 x #.#...#.<i> (shared # prefix)",
            many_hashes.iter().map(String::as_str).collect(),
        ),
        (
            "1000 x random 255-byte {#,*,a}",
            many_random.iter().map(String::as_str).collect(),
        ),
    ];
    let lengths = [1, 2, 4, 8, 16, 32, 64, 96, 128];
    println!(
        "{:<38} {:>5} {:>6} {:>12} {:>12} {:>10} {:>9} {:>7}",
        "patterns", "words", "bytes", "ns/route", "median", "ns/word", "work", "matches"
    );
    for (name, patterns) in &cases {
        let bindings = TopicBindings::new(patterns.iter().copied());
        let mut per_word = Vec::new();
        for &words in &lengths {
            let k = key(words);
            let (matches, work) = bindings.route(&k);
            let (best, median) = time(&bindings, &k, batches, batch);
            per_word.push(best / words as f64);
            println!(
                "{:<38} {:>5} {:>6} {:>12.0} {:>12.0} {:>10.1} {:>9} {:>7}",
                name,
                words,
                k.len(),
                best,
                median,
                best / words as f64,
                work,
                matches
            );
        }
        // Linear in words: ns/word at 128 words over ns/word at 16 words (1.0 = linear;
        // quadratic would be 8).
        println!(
            "{name:<38} ns/word at 128 words / at 16 words: {:.2}\n",
            per_word[lengths.len() - 1] / per_word[4]
        );
    }

    // Any single 255-byte pattern against a 255-byte key (128 words): the structured ones
    // above and 2,000 random ones, against the all-`a` key and one ending in `b`.
    let keys = [key(128), key(127) + ".b"];
    let mut singles: Vec<String> = vec![hashes_b, all_hashes, hash_a, hash_star, star_hash];
    singles.extend((0..1000).map(|_| rng.pattern(&["#", "*", "a"])));
    singles.extend((0..1000).map(|_| rng.pattern(&["#", "*", "a", "b", "#", "#"])));
    let mut worst = (0.0f64, String::new(), String::new());
    // Each pattern timed once over a short batch; the ten slowest retimed properly.
    let mut rough: Vec<(f64, usize, usize)> = Vec::new();
    for (i, p) in singles.iter().enumerate() {
        let bindings = TopicBindings::new([p.as_str()]);
        for (j, k) in keys.iter().enumerate() {
            let (best, _) = time(&bindings, k, 1, Duration::from_micros(200));
            rough.push((best, i, j));
        }
    }
    rough.sort_by(|a, b| b.0.total_cmp(&a.0));
    for &(_, i, j) in rough.iter().take(10) {
        let bindings = TopicBindings::new([singles[i].as_str()]);
        let (_, median) = time(&bindings, &keys[j], batches, batch);
        if median > worst.0 {
            worst = (median, singles[i].clone(), keys[j].clone());
        }
    }
    println!(
        "255-byte key vs any single 255-byte pattern ({} patterns x 2 keys): slowest median {:.0} ns = {:.4} ms (limit 1 ms)\n  pattern {}\n  key     {}",
        singles.len(),
        worst.0,
        worst.0 / 1e6,
        worst.1,
        worst.2
    );
}

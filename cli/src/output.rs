//! What the tool prints: tables for people (`--json` prints the structures instead).

use lepus::control::WorkerInfo;
use lepus::task::DeadLetter;

/// `lepus workers`: one line per worker.
pub(crate) fn workers_table(infos: &[WorkerInfo]) {
    println!(
        "{:<36} {:>8} {:>9} {:>5} {:>5} {:>7} {:>9} {:>7} {:>7}",
        "WORKER", "PID", "UPTIME", "CONC", "PREF", "RUNNING", "SUCCEEDED", "FAILED", "REVOKED"
    );
    for info in infos {
        let count = |name: &str| info.counts.get(name).copied().unwrap_or(0);
        println!(
            "{:<36} {:>8} {:>9} {:>5} {:>5} {:>7} {:>9} {:>7} {:>7}",
            info.worker,
            info.pid,
            uptime(info.uptime_ms),
            info.concurrency,
            info.prefetch,
            info.running.len(),
            count("succeeded"),
            count("failed") + count("dead_lettered") + count("retried"),
            count("revoked"),
        );
    }
    println!("({} workers)", infos.len());
}

/// `lepus inspect`: every worker in full.
pub(crate) fn inspect(infos: &[WorkerInfo]) {
    for info in infos {
        println!("worker {}", info.worker);
        println!("  host:        {}", info.host);
        println!("  pid:         {}", info.pid);
        println!("  uptime:      {}", uptime(info.uptime_ms));
        println!("  concurrency: {}", info.concurrency);
        println!("  prefetch:    {}", info.prefetch);
        println!("  revocations: {}", info.revoked);
        println!("  handlers:");
        for handler in &info.handlers {
            println!(
                "    {:<5} {} on {}",
                handler.kind, handler.name, handler.queue
            );
        }
        let counts: Vec<String> = info
            .counts
            .iter()
            .map(|(outcome, n)| format!("{outcome} {n}"))
            .collect();
        println!(
            "  counts:      {}",
            if counts.is_empty() {
                "-".to_owned()
            } else {
                counts.join(", ")
            }
        );
        println!("  running:     {}", info.running.len());
        for run in &info.running {
            println!(
                "    {} {} {} on {} since {}{}",
                run.kind,
                run.id.as_deref().unwrap_or("-"),
                run.name,
                run.queue,
                run.started_at_ms,
                if run.cancellable {
                    " (cancellable)"
                } else {
                    ""
                }
            );
        }
    }
    println!("({} workers)", infos.len());
}

fn uptime(ms: u64) -> String {
    let s = ms / 1000;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{}s", s / 60, s % 60),
        3600..=86_399 => format!("{}h{}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// `lepus dead-letters list`.
pub(crate) fn dead_letter_list(letters: &[DeadLetter]) {
    println!(
        "{:<34} {:<12} {:>8}  error",
        "message_id", "task", "attempts"
    );
    for letter in letters {
        println!(
            "{:<34} {:<12} {:>8}  {}",
            letter.message_id.as_deref().unwrap_or("-"),
            letter.task.as_deref().unwrap_or("-"),
            letter.attempts,
            letter.error.as_deref().unwrap_or("-"),
        );
    }
    println!("({} dead letters)", letters.len());
}

/// `lepus dead-letters show`.
pub(crate) fn dead_letter(letter: &DeadLetter) {
    let ms = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |ms| format!("{ms} (Unix ms)"));
    println!(
        "message_id:   {}",
        letter.message_id.as_deref().unwrap_or("-")
    );
    println!("task:         {}", letter.task.as_deref().unwrap_or("-"));
    println!(
        "origin queue: {}",
        letter.origin_queue.as_deref().unwrap_or("-")
    );
    println!("attempts:     {}", letter.attempts);
    println!("error:        {}", letter.error.as_deref().unwrap_or("-"));
    println!("enqueued at:  {}", ms(letter.enqueued_at_ms));
    println!("first failed: {}", ms(letter.first_failed_at_ms));
    println!("last failed:  {}", ms(letter.last_failed_at_ms));
    let hex: String = letter.body.iter().map(|b| format!("{b:02x} ")).collect();
    println!(
        "arguments:    {} bytes of MessagePack: {}",
        letter.body.len(),
        hex.trim_end()
    );
}

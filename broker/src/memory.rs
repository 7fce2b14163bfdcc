//! The broker's memory accounting: the memory budget past which persistent bodies are paged
//! out to the store, and the memory high-watermark that blocks publishers
//! (`connection.blocked`, RabbitMQ's memory alarm).
//!
//! # What is counted, and why not RSS
//! [`Memory`] counts what is held, from the moment it is held until it is freed:
//! - every message for as long as it lives, wherever it is (ready in a queue, delivered and
//!   awaiting an ack, queued on a consumer's outbox, buffered by a transaction), as
//!   `crate::message::MESSAGE_OVERHEAD` plus its names, decoded properties and headers, plus
//!   its body when the body is its own allocation (`crate::message::Held`);
//! - a connection's read-buffer block for as long as any message keeps a slice of it: a body
//!   that arrived in one frame is not copied, so a 1-byte body pins the whole block (64 KiB or
//!   more) and the whole block is what is counted, once, however many bodies share it;
//! - a publish being assembled from several body frames: the bytes received so far (copied
//!   out of the read buffer, so the frames do not pin blocks);
//! - [`INDEX_ENTRY_COST`] bytes per queued message for its index entry (the queue's entry and
//!   the store's per-message bookkeeping, whether the body is in memory or paged out).
//!
//! Not counted: connection and channel structures, read buffers no message refers to, and
//! encoded bytes waiting for a socket (at most 256 KiB per connection).
//!
//! The process RSS (`/proc/self/statm`) is not used to raise or clear the alarm: the allocator
//! does not hand every freed page back to the kernel, so after a backlog drains the RSS can
//! stay above the watermark and publishers would stay blocked with nothing left to drain. The
//! accounted figure falls exactly when messages leave, so the alarm clears when the backlog
//! does.
//!
//! # The two thresholds
//! - **Budget** (`--memory-budget`, default 40 % of physical memory, as RabbitMQ's
//!   `vm_memory_high_watermark` default): once the accounted memory passes a *quarter* of it
//!   ([`PAGING_RATIO`]; RabbitMQ pages at half its watermark), each newly queued persistent
//!   message of a durable queue keeps only its index entry in memory; its body and properties
//!   are read back from the store when it nears the head of the queue. Bodies already in
//!   memory stay there (they are the head, delivered first). The rest of the budget is for the
//!   index of a large backlog (which grows past the paging threshold: at 64 bytes a message,
//!   2 M messages take 128 MiB) and for what is not counted (connection structures, allocator
//!   slack), so that the RSS stays under the budget.
//! - **High-watermark** (`--memory-high-watermark`, default: the budget): above it the alarm
//!   is raised. Every connection that publishes is blocked (`connection.blocked "low on
//!   memory"` to clients that announced the capability; its socket is not read until the
//!   alarm clears); consumers keep draining. The alarm clears below 95 % of the watermark
//!   (`connection.unblocked`), so it does not flap on every message at the boundary. Transient
//!   messages, and everything in a broker without `--data-dir`, cannot be paged: the watermark
//!   is their only protection.
//!
//! Concurrency: one [`Memory`] per broker, shared (`Arc`) by every queue (which account index
//! entries under their own lock with one atomic add per change), every message and read-block
//! charge (`crate::message::Held`, which gives its bytes back from whichever task drops it)
//! and every connection (which watch the alarm, [`Memory::subscribe`]).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

use crate::alarms::{AlarmSet, Alarms, Resource};
use crate::message::Account;

/// Bytes accounted per queued message besides its body: the queue's ready entry (32 bytes),
/// the store's (sequence number, position) pair (24 bytes) and liveness set entry, and the
/// growth slack of the deques that hold them.
pub(crate) const INDEX_ENTRY_COST: u64 = 64;

/// Bodies are paged out once the accounted memory passes this fraction of the budget.
pub(crate) const PAGING_RATIO: f64 = 0.25;

/// The budget when the operator sets none and physical memory is unknown: 1 GiB.
const FALLBACK_BUDGET: u64 = 1 << 30;

/// The broker's accounted memory and its two thresholds; see the module doc.
#[derive(Debug)]
pub(crate) struct Memory {
    /// The budget (bytes), as configured.
    budget: u64,
    /// Bodies are paged out past `PAGING_RATIO` of it.
    paging_threshold: u64,
    /// The alarm is raised above it.
    watermark: u64,
    /// The alarm is cleared below it (95 % of `watermark`).
    low_watermark: u64,
    /// Accounted bytes: what messages, read blocks and assemblies hold, plus
    /// [`INDEX_ENTRY_COST`] per queued message (see the module doc).
    used: AtomicU64,
    /// Mirrors the alarm for a lock-free check on every change.
    raised: AtomicBool,
    /// Serializes alarm transitions so that the alarm set never disagrees with `raised`.
    transition: Mutex<()>,
    /// The broker's alarm set, whose memory bit this raises while memory is above the
    /// watermark. Shared with the disk alarm (`crate::disk_alarm`), which sets the disk bit;
    /// connections hold receivers ([`Memory::subscribe`]).
    alarms: Arc<Alarms>,
}

impl Memory {
    /// Accounting with the given budget and watermark (bytes).
    pub(crate) fn new(budget: u64, watermark: u64) -> Self {
        Self {
            budget,
            paging_threshold: (budget as f64 * PAGING_RATIO) as u64,
            watermark,
            low_watermark: watermark - watermark / 20,
            used: AtomicU64::new(0),
            raised: AtomicBool::new(false),
            transition: Mutex::new(()),
            alarms: Arc::default(),
        }
    }

    /// Accounting that never pages and never raises the alarm (tests, fuzzing).
    pub(crate) fn unlimited() -> Self {
        Self::new(u64::MAX, u64::MAX)
    }

    /// The default budget: 40 % of physical memory (`MemTotal` of `/proc/meminfo`), or 1 GiB
    /// where that cannot be read.
    pub(crate) fn default_budget() -> u64 {
        std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|info| {
                let line = info.lines().find(|l| l.starts_with("MemTotal:"))?;
                let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
                Some(kib * 1024 / 5 * 2)
            })
            .unwrap_or(FALLBACK_BUDGET)
    }

    /// Accounted bytes now.
    pub(crate) fn used(&self) -> u64 {
        self.used.load(Ordering::Relaxed)
    }

    /// True when a newly queued persistent body should be paged out (accounted memory past
    /// [`PAGING_RATIO`] of the budget).
    pub(crate) fn should_page(&self) -> bool {
        self.used() > self.paging_threshold
    }

    /// Accounts `bytes` more.
    pub(crate) fn add(&self, bytes: u64) {
        let now = self.used.fetch_add(bytes, Ordering::Relaxed) + bytes;
        if now > self.watermark && !self.raised.load(Ordering::Relaxed) {
            self.update_alarm();
        }
    }

    /// Accounts `bytes` less.
    pub(crate) fn sub(&self, bytes: u64) {
        let now = self
            .used
            .fetch_sub(bytes, Ordering::Relaxed)
            .saturating_sub(bytes);
        if now < self.low_watermark && self.raised.load(Ordering::Relaxed) {
            self.update_alarm();
        }
    }

    /// Raises or clears the alarm after a crossing, rechecking under the transition lock.
    fn update_alarm(&self) {
        let _guard = self.transition.lock().unwrap_or_else(|e| e.into_inner());
        let used = self.used();
        let raised = self.raised.load(Ordering::Relaxed);
        let next = if raised {
            used >= self.low_watermark
        } else {
            used > self.watermark
        };
        if next != raised {
            self.raised.store(next, Ordering::Relaxed);
            self.alarms.set(Resource::Memory, next);
            if next {
                tracing::warn!(
                    used,
                    watermark = self.watermark,
                    "memory alarm raised: blocking publishers"
                );
            } else {
                tracing::info!(used, watermark = self.watermark, "memory alarm cleared");
            }
        }
    }

    /// The memory budget (bytes).
    pub(crate) fn budget(&self) -> u64 {
        self.budget
    }

    /// The high-watermark (bytes) above which publishers are blocked.
    pub(crate) fn watermark(&self) -> u64 {
        self.watermark
    }

    /// True while the memory alarm is raised.
    pub(crate) fn alarm_raised(&self) -> bool {
        self.raised.load(Ordering::Relaxed)
    }

    /// A receiver of the broker's alarm set (memory and disk).
    pub(crate) fn subscribe(&self) -> watch::Receiver<AlarmSet> {
        self.alarms.subscribe()
    }

    /// The broker's alarm set, for the disk alarm to raise its bit in.
    pub(crate) fn alarms(&self) -> &Arc<Alarms> {
        &self.alarms
    }
}

impl Account for Memory {
    fn charge(&self, bytes: u64) {
        self.add(bytes);
    }

    fn release(&self, bytes: u64) {
        self.sub(bytes);
    }
}

/// Parses a byte size: a number with an optional unit, `B`, `KB`/`MB`/`GB`/`TB` (powers of
/// 1000), `K`/`KiB`, `M`/`MiB`, `G`/`GiB`, `T`/`TiB` (powers of 1024); case-insensitive.
/// `256MiB`, `1.5GiB`, `1000000`.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: f64 = number
        .parse()
        .map_err(|_| format!("'{text}' is not a size (such as 256MiB)"))?;
    let factor: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kb" => 1000,
        "mb" => 1000 * 1000,
        "gb" => 1000 * 1000 * 1000,
        "tb" => 1000 * 1000 * 1000 * 1000,
        "k" | "kib" => 1 << 10,
        "m" | "mib" => 1 << 20,
        "g" | "gib" => 1 << 30,
        "t" | "tib" => 1 << 40,
        other => return Err(format!("unknown size unit '{other}' in '{text}'")),
    };
    let bytes = number * factor as f64;
    if !(bytes.is_finite() && bytes >= 1.0 && bytes < u64::MAX as f64) {
        return Err(format!("size '{text}' out of range"));
    }
    Ok(bytes as u64)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn sizes_parse_with_units() {
        assert_eq!(parse_bytes("256MiB").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("256m").unwrap(), 256 << 20);
        assert_eq!(parse_bytes("1.5GiB").unwrap(), 3 << 29);
        assert_eq!(parse_bytes("2GB").unwrap(), 2_000_000_000);
        assert_eq!(parse_bytes("4096").unwrap(), 4096);
        assert_eq!(parse_bytes(" 16 KiB ").unwrap(), 16 << 10);
        assert!(parse_bytes("lots").is_err());
        assert!(parse_bytes("12XB").is_err());
        assert!(parse_bytes("0").is_err());
    }

    #[test]
    fn paging_starts_at_a_quarter_of_the_budget() {
        let memory = Memory::new(2000, 10_000);
        memory.add(500);
        assert!(!memory.should_page());
        memory.add(1);
        assert!(memory.should_page());
        memory.sub(1);
        assert!(!memory.should_page());
    }

    #[test]
    fn the_alarm_rises_above_the_watermark_and_clears_below_95_percent() {
        let memory = Memory::new(1000, 1000);
        let alarm = memory.subscribe();
        memory.add(1000);
        assert!(!alarm.borrow().memory, "at the watermark, not above");
        memory.add(1);
        assert!(alarm.borrow().memory);
        memory.sub(40);
        assert!(alarm.borrow().memory, "961 is not below 950");
        memory.sub(20);
        assert!(!alarm.borrow().memory);
        assert_eq!(memory.used(), 941);
    }
}

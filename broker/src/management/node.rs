//! Figures about the broker process and its host that the management API (`/api/nodes`,
//! the dashboard's overview) and the Prometheus families (`rabbitmq_process_*`,
//! `rabbitmq_disk_space_*`) report: resident memory, file descriptors, free disk space under
//! the data directory, uptime. Each is read when asked (a few small `/proc` reads and one
//! `statvfs`), never on the message path; `None` where the platform does not tell.

use std::path::Path;
use std::time::Instant;

use super::Ctx;

/// The node name Lepus reports wherever RabbitMQ reports an Erlang node name.
pub(crate) const NODE_NAME: &str = "lepus@localhost";

/// The cluster name (`rabbitmq_cluster` label, `cluster_name` of `/api/overview`).
pub(crate) const CLUSTER_NAME: &str = "lepus";

/// What the process and host look like now.
#[derive(Debug, Clone, Default)]
pub(crate) struct NodeFigures {
    /// Resident set size (bytes).
    pub(crate) resident_memory: Option<u64>,
    /// Open file descriptors.
    pub(crate) open_fds: Option<u64>,
    /// The soft limit on open file descriptors.
    pub(crate) max_fds: Option<u64>,
    /// Bytes available to the broker on the file system of its data directory (or the
    /// working directory without one).
    pub(crate) disk_free: Option<u64>,
    /// Milliseconds since the management API started (with the broker).
    pub(crate) uptime_ms: u64,
    /// CPUs the process may run on.
    pub(crate) processors: u64,
}

impl NodeFigures {
    /// Reads every figure now.
    pub(crate) fn read(ctx: &Ctx) -> Self {
        let dir = ctx
            .broker
            .config
            .data_dir
            .clone()
            .unwrap_or_else(|| ".".into());
        Self {
            resident_memory: resident_memory(),
            open_fds: open_fds(),
            max_fds: crate::sockets::fd_limit(),
            disk_free: disk_free(&dir),
            uptime_ms: u64::try_from(Instant::now().duration_since(ctx.started).as_millis())
                .unwrap_or(u64::MAX),
            processors: std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
        }
    }
}

/// VmRSS from `/proc/self/status`, in bytes.
pub(crate) fn resident_memory() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Entries of `/proc/self/fd`.
fn open_fds() -> Option<u64> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count() as u64)
}

/// Free bytes for unprivileged users on the file system holding `dir` (or its nearest
/// existing ancestor).
#[cfg(unix)]
fn disk_free(dir: &Path) -> Option<u64> {
    let existing = dir.ancestors().find(|p| p.exists())?;
    let stat = rustix::fs::statvfs(existing).ok()?;
    Some(stat.f_bavail.saturating_mul(stat.f_frsize))
}

#[cfg(not(unix))]
fn disk_free(_dir: &Path) -> Option<u64> {
    None
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(target_os = "linux")]
    #[test]
    fn linux_tells_every_process_figure() {
        assert!(resident_memory().unwrap() > 0);
        let open = open_fds().unwrap();
        let max = crate::sockets::fd_limit().unwrap();
        assert!(open > 0 && open <= max, "{open} of {max}");
        let free = disk_free(Path::new("/nonexistent/below/root")).unwrap();
        assert!(free > 0);
    }
}

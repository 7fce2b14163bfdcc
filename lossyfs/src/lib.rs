//! `lepus-lossyfs`: a FUSE file system for tests that forgets, on command, everything that was
//! not made durable, as a power cut does.
//!
//! It passes every operation through to a backing directory at once, so the mounted view is
//! always the latest one (what a page cache shows), and keeps on the side, per file, every
//! write and size change since that file's last `fsync`/`fdatasync` (with the bytes each one
//! overwrote), and per directory every entry created, removed or renamed since that
//! directory's last `fsync`. [`Mounted::power_cut`] unmounts, rolls the backing directory back
//! to what a disk would hold after the power went (see [`CutMode`]), and mounts it again: the
//! next process to start on it sees what survived.
//!
//! The owner of the [`Mounted`] (a test process) commands the cut in-process, after it has
//! killed every process using the mount (a SIGKILLed broker cannot take part in a cut, and the
//! unmount needs it gone).
//!
//! ```no_run
//! # fn main() -> Result<(), lepus_lossyfs::Error> {
//! use lepus_lossyfs::{CutMode, LossyFs};
//!
//! // Backing directory and mount point must exist; root (or CAP_SYS_ADMIN) mounts.
//! let mut fs = LossyFs::new("/tmp/backing").mount("/tmp/mnt")?;
//! std::fs::write("/tmp/mnt/never-synced", b"gone after the cut")?;
//! let report = fs.power_cut(CutMode::DropUnsynced)?;
//! assert!(!std::path::Path::new("/tmp/mnt/never-synced").exists());
//! assert_eq!(report.entries_undone, 1);
//! fs.unmount()?;
//! # Ok(()) }
//! ```
//!
//! # What it models
//! - Unsynced data: bytes written, and size changes (`truncate`, `O_TRUNC`, `fallocate`), since
//!   the file's last `fsync` or `fdatasync` (on any descriptor of it) are lost; synced ones
//!   survive. `close` is no durability point.
//! - Unsynced directory entries, as POSIX and `fsync(2)` state them: a file or directory
//!   created, unlinked or renamed is durable only once its directory is fsynced (a rename
//!   between two directories, once both are). Until then a cut undoes it: a created file
//!   disappears with its (even fsynced) data, an unlinked one comes back with its durable
//!   contents, a rename goes back and the file it replaced returns. Stricter than ext4 in
//!   practice (where an fsync of a new file usually commits its entry too) and exactly what
//!   the fsync man page promises.
//! - [`CutMode::DropUnsynced`]: nothing unsynced survives (LazyFS's `clear-cache`).
//! - [`CutMode::TornPrefix`]: each file keeps a random prefix of its unsynced changes and a
//!   torn next write (some leading bytes; the file either ends at the tear or keeps its length
//!   with zeros past it), and directory changes keep a random prefix in the order made (as a
//!   journaling file system commits them). LazyFS's `torn-seq` and `torn-op`, drawn at random.
//!
//! # What it does not model
//! - Reordering *within* what a file keeps (a disk writing a later page before an earlier one
//!   without a barrier), bit rot, misdirected or lost writes that were reported synced, and
//!   I/O errors (`EIO` from `fsync`): a synced write always survives intact.
//! - Timestamps, permissions and ownership changes are passed through and never undone.
//! - Hard links (`link` fails with `EPERM`), special files (`mknod` of anything but a regular
//!   file fails), extended attributes, file locks across the cut (the kernel keeps `flock` and
//!   POSIX locks locally, as with any FUSE file system that does not implement them), `mmap`
//!   of writable shared files beyond what FUSE allows, and `syncfs`/`sync` (no request reaches
//!   the file system for them).
//! - The backing directory itself is never fsynced: it is the model's state, not a disk.
//! - LazyFS, for comparison, keeps its own page cache and persists directory operations at
//!   once; it also injects cuts at chosen operations, which this crate leaves to its caller
//!   (a test kills its process at a random moment, then cuts).
//!
//! # Layout
//! - `tree`: the inode table (where each inode lives in the backing directory, or the trash).
//! - `journal`: the unsynced changes and their undo records; [`Unsynced`].
//! - `cut`: [`CutMode`], [`CutReport`], [`TornWrite`] and the rollback.
//! - `fs`: the FUSE request handlers.
//! - `mount`: [`LossyFs`] and [`Mounted`].
//! - `error`: [`Error`].

mod cut;
mod error;
mod fs;
mod journal;
mod mount;
mod tree;

pub use cut::{CutMode, CutReport, TornWrite};
pub use error::Error;
pub use journal::Unsynced;
pub use mount::{LossyFs, Mounted};

//! The power cut: [`CutMode`], [`CutReport`], and rolling the backing directory back to what
//! the modelled disk holds, using the [`Journal`]'s undo records.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::PathBuf;

use crate::journal::{DataOp, EntryOp, Journal};
use crate::tree::{Location, Tree};

/// What a power cut leaves of the writes that were not made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutMode {
    /// Nothing unsynced survives: every file is as of its last `fsync`/`fdatasync`, every
    /// directory lists what it listed at its last `fsync`. LazyFS's `clear-cache`, plus
    /// directory entries.
    DropUnsynced,
    /// What a disk that wrote some of its queue before the power went leaves. Each file keeps
    /// a random prefix (possibly empty, possibly all) of its unsynced data changes, in the
    /// order they were made, and the first change it does not keep, when it is a write of two
    /// bytes or more, is torn: a random number of its leading bytes (at least one, not all)
    /// reached the disk. A torn write either shortens the file to where it tore, or, at
    /// random, leaves the file as long as the write made it with zeros past the tear (the size
    /// reached the disk, the data blocks did not). Unsynced directory-entry changes keep a
    /// random prefix too, in the one order they were made in over all directories (as a
    /// journaling file system commits them). `seed` makes the choices repeatable.
    TornPrefix {
        /// Seed of the random choices.
        seed: u64,
    },
}

/// One write a [`CutMode::TornPrefix`] cut tore.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornWrite {
    /// The file, relative to the backing directory, as it was named at the cut.
    pub path: PathBuf,
    /// Where the write started.
    pub offset: u64,
    /// How long it was.
    pub len: u64,
    /// How many of its leading bytes were kept (`1..len`).
    pub kept: u64,
    /// True when the file kept the write's full length with zeros past the tear; false when
    /// it was cut at the tear.
    pub zero_filled: bool,
}

/// What a cut threw away.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CutReport {
    /// Files that had unsynced data changes.
    pub files: usize,
    /// Unsynced data changes kept (a [`CutMode::TornPrefix`] prefix; torn writes not counted).
    pub data_ops_kept: usize,
    /// Unsynced data changes undone (torn writes not counted).
    pub data_ops_dropped: usize,
    /// Bytes of unsynced writes that did not survive (the lost part of torn writes included).
    pub bytes_dropped: u64,
    /// Writes torn.
    pub torn: Vec<TornWrite>,
    /// Unsynced directory-entry changes kept (a [`CutMode::TornPrefix`] prefix).
    pub entries_kept: usize,
    /// Unsynced directory-entry changes undone.
    pub entries_undone: usize,
}

/// Rolls the backing directory of `tree` back as a power cut would, consuming `journal`.
/// Every process using the files must be gone (the mount is already unmounted).
pub(crate) fn cut(tree: &mut Tree, journal: &mut Journal, mode: CutMode) -> io::Result<CutReport> {
    let mut rng = match mode {
        CutMode::DropUnsynced => None,
        CutMode::TornPrefix { seed } => Some(SplitMix64(seed)),
    };
    let mut report = CutReport::default();

    // Data first, while every node is where the journal's entry records expect it.
    let mut files: Vec<(u64, Vec<DataOp>)> = journal.data.drain().collect();
    files.sort_by_key(|(ino, _)| *ino);
    for (ino, ops) in files {
        let Some(path) = tree.path(ino) else { continue };
        report.files += 1;
        let keep = rng
            .as_mut()
            .map_or(0, |r| r.below(ops.len() as u64 + 1) as usize);
        report.data_ops_kept += keep;
        let file = OpenOptions::new().read(true).write(true).open(&path)?;
        for (index, op) in ops.iter().enumerate().skip(keep).rev() {
            let tear = match (&mut rng, op) {
                (Some(rng), DataOp::Write { len, .. }) if index == keep && *len >= 2 => {
                    Some((1 + rng.below(len - 1), rng.below(2) == 1))
                }
                _ => None,
            };
            match (tear, op) {
                (
                    Some((kept, zero_filled)),
                    DataOp::Write {
                        offset,
                        len,
                        old_size,
                        old,
                    },
                ) => {
                    tear_write(&file, *offset, *len, *old_size, old, kept, zero_filled)?;
                    report.bytes_dropped += len - kept;
                    report.torn.push(TornWrite {
                        path: path.strip_prefix(tree.root()).unwrap_or(&path).to_owned(),
                        offset: *offset,
                        len: *len,
                        kept,
                        zero_filled,
                    });
                }
                _ => {
                    undo_data(&file, op)?;
                    report.data_ops_dropped += 1;
                    if let DataOp::Write { len, .. } = op {
                        report.bytes_dropped += len;
                    }
                }
            }
        }
    }

    // Then directory entries, newest first.
    let pending = std::mem::take(&mut journal.entries);
    let keep = rng
        .as_mut()
        .map_or(0, |r| r.below(pending.len() as u64 + 1) as usize);
    report.entries_kept = keep;
    for pending in pending[keep..].iter().rev() {
        if undo_entry(tree, &pending.op)? {
            report.entries_undone += 1;
        }
    }

    // Whatever is still in the trash was unlinked for good, or is unreachable now.
    for ino in tree.trashed() {
        tree.discard(ino)?;
    }
    Ok(report)
}

/// Undoes one data change completely.
fn undo_data(file: &File, op: &DataOp) -> io::Result<()> {
    match op {
        DataOp::Write {
            offset,
            old_size,
            old,
            ..
        } => {
            file.write_all_at(old, *offset)?;
            file.set_len(*old_size)
        }
        DataOp::Resize {
            old_size,
            new_size,
            old_tail,
        } => {
            file.set_len(*old_size)?;
            file.write_all_at(old_tail, *new_size)
        }
    }
}

/// Undoes all but the first `kept` bytes of a write.
fn tear_write(
    file: &File,
    offset: u64,
    len: u64,
    old_size: u64,
    old: &[u8],
    kept: u64,
    zero_filled: bool,
) -> io::Result<()> {
    // `kept < len` and `old.len() <= len`, both far below usize::MAX (they were in memory).
    if let Some(rest) = old.get(kept as usize..) {
        file.write_all_at(rest, offset + kept)?;
    }
    let torn_end = (offset + kept).max(old_size);
    if zero_filled {
        let end = offset + len;
        if end > torn_end {
            file.write_all_at(&vec![0; (end - torn_end) as usize], torn_end)?;
        }
        Ok(())
    } else {
        file.set_len(torn_end)
    }
}

/// Undoes one entry change if the tree is still as the change left it; returns whether it did.
fn undo_entry(tree: &mut Tree, op: &EntryOp) -> io::Result<bool> {
    let in_trash = |tree: &Tree, ino| {
        matches!(
            tree.node(ino).map(|n| &n.location),
            Some(Location::Trash(_))
        )
    };
    match op {
        EntryOp::Link { parent, name, ino } => {
            if !tree.is_linked_at(*ino, *parent, name) {
                return Ok(false);
            }
            tree.move_to_trash(*ino)?;
        }
        EntryOp::Unlink { parent, name, ino } => {
            if !in_trash(tree, *ino) || !tree.is_free(*parent, name) {
                return Ok(false);
            }
            tree.restore_from_trash(*ino, *parent, name)?;
        }
        EntryOp::Rename {
            from,
            from_name,
            to,
            to_name,
            ino,
            replaced,
        } => {
            if !tree.is_linked_at(*ino, *to, to_name) || !tree.is_free(*from, from_name) {
                return Ok(false);
            }
            tree.move_linked(*ino, *from, from_name)?;
            if let Some(replaced) = replaced {
                if in_trash(tree, *replaced) && tree.is_free(*to, to_name) {
                    tree.restore_from_trash(*replaced, *to, to_name)?;
                }
            }
        }
    }
    Ok(true)
}

/// The SplitMix64 generator: small, and enough for picking cut points.
#[derive(Debug, Clone)]
struct SplitMix64(u64);

impl SplitMix64 {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` (`n > 0`; the modulo bias is negligible for the small `n` used).
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

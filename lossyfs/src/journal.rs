//! `Journal`: what is not durable yet. Per file, every data change since its last
//! `fsync`/`fdatasync`, with what it overwrote; per directory, every entry created, removed or
//! renamed since that directory's last `fsync`. A cut (see `cut`) replays it backwards.

use std::collections::{BTreeSet, HashMap};
use std::ffi::OsString;

/// One data change to a file, with enough to undo it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DataOp {
    /// `len` bytes written at `offset` when the file was `old_size` bytes long; `old` holds the
    /// bytes it overwrote (those of `offset..min(offset + len, old_size)`).
    Write {
        offset: u64,
        len: u64,
        old_size: u64,
        old: Vec<u8>,
    },
    /// The size changed from `old_size` to `new_size` (`truncate`, `ftruncate`, `O_TRUNC`,
    /// `fallocate`); `old_tail` holds the bytes a shrink cut off.
    Resize {
        old_size: u64,
        new_size: u64,
        old_tail: Vec<u8>,
    },
}

/// One directory-entry change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum EntryOp {
    /// `ino` appeared as `name` in `parent` (create, mkdir, symlink, mknod).
    Link {
        parent: u64,
        name: OsString,
        ino: u64,
    },
    /// `ino`, once `name` in `parent`, was unlinked (now in the trash).
    Unlink {
        parent: u64,
        name: OsString,
        ino: u64,
    },
    /// `ino` moved from (`from`, `from_name`) to (`to`, `to_name`), replacing `replaced` (now in
    /// the trash) if there was one.
    Rename {
        from: u64,
        from_name: OsString,
        to: u64,
        to_name: OsString,
        ino: u64,
        replaced: Option<u64>,
    },
}

impl EntryOp {
    /// The directories whose fsync makes this change durable: all of them must be synced
    /// (a rename between two directories needs both).
    fn dirs(&self) -> BTreeSet<u64> {
        match self {
            Self::Link { parent, .. } | Self::Unlink { parent, .. } => BTreeSet::from([*parent]),
            Self::Rename { from, to, .. } => BTreeSet::from([*from, *to]),
        }
    }

    /// The node this change put in the trash, if any.
    pub(crate) fn trashed(&self) -> Option<u64> {
        match self {
            Self::Unlink { ino, .. } => Some(*ino),
            Self::Rename { replaced, .. } => *replaced,
            Self::Link { .. } => None,
        }
    }
}

/// An entry change and the directories still to be fsynced before it is durable.
#[derive(Debug, Clone)]
pub(crate) struct PendingEntry {
    pub(crate) op: EntryOp,
    unsynced_dirs: BTreeSet<u64>,
}

/// Everything not durable yet.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    /// Per inode, its data changes since its last fsync, oldest first.
    pub(crate) data: HashMap<u64, Vec<DataOp>>,
    /// Entry changes not durable yet, oldest first (one order over all directories).
    pub(crate) entries: Vec<PendingEntry>,
}

/// Totals of what is not durable yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Unsynced {
    /// Files with data changes since their last fsync.
    pub files: usize,
    /// Data changes (writes and size changes) since the last fsync of their file.
    pub data_ops: usize,
    /// Bytes written since the last fsync of their file.
    pub bytes: u64,
    /// Directory-entry changes not yet made durable by a directory fsync.
    pub entries: usize,
}

impl Journal {
    /// Records a data change to `ino`. Zero-length writes change nothing and are not kept.
    pub(crate) fn data_op(&mut self, ino: u64, op: DataOp) {
        if matches!(op, DataOp::Write { len: 0, .. }) {
            return;
        }
        self.data.entry(ino).or_default().push(op);
    }

    /// `fsync`/`fdatasync` of `ino`: its data is durable.
    pub(crate) fn sync_file(&mut self, ino: u64) {
        self.data.remove(&ino);
    }

    /// Records an entry change.
    pub(crate) fn entry_op(&mut self, op: EntryOp) {
        let unsynced_dirs = op.dirs();
        self.entries.push(PendingEntry { op, unsynced_dirs });
    }

    /// `fsync` of directory `dir`: every entry change that needed only that is durable.
    /// Returns those changes, so that the nodes they trashed can be deleted for good.
    pub(crate) fn sync_dir(&mut self, dir: u64) -> Vec<EntryOp> {
        let mut durable = Vec::new();
        self.entries.retain_mut(|pending| {
            pending.unsynced_dirs.remove(&dir);
            if pending.unsynced_dirs.is_empty() {
                durable.push(pending.op.clone());
                false
            } else {
                true
            }
        });
        durable
    }

    /// A node is gone for good: its pending data changes no longer matter.
    pub(crate) fn forget(&mut self, ino: u64) {
        self.data.remove(&ino);
    }

    /// Whether some pending entry change could still bring `ino` back from the trash.
    pub(crate) fn may_restore(&self, ino: u64) -> bool {
        self.entries.iter().any(|p| p.op.trashed() == Some(ino))
    }

    /// Totals.
    pub(crate) fn unsynced(&self) -> Unsynced {
        let mut totals = Unsynced {
            files: self.data.len(),
            entries: self.entries.len(),
            ..Unsynced::default()
        };
        for ops in self.data.values() {
            totals.data_ops += ops.len();
            totals.bytes += ops
                .iter()
                .map(|op| match op {
                    DataOp::Write { len, .. } => *len,
                    DataOp::Resize { .. } => 0,
                })
                .sum::<u64>();
        }
        totals
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn link(parent: u64, name: &str, ino: u64) -> EntryOp {
        EntryOp::Link {
            parent,
            name: name.into(),
            ino,
        }
    }

    #[test]
    fn a_directory_fsync_makes_only_its_own_entries_durable() {
        let mut journal = Journal::default();
        journal.entry_op(link(1, "a", 10));
        journal.entry_op(link(2, "b", 11));
        journal.entry_op(EntryOp::Rename {
            from: 1,
            from_name: "a".into(),
            to: 2,
            to_name: "c".into(),
            ino: 10,
            replaced: None,
        });
        assert_eq!(journal.sync_dir(1), vec![link(1, "a", 10)]);
        assert_eq!(
            journal.entries.len(),
            2,
            "the rename also needs directory 2"
        );
        let durable = journal.sync_dir(2);
        assert_eq!(durable.len(), 2);
        assert!(journal.entries.is_empty());
    }

    #[test]
    fn a_file_fsync_clears_its_data_changes_only() {
        let mut journal = Journal::default();
        let write = |offset| DataOp::Write {
            offset,
            len: 4,
            old_size: offset,
            old: Vec::new(),
        };
        journal.data_op(5, write(0));
        journal.data_op(5, write(4));
        journal.data_op(6, write(0));
        journal.data_op(
            6,
            DataOp::Write {
                offset: 9,
                len: 0,
                old_size: 9,
                old: Vec::new(),
            },
        );
        assert_eq!(
            journal.unsynced(),
            Unsynced {
                files: 2,
                data_ops: 3,
                bytes: 12,
                entries: 0
            }
        );
        journal.sync_file(5);
        assert_eq!(journal.unsynced().data_ops, 1);
    }
}

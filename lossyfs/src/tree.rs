//! `Tree`: the inode table. Maps the inode numbers the kernel knows to where each file or
//! directory lives in the backing directory right now: under a parent directory with a name,
//! or parked in the trash (unlinked, but its unlink is not durable yet, so a power cut may bring
//! it back).

use std::collections::HashMap;
use std::ffi::{OsStr, OsString};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

/// The root directory's inode number (FUSE's `FUSE_ROOT_ID`).
pub(crate) const ROOT: u64 = 1;

/// The directory, inside the backing directory, that holds unlinked files until their unlink
/// is durable. Hidden from the mounted view.
pub(crate) const TRASH_NAME: &str = ".lossyfs-trash";

/// Where a node is now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Location {
    /// Reachable as `name` in directory `parent`.
    Linked { parent: u64, name: OsString },
    /// Unlinked, parked at this path in the trash.
    Trash(PathBuf),
    /// Deleted from the backing directory for good.
    Gone,
}

/// One file, directory or symlink.
#[derive(Debug, Clone)]
pub(crate) struct Node {
    pub(crate) is_dir: bool,
    pub(crate) location: Location,
}

/// The inode table over one backing directory.
#[derive(Debug)]
pub(crate) struct Tree {
    root: PathBuf,
    trash: PathBuf,
    nodes: HashMap<u64, Node>,
    /// (parent, name) -> inode, for every `Linked` node.
    children: HashMap<(u64, OsString), u64>,
    next_ino: u64,
    next_trash: u64,
}

impl Tree {
    /// The table of `root`, which must be a directory; creates the (empty) trash in it.
    pub(crate) fn new(root: &Path) -> io::Result<Self> {
        let trash = root.join(TRASH_NAME);
        fs::create_dir_all(&trash)?;
        let mut nodes = HashMap::new();
        nodes.insert(
            ROOT,
            Node {
                is_dir: true,
                location: Location::Linked {
                    parent: ROOT,
                    name: OsString::new(),
                },
            },
        );
        Ok(Self {
            root: root.to_owned(),
            trash,
            nodes,
            children: HashMap::new(),
            next_ino: ROOT + 1,
            next_trash: 0,
        })
    }

    /// The backing directory.
    pub(crate) fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn node(&self, ino: u64) -> Option<&Node> {
        self.nodes.get(&ino)
    }

    /// The backing path of `ino`, wherever it is (`None` when unknown or gone).
    pub(crate) fn path(&self, ino: u64) -> Option<PathBuf> {
        // Names are collected leaf first; the depth is bounded by the number of nodes (a
        // directory can never be its own ancestor: rename refuses that).
        let mut names = Vec::new();
        let mut at = ino;
        loop {
            if at == ROOT {
                break;
            }
            match &self.nodes.get(&at)?.location {
                Location::Linked { parent, name } => {
                    names.push(name.clone());
                    at = *parent;
                }
                Location::Trash(path) => {
                    let mut path = path.clone();
                    path.extend(names.iter().rev());
                    return Some(path);
                }
                Location::Gone => return None,
            }
            if names.len() > self.nodes.len() {
                return None;
            }
        }
        let mut path = self.root.clone();
        path.extend(names.iter().rev());
        Some(path)
    }

    /// The backing path of `name` in directory `parent`.
    pub(crate) fn child_path(&self, parent: u64, name: &OsStr) -> Option<PathBuf> {
        self.path(parent).map(|p| p.join(name))
    }

    /// The inode of `name` in `parent`, allocating one for an entry that exists in the backing
    /// directory but was not seen yet. `None` when there is no such entry.
    pub(crate) fn lookup(&mut self, parent: u64, name: &OsStr) -> Option<u64> {
        if parent == ROOT && name == TRASH_NAME {
            return None;
        }
        let key = (parent, name.to_owned());
        if let Some(&ino) = self.children.get(&key) {
            return Some(ino);
        }
        let meta = fs::symlink_metadata(self.child_path(parent, name)?).ok()?;
        Some(self.insert(parent, name, meta.is_dir()))
    }

    /// Registers a new entry `name` in `parent` and returns its inode.
    pub(crate) fn insert(&mut self, parent: u64, name: &OsStr, is_dir: bool) -> u64 {
        let ino = self.next_ino;
        self.next_ino += 1;
        self.nodes.insert(
            ino,
            Node {
                is_dir,
                location: Location::Linked {
                    parent,
                    name: name.to_owned(),
                },
            },
        );
        self.children.insert((parent, name.to_owned()), ino);
        ino
    }

    /// Whether `ancestor` is `ino` or one of the directories above it.
    pub(crate) fn is_ancestor(&self, ancestor: u64, ino: u64) -> bool {
        let mut at = ino;
        for _ in 0..=self.nodes.len() {
            if at == ancestor {
                return true;
            }
            match self.nodes.get(&at).map(|n| &n.location) {
                Some(Location::Linked { parent, .. }) if at != ROOT => at = *parent,
                _ => return false,
            }
        }
        false
    }

    /// Moves linked node `ino` into the trash (renaming it in the backing directory).
    pub(crate) fn move_to_trash(&mut self, ino: u64) -> io::Result<()> {
        let Some(from) = self.path(ino) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        let to = self.trash.join(format!("{}", self.next_trash));
        self.next_trash += 1;
        fs::rename(&from, &to)?;
        self.unlink_entry(ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.location = Location::Trash(to);
        }
        Ok(())
    }

    /// Moves trashed node `ino` back to `name` in `parent` (which must be free).
    pub(crate) fn restore_from_trash(
        &mut self,
        ino: u64,
        parent: u64,
        name: &OsStr,
    ) -> io::Result<()> {
        let (Some(from), Some(to)) = (self.path(ino), self.child_path(parent, name)) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        fs::rename(&from, &to)?;
        self.link_entry(ino, parent, name);
        Ok(())
    }

    /// Renames linked node `ino` to `name` in `parent` (which must be free).
    pub(crate) fn move_linked(&mut self, ino: u64, parent: u64, name: &OsStr) -> io::Result<()> {
        let (Some(from), Some(to)) = (self.path(ino), self.child_path(parent, name)) else {
            return Err(io::Error::from_raw_os_error(libc::ENOENT));
        };
        fs::rename(&from, &to)?;
        self.unlink_entry(ino);
        self.link_entry(ino, parent, name);
        Ok(())
    }

    /// Deletes trashed node `ino` from the backing directory for good (its unlink is durable,
    /// or a power cut left it unreachable).
    pub(crate) fn discard(&mut self, ino: u64) -> io::Result<()> {
        let Some(node) = self.nodes.get_mut(&ino) else {
            return Ok(());
        };
        if let Location::Trash(path) = &node.location {
            let result = if node.is_dir {
                fs::remove_dir_all(path)
            } else {
                fs::remove_file(path)
            };
            match result {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
            node.location = Location::Gone;
        }
        Ok(())
    }

    /// Every node now in the trash.
    pub(crate) fn trashed(&self) -> Vec<u64> {
        self.nodes
            .iter()
            .filter(|(_, n)| matches!(n.location, Location::Trash(_)))
            .map(|(&ino, _)| ino)
            .collect()
    }

    /// Whether `ino` is linked as `name` in `parent`.
    pub(crate) fn is_linked_at(&self, ino: u64, parent: u64, name: &OsStr) -> bool {
        self.children.get(&(parent, name.to_owned())) == Some(&ino)
    }

    /// Whether `name` in `parent` is free in the backing directory.
    pub(crate) fn is_free(&self, parent: u64, name: &OsStr) -> bool {
        self.child_path(parent, name)
            .is_some_and(|p| fs::symlink_metadata(p).is_err())
    }

    fn unlink_entry(&mut self, ino: u64) {
        if let Some(Node {
            location: Location::Linked { parent, name },
            ..
        }) = self.nodes.get(&ino)
        {
            let key = (*parent, name.clone());
            if self.children.get(&key) == Some(&ino) {
                self.children.remove(&key);
            }
        }
    }

    fn link_entry(&mut self, ino: u64, parent: u64, name: &OsStr) {
        self.children.insert((parent, name.to_owned()), ino);
        if let Some(node) = self.nodes.get_mut(&ino) {
            node.location = Location::Linked {
                parent,
                name: name.to_owned(),
            };
        }
    }
}

//! `LossyFilesystem`: the FUSE request handlers. Each one does the operation on the backing
//! directory at once (so the mounted view is always the backing directory, as a page cache
//! shows its latest writes) and records in the [`Journal`] how to undo it until it is durable.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::fs::{self, File, FileTimes, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStringExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fuser::{
    Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation, INodeNo, LockOwner,
    OpenFlags, RenameFlags, ReplyAttr, ReplyCreate, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyStatfs, ReplyWrite, Request, TimeOrNow, WriteFlags,
};

use crate::journal::{DataOp, EntryOp, Journal};
use crate::tree::{Location, Tree, ROOT, TRASH_NAME};

/// The kernel must not cache names or attributes: every lookup and `stat` comes here, so the
/// view after a cut is the rolled-back one (the mount is also replaced at each cut).
const TTL: Duration = Duration::ZERO;

/// Everything the handlers share with [`crate::Mounted`], behind one mutex (the session
/// serves one request at a time; the mutex is for the owner's `power_cut` and `unsynced`).
#[derive(Debug)]
pub(crate) struct State {
    pub(crate) tree: Tree,
    pub(crate) journal: Journal,
    /// Open files by handle: the inode and the backing file.
    files: HashMap<u64, (u64, File)>,
    /// Open directories by handle: the listing taken at `opendir`.
    dirs: HashMap<u64, Vec<(u64, FileType, std::ffi::OsString)>>,
    next_fh: u64,
}

impl State {
    pub(crate) fn new(tree: Tree) -> Self {
        Self {
            tree,
            journal: Journal::default(),
            files: HashMap::new(),
            dirs: HashMap::new(),
            next_fh: 1,
        }
    }

    /// A new handle number, for a file or a directory.
    fn fh(&mut self) -> u64 {
        self.next_fh += 1;
        self.next_fh
    }

    /// Keeps `file`, opened for inode `ino`, under a new handle, and returns the handle.
    fn keep_file(&mut self, ino: u64, file: File) -> u64 {
        let fh = self.fh();
        self.files.insert(fh, (ino, file));
        fh
    }

    /// The open backing file of handle `fh`, or a fresh one for `ino` when there is none.
    fn file_for(&self, ino: u64, fh: Option<FileHandle>, write: bool) -> io::Result<FileRef<'_>> {
        if let Some((_, file)) = fh.and_then(|fh| self.files.get(&fh.0)) {
            return Ok(FileRef::Open(file));
        }
        let path = self.path(ino)?;
        Ok(FileRef::Owned(
            OpenOptions::new().read(true).write(write).open(path)?,
        ))
    }

    fn path(&self, ino: u64) -> io::Result<std::path::PathBuf> {
        self.tree.path(ino).ok_or_else(enoent)
    }

    fn attr(&self, ino: u64) -> io::Result<FileAttr> {
        Ok(attr_of(ino, &fs::symlink_metadata(self.path(ino)?)?))
    }

    /// Records and applies a size change of `file` (inode `ino`) to `new_size`.
    fn resize(&mut self, ino: u64, file: &File, new_size: u64) -> io::Result<()> {
        let old_size = file.metadata()?.len();
        if old_size == new_size {
            return Ok(());
        }
        let old_tail = if new_size < old_size {
            read_range(file, new_size, old_size - new_size)?
        } else {
            Vec::new()
        };
        file.set_len(new_size)?;
        self.journal.data_op(
            ino,
            DataOp::Resize {
                old_size,
                new_size,
                old_tail,
            },
        );
        Ok(())
    }

    /// A new entry `name` in `parent` (already created in the backing directory).
    fn linked(&mut self, parent: u64, name: &OsStr, is_dir: bool) -> u64 {
        let ino = self.tree.insert(parent, name, is_dir);
        self.journal.entry_op(EntryOp::Link {
            parent,
            name: name.to_owned(),
            ino,
        });
        ino
    }
}

/// A backing file: a handle's own, or one opened for this request.
enum FileRef<'a> {
    Open(&'a File),
    Owned(File),
}

impl FileRef<'_> {
    /// The file as one of its own (a handle's file is cloned), free of the state's borrow: for
    /// [`State::resize`], which needs the state mutably.
    fn into_owned(self) -> io::Result<File> {
        match self {
            Self::Open(file) => file.try_clone(),
            Self::Owned(file) => Ok(file),
        }
    }
}

impl std::ops::Deref for FileRef<'_> {
    type Target = File;
    fn deref(&self) -> &File {
        match self {
            Self::Open(file) => file,
            Self::Owned(file) => file,
        }
    }
}

/// The FUSE handlers over a shared [`State`].
pub(crate) struct LossyFilesystem {
    pub(crate) state: Arc<Mutex<State>>,
}

impl LossyFilesystem {
    /// Locks the state. A handler that panicked left it as consistent as any request that
    /// failed half-way (the backing directory is the truth), so a poisoned lock is used as is.
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn enoent() -> io::Error {
    io::Error::from_raw_os_error(libc::ENOENT)
}

fn errno(e: io::Error) -> Errno {
    Errno::from(e)
}

fn kind_of(meta: &fs::Metadata) -> FileType {
    FileType::from_std(meta.file_type()).unwrap_or(FileType::RegularFile)
}

fn attr_of(ino: u64, meta: &fs::Metadata) -> FileAttr {
    let time = |secs: i64, nanos: i64| {
        u64::try_from(secs)
            .ok()
            .map_or(UNIX_EPOCH, |s| UNIX_EPOCH + Duration::new(s, nanos as u32))
    };
    FileAttr {
        ino: INodeNo(ino),
        size: meta.len(),
        blocks: meta.blocks(),
        atime: time(meta.atime(), meta.atime_nsec()),
        mtime: time(meta.mtime(), meta.mtime_nsec()),
        ctime: time(meta.ctime(), meta.ctime_nsec()),
        crtime: UNIX_EPOCH,
        kind: kind_of(meta),
        perm: (meta.mode() & 0o7777) as u16,
        nlink: meta.nlink() as u32,
        uid: meta.uid(),
        gid: meta.gid(),
        rdev: meta.rdev() as u32,
        blksize: meta.blksize() as u32,
        flags: 0,
    }
}

/// Reads `len` bytes at `offset` (fewer at end of file).
fn read_range(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let mut buf = vec![0; len as usize];
    let mut done = 0;
    while done < buf.len() {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(buf)
}

fn system_time(t: TimeOrNow) -> SystemTime {
    match t {
        TimeOrNow::SpecificTime(t) => t,
        TimeOrNow::Now => SystemTime::now(),
    }
}

/// The permission bits of a new file or directory: the requested `mode` less the caller's
/// `umask`.
fn new_mode(mode: u32, umask: u32) -> u32 {
    mode & !umask & 0o7777
}

fn open_options(flags: i32) -> OpenOptions {
    let mut options = OpenOptions::new();
    // Always readable: an overwrite reads what it replaces, for the undo record.
    options.read(true);
    if flags & libc::O_ACCMODE != libc::O_RDONLY {
        options.write(true);
    }
    options
}

/// A FUSE reply that answers a handler's `io::Result<T>`: `Ok` its own way, an error as its
/// errno. Each handler computes a result, then `reply.answer(result)`.
trait Answer<T> {
    /// Sends the answer: the value of `Ok`, or the errno of `Err`.
    fn answer(self, result: io::Result<T>);
}

/// Implements [`Answer`] for each `Reply: T => |reply, value| success;`: how `reply` answers
/// a successful `value` (an error is answered alike for all).
macro_rules! answer {
    ($($reply:ty: $t:ty => |$r:ident, $value:pat_param| $ok:expr;)*) => {$(
        impl Answer<$t> for $reply {
            fn answer(self, result: io::Result<$t>) {
                match result {
                    Ok($value) => {
                        let $r = self;
                        $ok
                    }
                    Err(e) => self.error(errno(e)),
                }
            }
        }
    )*};
}

answer! {
    ReplyEmpty: () => |reply, ()| reply.ok();
    ReplyEntry: FileAttr => |reply, attr| reply.entry(&TTL, &attr, Generation(0));
    ReplyAttr: FileAttr => |reply, attr| reply.attr(&TTL, &attr);
    ReplyOpen: u64 => |reply, fh| reply.opened(FileHandle(fh), FopenFlags::empty());
    ReplyCreate: (FileAttr, u64) => |reply, (attr, fh)| {
        reply.created(&TTL, &attr, Generation(0), FileHandle(fh), FopenFlags::empty())
    };
    ReplyData: Vec<u8> => |reply, data| reply.data(&data);
    ReplyWrite: u32 => |reply, written| reply.written(written);
}

impl Filesystem for LossyFilesystem {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        let mut state = self.lock();
        let result = state
            .tree
            .lookup(parent.0, name)
            .ok_or_else(enoent)
            .and_then(|ino| state.attr(ino));
        reply.answer(result);
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        let state = self.lock();
        let result = match fh.and_then(|fh| state.files.get(&fh.0)) {
            Some((_, file)) => file.metadata().map(|m| attr_of(ino.0, &m)),
            None => state.attr(ino.0),
        };
        reply.answer(result);
    }

    fn setattr(
        &self,
        _req: &Request,
        ino: INodeNo,
        mode: Option<u32>,
        uid: Option<u32>,
        gid: Option<u32>,
        size: Option<u64>,
        atime: Option<TimeOrNow>,
        mtime: Option<TimeOrNow>,
        _ctime: Option<SystemTime>,
        fh: Option<FileHandle>,
        _crtime: Option<SystemTime>,
        _chgtime: Option<SystemTime>,
        _bkuptime: Option<SystemTime>,
        _flags: Option<fuser::BsdFileFlags>,
        reply: ReplyAttr,
    ) {
        let mut state = self.lock();
        let result = (|| {
            let path = state.path(ino.0)?;
            if let Some(size) = size {
                let file = state.file_for(ino.0, fh, true)?.into_owned()?;
                state.resize(ino.0, &file, size)?;
            }
            if let Some(mode) = mode {
                fs::set_permissions(&path, fs::Permissions::from_mode(mode & 0o7777))?;
            }
            if uid.is_some() || gid.is_some() {
                std::os::unix::fs::lchown(&path, uid, gid)?;
            }
            if atime.is_some() || mtime.is_some() {
                let mut times = FileTimes::new();
                if let Some(t) = atime {
                    times = times.set_accessed(system_time(t));
                }
                if let Some(t) = mtime {
                    times = times.set_modified(system_time(t));
                }
                state.file_for(ino.0, fh, false)?.set_times(times)?;
            }
            state.attr(ino.0)
        })();
        reply.answer(result);
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        let state = self.lock();
        let result = state.path(ino.0).and_then(fs::read_link);
        reply.answer(result.map(|target| target.into_os_string().into_vec()));
    }

    fn mknod(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        _rdev: u32,
        reply: ReplyEntry,
    ) {
        // Regular files only: devices, FIFOs and sockets are out of scope.
        if mode & libc::S_IFMT != libc::S_IFREG {
            reply.error(Errno::EPERM);
            return;
        }
        self.new_entry(parent.0, name, false, reply, |path| {
            OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(new_mode(mode, umask))
                .open(path)
                .map(drop)
        });
    }

    fn mkdir(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        reply: ReplyEntry,
    ) {
        self.new_entry(parent.0, name, true, reply, |path| {
            fs::DirBuilder::new()
                .mode(new_mode(mode, umask))
                .create(path)
        });
    }

    fn unlink(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent.0, name, false, reply);
    }

    fn rmdir(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEmpty) {
        self.remove(parent.0, name, true, reply);
    }

    fn symlink(
        &self,
        _req: &Request,
        parent: INodeNo,
        link_name: &OsStr,
        target: &Path,
        reply: ReplyEntry,
    ) {
        self.new_entry(parent.0, link_name, false, reply, |path| {
            std::os::unix::fs::symlink(target, path)
        });
    }

    fn rename(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        newparent: INodeNo,
        newname: &OsStr,
        flags: RenameFlags,
        reply: ReplyEmpty,
    ) {
        if flags.intersects(RenameFlags::RENAME_EXCHANGE | RenameFlags::RENAME_WHITEOUT) {
            reply.error(Errno::EINVAL);
            return;
        }
        let mut state = self.lock();
        let result = (|| {
            let (from, to) = (parent.0, newparent.0);
            let ino = state.tree.lookup(from, name).ok_or_else(enoent)?;
            let is_dir = state.tree.node(ino).is_some_and(|n| n.is_dir);
            if is_dir && state.tree.is_ancestor(ino, to) {
                return Err(io::Error::from_raw_os_error(libc::EINVAL));
            }
            let replaced = state.tree.lookup(to, newname);
            if replaced == Some(ino) {
                return Ok(());
            }
            if let Some(old) = replaced {
                if flags.contains(RenameFlags::RENAME_NOREPLACE) {
                    return Err(io::Error::from_raw_os_error(libc::EEXIST));
                }
                let old_is_dir = state.tree.node(old).is_some_and(|n| n.is_dir);
                let code = match (is_dir, old_is_dir) {
                    (true, false) => Some(libc::ENOTDIR),
                    (false, true) => Some(libc::EISDIR),
                    (true, true) => {
                        let path = state.path(old)?;
                        fs::read_dir(path)?.next().map(|_| libc::ENOTEMPTY)
                    }
                    (false, false) => None,
                };
                if let Some(code) = code {
                    return Err(io::Error::from_raw_os_error(code));
                }
                // Park the replaced node in the trash (a cut may bring it back), then move.
                state.tree.move_to_trash(old)?;
                if let Err(e) = state.tree.move_linked(ino, to, newname) {
                    let _ = state.tree.restore_from_trash(old, to, newname);
                    return Err(e);
                }
            } else {
                state.tree.move_linked(ino, to, newname)?;
            }
            state.journal.entry_op(EntryOp::Rename {
                from,
                from_name: name.to_owned(),
                to,
                to_name: newname.to_owned(),
                ino,
                replaced,
            });
            Ok(())
        })();
        reply.answer(result);
    }

    fn open(&self, _req: &Request, ino: INodeNo, flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.lock();
        let result = (|| {
            let file = open_options(flags.0).open(state.path(ino.0)?)?;
            if flags.0 & libc::O_TRUNC != 0 && flags.0 & libc::O_ACCMODE != libc::O_RDONLY {
                state.resize(ino.0, &file, 0)?;
            }
            Ok(state.keep_file(ino.0, file))
        })();
        reply.answer(result);
    }

    fn create(
        &self,
        _req: &Request,
        parent: INodeNo,
        name: &OsStr,
        mode: u32,
        umask: u32,
        flags: i32,
        reply: ReplyCreate,
    ) {
        let mut state = self.lock();
        let result = (|| {
            let existing = state.tree.lookup(parent.0, name);
            if existing.is_some() && flags & libc::O_EXCL != 0 {
                return Err(io::Error::from_raw_os_error(libc::EEXIST));
            }
            let path = state.tree.child_path(parent.0, name).ok_or_else(enoent)?;
            let (ino, file) = match existing {
                Some(ino) => {
                    let file = open_options(flags).open(&path)?;
                    if flags & libc::O_TRUNC != 0 {
                        state.resize(ino, &file, 0)?;
                    }
                    (ino, file)
                }
                None => {
                    let file = open_options(flags)
                        .write(true)
                        .create_new(true)
                        .mode(new_mode(mode, umask))
                        .open(&path)?;
                    (state.linked(parent.0, name, false), file)
                }
            };
            let fh = state.keep_file(ino, file);
            Ok((state.attr(ino)?, fh))
        })();
        reply.answer(result);
    }

    fn read(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let state = self.lock();
        let result = state
            .file_for(ino.0, Some(fh), false)
            .and_then(|file| read_range(&file, offset, u64::from(size)));
        reply.answer(result);
    }

    fn write(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        data: &[u8],
        _write_flags: WriteFlags,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyWrite,
    ) {
        let mut state = self.lock();
        let result = (|| {
            let file = state.file_for(ino.0, Some(fh), true)?;
            let old_size = file.metadata()?.len();
            let len = data.len() as u64;
            let old = if offset < old_size {
                read_range(&file, offset, len.min(old_size - offset))?
            } else {
                Vec::new()
            };
            file.write_all_at(data, offset)?;
            drop(file);
            state.journal.data_op(
                ino.0,
                DataOp::Write {
                    offset,
                    len,
                    old_size,
                    old,
                },
            );
            Ok(data.len() as u32)
        })();
        reply.answer(result);
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // close(2) is no durability point.
        reply.ok();
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        self.lock().files.remove(&fh.0);
        reply.ok();
    }

    fn fsync(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        // fsync and fdatasync alike make the file's data and size durable. The backing file
        // itself is not synced: the model, not the host's disk, decides what a cut keeps.
        self.lock().journal.sync_file(ino.0);
        reply.ok();
    }

    fn opendir(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let mut state = self.lock();
        let result = (|| {
            let path = state.path(ino.0)?;
            let parent = match state.tree.node(ino.0).map(|n| &n.location) {
                Some(Location::Linked { parent, .. }) => *parent,
                _ => ino.0,
            };
            let mut listing = vec![
                (ino.0, FileType::Directory, ".".into()),
                (parent, FileType::Directory, "..".into()),
            ];
            for entry in fs::read_dir(&path)? {
                let entry = entry?;
                let name = entry.file_name();
                if ino.0 == ROOT && name == TRASH_NAME {
                    continue;
                }
                let Some(child) = state.tree.lookup(ino.0, &name) else {
                    continue;
                };
                let kind = entry
                    .file_type()
                    .ok()
                    .and_then(FileType::from_std)
                    .unwrap_or(FileType::RegularFile);
                listing.push((child, kind, name));
            }
            let fh = state.fh();
            state.dirs.insert(fh, listing);
            Ok(fh)
        })();
        reply.answer(result);
    }

    fn readdir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let state = self.lock();
        let Some(listing) = state.dirs.get(&fh.0) else {
            reply.error(Errno::EBADF);
            return;
        };
        for (index, (ino, kind, name)) in listing.iter().enumerate().skip(offset as usize) {
            if reply.add(INodeNo(*ino), index as u64 + 1, *kind, name) {
                break;
            }
        }
        reply.ok();
    }

    fn releasedir(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        reply: ReplyEmpty,
    ) {
        self.lock().dirs.remove(&fh.0);
        reply.ok();
    }

    fn fsyncdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        _datasync: bool,
        reply: ReplyEmpty,
    ) {
        let mut state = self.lock();
        let durable = state.journal.sync_dir(ino.0);
        let result = (|| {
            for op in durable {
                // A durable unlink (or replacing rename): the old node is gone for good,
                // unless another pending change may still bring it back.
                if let Some(gone) = op.trashed() {
                    if !state.journal.may_restore(gone) {
                        state.tree.discard(gone)?;
                        state.journal.forget(gone);
                    }
                }
            }
            Ok(())
        })();
        reply.answer(result);
    }

    fn statfs(&self, _req: &Request, _ino: INodeNo, reply: ReplyStatfs) {
        let state = self.lock();
        match nix::sys::statvfs::statvfs(state.tree.root()) {
            Ok(s) => reply.statfs(
                s.blocks(),
                s.blocks_free(),
                s.blocks_available(),
                s.files(),
                s.files_free(),
                s.block_size() as u32,
                s.name_max() as u32,
                s.fragment_size() as u32,
            ),
            Err(e) => reply.error(Errno::from_i32(e as i32)),
        }
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: fuser::AccessFlags, reply: ReplyEmpty) {
        // No permission model beyond the backing directory's own (the owner runs as root).
        reply.ok();
    }

    fn fallocate(
        &self,
        _req: &Request,
        ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        length: u64,
        mode: i32,
        reply: ReplyEmpty,
    ) {
        // Mode 0 (allocate, growing the file if needed) only; glibc's posix_fallocate falls
        // back to writing zeros on EOPNOTSUPP.
        if mode != 0 {
            reply.error(Errno::EOPNOTSUPP);
            return;
        }
        let mut state = self.lock();
        let result = (|| {
            let file = state.file_for(ino.0, Some(fh), true)?.into_owned()?;
            let end = offset + length;
            if end > file.metadata()?.len() {
                state.resize(ino.0, &file, end)?;
            }
            Ok(())
        })();
        reply.answer(result);
    }
}

impl LossyFilesystem {
    /// `mknod`, `mkdir`, `symlink`: `make` creates `name` in `parent` in the backing
    /// directory; the new entry is journaled and answered.
    fn new_entry(
        &self,
        parent: u64,
        name: &OsStr,
        is_dir: bool,
        reply: ReplyEntry,
        make: impl FnOnce(&Path) -> io::Result<()>,
    ) {
        let mut state = self.lock();
        let result = (|| {
            make(&state.tree.child_path(parent, name).ok_or_else(enoent)?)?;
            let ino = state.linked(parent, name, is_dir);
            state.attr(ino)
        })();
        reply.answer(result);
    }

    /// `unlink` and `rmdir`: the node moves to the trash until its parent is fsynced.
    fn remove(&self, parent: u64, name: &OsStr, dir: bool, reply: ReplyEmpty) {
        let mut state = self.lock();
        let result = (|| {
            let ino = state.tree.lookup(parent, name).ok_or_else(enoent)?;
            let is_dir = state.tree.node(ino).is_some_and(|n| n.is_dir);
            match (dir, is_dir) {
                (true, false) => return Err(io::Error::from_raw_os_error(libc::ENOTDIR)),
                (false, true) => return Err(io::Error::from_raw_os_error(libc::EISDIR)),
                (true, true) => {
                    if fs::read_dir(state.path(ino)?)?.next().is_some() {
                        return Err(io::Error::from_raw_os_error(libc::ENOTEMPTY));
                    }
                }
                (false, false) => {}
            }
            state.tree.move_to_trash(ino)?;
            state.journal.entry_op(EntryOp::Unlink {
                parent,
                name: name.to_owned(),
                ino,
            });
            Ok(())
        })();
        reply.answer(result);
    }
}

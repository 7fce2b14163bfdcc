//! [`LossyFs`] (what to mount where) and [`Mounted`] (a live mount and its power cuts).

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use fuser::{BackgroundSession, Config, MountOption, SessionACL};

use crate::cut::{self, CutMode, CutReport};
use crate::fs::{LossyFilesystem, State};
use crate::journal::Unsynced;
use crate::tree::Tree;
use crate::Error;

/// A lossy file system over a backing directory, ready to mount.
#[derive(Debug, Clone)]
pub struct LossyFs {
    backing: PathBuf,
}

impl LossyFs {
    /// Over `backing`, an existing directory whose contents count as durable at mount time.
    pub fn new(backing: impl Into<PathBuf>) -> Self {
        Self {
            backing: backing.into(),
        }
    }

    /// Mounts it on `mountpoint` (an existing, empty directory). Needs `/dev/fuse` and root
    /// (or `CAP_SYS_ADMIN`): the mount is made with mount(2) directly, no `fusermount`.
    pub fn mount(&self, mountpoint: impl Into<PathBuf>) -> Result<Mounted, Error> {
        let mountpoint = mountpoint.into();
        let state = Arc::new(Mutex::new(State::new(Tree::new(&self.backing)?)));
        let session = spawn(&mountpoint, state.clone())?;
        Ok(Mounted {
            backing: self.backing.clone(),
            mountpoint,
            state,
            session: Some(session),
        })
    }
}

fn spawn(mountpoint: &Path, state: Arc<Mutex<State>>) -> Result<BackgroundSession, Error> {
    let mount_error = |source| Error::Mount {
        mountpoint: mountpoint.to_owned(),
        source,
    };
    if !Path::new("/dev/fuse").exists() {
        return Err(mount_error(std::io::Error::from_raw_os_error(libc::ENODEV)));
    }
    let mut config = Config::default();
    config.mount_options = vec![
        MountOption::FSName("lossyfs".to_owned()),
        MountOption::Subtype("lossyfs".to_owned()),
    ];
    // Any user may use it (a broker may run under its own account), as with `allow_other`.
    config.acl = SessionACL::All;
    fuser::spawn_mount(LossyFilesystem { state }, mountpoint, &config).map_err(mount_error)
}

/// A mounted [`LossyFs`]. Dropping it unmounts (keeping everything, as a clean shutdown
/// would); [`power_cut`](Self::power_cut) loses what a power cut loses.
#[derive(Debug)]
pub struct Mounted {
    backing: PathBuf,
    mountpoint: PathBuf,
    /// Shared with the session's handlers (which hold the other `Arc` until unmounted).
    state: Arc<Mutex<State>>,
    /// The session thread serving the mount; `None` only while a cut remounts.
    session: Option<BackgroundSession>,
}

impl Mounted {
    /// Where it is mounted.
    pub fn mountpoint(&self) -> &Path {
        &self.mountpoint
    }

    /// The backing directory.
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// What a power cut would lose right now.
    pub fn unsynced(&self) -> Unsynced {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .journal
            .unsynced()
    }

    /// Makes everything written so far durable, as the kernel's writeback eventually does on
    /// a machine that keeps running (LazyFS's `cache-checkpoint`). For a test that wants the
    /// setup before its first cut to count as long done.
    pub fn checkpoint(&self) -> Result<(), Error> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let State { tree, journal, .. } = &mut *state;
        journal.data.clear();
        journal.entries.clear();
        for ino in tree.trashed() {
            tree.discard(ino).map_err(|source| Error::Cut {
                backing: self.backing.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// Cuts the power: unmounts, rolls the backing directory back as `mode` says, and mounts
    /// it again with nothing unsynced. Every process using the mount must have exited (kill
    /// it first): the unmount fails while files are open.
    pub fn power_cut(&mut self, mode: CutMode) -> Result<CutReport, Error> {
        self.unmount_session()?;
        let report = {
            let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let State { tree, journal, .. } = &mut *state;
            cut::cut(tree, journal, mode).map_err(|source| Error::Cut {
                backing: self.backing.clone(),
                source,
            })?
        };
        self.state = Arc::new(Mutex::new(State::new(Tree::new(&self.backing)?)));
        self.session = Some(spawn(&self.mountpoint, self.state.clone())?);
        Ok(report)
    }

    /// Unmounts, keeping everything written (nothing is lost).
    pub fn unmount(mut self) -> Result<(), Error> {
        self.unmount_session()
    }

    fn unmount_session(&mut self) -> Result<(), Error> {
        let Some(session) = self.session.take() else {
            return Ok(());
        };
        // A process killed just before still has its files released by the kernel for a
        // moment (EBUSY): retry for a while before giving up.
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            match nix::mount::umount(&self.mountpoint) {
                Ok(()) => break,
                Err(nix::errno::Errno::EBUSY) if Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => {
                    // Give the session back: the mount is still there and still served.
                    self.session = Some(session);
                    return Err(Error::Unmount {
                        mountpoint: self.mountpoint.clone(),
                        source: e.into(),
                    });
                }
            }
        }
        // Unmounted: the session sees the device close and ends. fuser takes only ENODEV as
        // that end, but the kernel sometimes answers the session's pending read with
        // ECONNABORTED instead (its answer to a read after an abort, which fuser opts into
        // with FUSE_ABORT_ERROR): one run in six of the torn-mode test, 40 cuts each, on
        // Linux 6.18. The unmount has succeeded, so that is an end like any other.
        match session.join() {
            Err(e) if e.raw_os_error() == Some(libc::ECONNABORTED) => Ok(()),
            result => result.map_err(|source| Error::Unmount {
                mountpoint: self.mountpoint.clone(),
                source,
            }),
        }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        // Errors have no one to go to; the mount is gone once the session ends anyway.
        let _ = self.unmount_session();
    }
}

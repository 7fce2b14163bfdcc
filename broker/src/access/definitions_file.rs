//! The access-control definitions on disk: `DATA_DIR/access.json`, written atomically.
//!
//! Format: one JSON document in the shape of RabbitMQ's definitions export, so the two can be
//! compared and copied by hand:
//!
//! ```json
//! { "format": 1,
//!   "users": [ { "name": "guest", "password_hash": "<base64, see password.rs>",
//!                "hashing_algorithm": "rabbit_password_hashing_sha256",
//!                "tags": ["administrator"] } ],
//!   "vhosts": [ { "name": "/" } ],
//!   "permissions": [ { "user": "guest", "vhost": "/",
//!                      "configure": ".*", "write": ".*", "read": ".*" } ] }
//! ```
//!
//! Passwords are never stored, only salted hashes. A write goes to `access.json.tmp`, is
//! fsynced, renamed over `access.json`, and the directory is fsynced, so a crash leaves either
//! the old or the new file, never a torn one. Not implemented: topic permissions, vhost limits,
//! policies, parameters.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The file name inside the data directory.
pub(crate) const FILE_NAME: &str = "access.json";

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Definitions {
    /// Format version; 1.
    pub(crate) format: u32,
    /// Users.
    pub(crate) users: Vec<UserDef>,
    /// Virtual hosts.
    pub(crate) vhosts: Vec<VHostDef>,
    /// Permissions.
    pub(crate) permissions: Vec<PermissionDef>,
}

/// One user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct UserDef {
    /// User name.
    pub(crate) name: String,
    /// Salted hash, see `password.rs`.
    pub(crate) password_hash: String,
    /// Always `rabbit_password_hashing_sha256`.
    pub(crate) hashing_algorithm: String,
    /// Tags (`administrator`, `monitoring`, ...).
    pub(crate) tags: Vec<String>,
}

/// One vhost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct VHostDef {
    /// Its name.
    pub(crate) name: String,
}

/// One user's permissions in one vhost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct PermissionDef {
    /// The user.
    pub(crate) user: String,
    /// The vhost.
    pub(crate) vhost: String,
    /// Configure regex.
    pub(crate) configure: String,
    /// Write regex.
    pub(crate) write: String,
    /// Read regex.
    pub(crate) read: String,
}

/// The path of the definitions file in `data_dir`.
pub(crate) fn path_in(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

/// Reads the file; `Ok(None)` when it does not exist yet.
pub(crate) fn load(path: &Path) -> std::io::Result<Option<Definitions>> {
    match fs::read(path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e),
    }
}

/// Replaces the file atomically and durably (temp file, fsync, rename, fsync of the
/// directory); returns once a crash can no longer undo it. One save at a time: the caller
/// serializes them (they share the temp file).
pub(crate) fn save(path: &Path, defs: &Definitions) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    fs::create_dir_all(dir)?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(defs).map_err(std::io::Error::other)?;
    {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // The rename is durable only once the directory is.
    fs::File::open(dir)?.sync_all()
}

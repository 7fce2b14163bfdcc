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
//! Passwords are never stored, only salted hashes, and the file is readable by its owner only
//! (mode 0600 on Unix), since a salted SHA-256 can be attacked offline. A write goes to
//! `access.json.tmp`, is
//! fsynced, renamed over `access.json`, and the directory is fsynced, so a crash leaves either
//! the old or the new file, never a torn one. Not implemented: topic permissions, vhost limits,
//! policies, parameters.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{password, AccessState};

/// The file name inside the data directory.
pub(crate) const FILE_NAME: &str = "access.json";

/// The whole document.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct AccessFile {
    /// Format version; 1.
    pub(crate) format: u32,
    /// Users.
    pub(crate) users: Vec<StoredUser>,
    /// Virtual hosts.
    pub(crate) vhosts: Vec<StoredVHost>,
    /// Permissions.
    pub(crate) permissions: Vec<StoredPermission>,
}

/// One user.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StoredUser {
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
pub(crate) struct StoredVHost {
    /// Its name.
    pub(crate) name: String,
}

/// One user's permissions in one vhost.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct StoredPermission {
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

/// Reads the file; `Ok(None)` when it does not exist yet. A file that others can read (written
/// by an older version) is made the owner's only.
pub(crate) fn load(path: &Path) -> std::io::Result<Option<AccessFile>> {
    #[cfg(unix)]
    if let Ok(meta) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(path, fs::Permissions::from_mode(0o600))?;
        }
    }
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
pub(crate) fn save(path: &Path, defs: &AccessFile) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(dir) if !dir.as_os_str().is_empty() => dir,
        _ => Path::new("."),
    };
    // The first save creates the data directory: durably, or a power cut takes it away.
    crate::store::create_dir_durably(dir)?;
    let tmp = path.with_extension("json.tmp");
    let bytes = serde_json::to_vec_pretty(defs).map_err(std::io::Error::other)?;
    {
        // A stale temporary file would keep its old mode: start from none.
        let _ = fs::remove_file(&tmp);
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
        let mut f = options.open(&tmp)?;
        f.write_all(&bytes)?;
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    // Make the rename itself durable: until the directory is fsynced, a power cut may bring
    // the old file back after the change was reported done. A failure is reported, not
    // swallowed; only EINVAL (a file system that cannot fsync a directory) is let through.
    match fs::File::open(dir).and_then(|d| d.sync_all()) {
        Err(e) if e.kind() != std::io::ErrorKind::InvalidInput => Err(e),
        _ => Ok(()),
    }
}

/// The access state as the file stores it.
pub(super) fn definitions_of(s: &AccessState) -> AccessFile {
    AccessFile {
        format: 1,
        users: s
            .users
            .iter()
            .map(|(name, u)| StoredUser {
                name: name.clone(),
                password_hash: u.password_hash.clone(),
                hashing_algorithm: password::ALGORITHM.to_owned(),
                tags: u.tags.clone(),
            })
            .collect(),
        vhosts: s
            .vhosts
            .keys()
            .map(|name| StoredVHost { name: name.clone() })
            .collect(),
        permissions: s
            .permissions
            .iter()
            .map(|((vhost, user), p)| StoredPermission {
                user: user.clone(),
                vhost: vhost.clone(),
                configure: p.configure.clone(),
                write: p.write.clone(),
                read: p.read.clone(),
            })
            .collect(),
    }
}

/// RabbitMQ's out-of-the-box definitions: user `guest`/`guest` (or `first_user`) tagged
/// administrator with every permission on vhost `/`.
pub(super) fn default_definitions(first_user: Option<&(String, String)>) -> AccessFile {
    let (name, pass) = first_user
        .map(|(n, p)| (n.as_str(), p.as_str()))
        .unwrap_or(("guest", "guest"));
    AccessFile {
        format: 1,
        users: vec![StoredUser {
            name: name.to_owned(),
            password_hash: password::hash(pass),
            hashing_algorithm: password::ALGORITHM.to_owned(),
            tags: vec!["administrator".to_owned()],
        }],
        vhosts: vec![StoredVHost {
            name: "/".to_owned(),
        }],
        permissions: vec![StoredPermission {
            user: name.to_owned(),
            vhost: "/".to_owned(),
            configure: ".*".to_owned(),
            write: ".*".to_owned(),
            read: ".*".to_owned(),
        }],
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn the_file_of_hashes_is_readable_by_its_owner_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("lepus-defs-mode-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        let path = path_in(&dir);
        let defs = AccessFile {
            format: 1,
            users: Vec::new(),
            vhosts: Vec::new(),
            permissions: Vec::new(),
        };
        let mode = || fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        for _ in 0..2 {
            save(&path, &defs).unwrap();
            assert_eq!(mode(), 0o600);
        }
        // One left readable by an older version is fixed when loaded.
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        load(&path).unwrap().unwrap();
        assert_eq!(mode(), 0o600);
        fs::remove_dir_all(&dir).unwrap();
    }
}

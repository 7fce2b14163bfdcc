//! Access control: users (salted password hashes, tags), virtual hosts and per-vhost
//! permissions, kept in memory and, when the broker has a data directory, in
//! `DATA_DIR/access.json` (see `definitions_file`). This module owns the user database and the
//! loopback rule (RabbitMQ's `loopback_users`); `grants` owns the per-connection cache the
//! method handlers check against; `authorize` says which resource each method needs.
//!
//! Concurrency: [`AccessControl::state`] is an `RwLock` taken briefly by logins, by permission
//! cache misses and by administrative changes; every change bumps
//! [`AccessControl::generation`], which connection caches compare with an atomic load before
//! trusting a cached grant, so a revoked permission takes effect on the next method.

mod authorize;
mod definitions_file;
mod grants;
mod info;
mod password;
mod permission;
pub use info::{PermissionInfo, UserInfo};

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use tracing::{info, warn};

pub(crate) use grants::Grants;
pub(crate) use password::ALGORITHM as PASSWORD_HASHING;
pub(crate) use permission::{Access, Permission, ResourceKind};

use crate::error::AdminError;
use definitions_file::{default_definitions, definitions_of, AccessFile};

/// Which peer addresses count as loopback for `loopback_users`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub(crate) enum LoopbackPolicy {
    /// RabbitMQ's rule (`rabbit_net:is_loopback`): 127.0.0.0/8, ::1 and IPv4-mapped 127/8.
    #[default]
    Standard,
    /// Exactly these addresses (lets a test treat 127.0.0.2 as remote).
    Only(Vec<IpAddr>),
}

impl LoopbackPolicy {
    /// True when `ip` counts as loopback.
    pub(crate) fn is_loopback(&self, ip: IpAddr) -> bool {
        match self {
            Self::Standard => match ip {
                IpAddr::V4(v4) => v4.is_loopback(),
                IpAddr::V6(v6) => {
                    v6.is_loopback() || v6.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
            },
            Self::Only(list) => list.contains(&ip),
        }
    }
}

/// Access options from the builder.
#[derive(Debug, Clone)]
pub(crate) struct AccessOptions {
    /// Users that may log in only from loopback (RabbitMQ's default: `guest`).
    pub(crate) loopback_users: Vec<String>,
    /// What counts as loopback.
    pub(crate) loopback: LoopbackPolicy,
    /// The first user (name, password) made at first start instead of `guest`/`guest`
    /// (RabbitMQ's `default_user`/`default_pass`); ignored once definitions exist.
    pub(crate) default_user: Option<(String, String)>,
}

impl Default for AccessOptions {
    fn default() -> Self {
        Self {
            loopback_users: vec!["guest".to_owned()],
            loopback: LoopbackPolicy::Standard,
            default_user: None,
        }
    }
}

#[derive(Debug, Clone)]
struct User {
    password_hash: String,
    tags: Vec<String>,
}

/// Users, vhosts and permissions.
#[derive(Debug, Default, Clone)]
pub(crate) struct AccessState {
    users: BTreeMap<String, User>,
    vhosts: BTreeMap<String, ()>,
    /// Keyed by (vhost, user).
    permissions: BTreeMap<(String, String), Permission>,
}

impl AccessState {
    /// The permissions of `user` in `vhost`, if any were set.
    pub(crate) fn permission(&self, vhost: &str, user: &str) -> Option<&Permission> {
        self.permissions.get(&(vhost.to_owned(), user.to_owned()))
    }
}

/// The user database of one broker; see the module doc.
#[derive(Debug)]
pub(crate) struct AccessControl {
    /// The definitions.
    state: RwLock<AccessState>,
    /// Bumped on every change; connection caches compare against it.
    generation: AtomicU64,
    /// Where changes are saved (`None`: memory only).
    file: Option<PathBuf>,
    /// Held by a change from before it is applied until its save is durable: changes and
    /// their saves happen one at a time, so the file always ends up holding the last change
    /// (and no two saves share the temp file). Logins take only `state`'s read lock, so a save
    /// (two fsyncs) holds up no login.
    saving: Mutex<()>,
    /// Loopback-only users and what counts as loopback.
    options: AccessOptions,
}

impl AccessControl {
    /// Loads `DATA_DIR/access.json`, or starts from RabbitMQ's defaults (user `guest` /
    /// `guest` tagged administrator, vhost `/`, full permissions for guest on `/`) and saves
    /// them when there is a data dir.
    pub(crate) fn load(data_dir: Option<&Path>, options: AccessOptions) -> std::io::Result<Self> {
        let file = data_dir.map(definitions_file::path_in);
        let loaded = match &file {
            Some(path) => definitions_file::load(path)?,
            None => None,
        };
        let fresh = loaded.is_none();
        let defs = loaded.unwrap_or_else(|| default_definitions(options.default_user.as_ref()));
        let mut state = AccessState::default();
        for u in defs.users {
            if u.hashing_algorithm != password::ALGORITHM {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    format!(
                        "user '{}': unsupported hashing algorithm '{}'",
                        u.name, u.hashing_algorithm
                    ),
                ));
            }
            state.users.insert(
                u.name,
                User {
                    password_hash: u.password_hash,
                    tags: u.tags,
                },
            );
        }
        for v in defs.vhosts {
            state.vhosts.insert(v.name, ());
        }
        for p in defs.permissions {
            let perm = Permission::new(&p.configure, &p.write, &p.read)
                .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidData, e))?;
            state.permissions.insert((p.vhost, p.user), perm);
        }
        let me = Self {
            state: RwLock::new(state),
            generation: AtomicU64::new(1),
            file,
            saving: Mutex::new(()),
            options,
        };
        if fresh {
            if let Some(path) = &me.file {
                definitions_file::save(path, &me.snapshot())?;
                info!(path = %path.display(), "access definitions created with the default user");
            }
        }
        Ok(me)
    }

    fn read(&self) -> RwLockReadGuard<'_, AccessState> {
        // Poison-tolerant: every mutation under the lock is a single map insert/remove.
        self.state.read().unwrap_or_else(|e| e.into_inner())
    }

    fn write(&self) -> RwLockWriteGuard<'_, AccessState> {
        self.state.write().unwrap_or_else(|e| e.into_inner())
    }

    /// The current generation (changes whenever anything changes).
    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Runs `f` with the state read-locked.
    pub(crate) fn with_state<T>(&self, f: impl FnOnce(&AccessState) -> T) -> T {
        f(&self.read())
    }

    /// Checks a login. `peer` is the client's address, for `loopback_users`.
    pub(crate) fn check_login(&self, user: &str, password: &str, peer: IpAddr) -> bool {
        // An unknown user costs the same hash as a wrong password (see `password`).
        let ok = match self.read().users.get(user) {
            Some(u) => password::verify(&u.password_hash, password),
            None => password::verify_absent(password),
        };
        if !ok {
            return false;
        }
        if self.options.loopback_users.iter().any(|u| u == user)
            && !self.options.loopback.is_loopback(peer)
        {
            warn!(%user, %peer, "user can only log in via localhost");
            return false;
        }
        true
    }

    /// The user's info when the credentials are right (the management API's basic auth;
    /// `loopback_users` applies there too, as in RabbitMQ).
    pub(crate) fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: IpAddr,
    ) -> Option<UserInfo> {
        if !self.check_login(user, password, peer) {
            return None;
        }
        self.user(user)
    }

    /// True when the vhost exists and `user` has permissions in it (any, even empty ones).
    pub(crate) fn can_open_vhost(&self, user: &str, vhost: &str) -> bool {
        self.read().permission(vhost, user).is_some()
    }

    /// One user.
    pub(crate) fn user(&self, name: &str) -> Option<UserInfo> {
        self.read().users.get(name).map(|u| UserInfo {
            name: name.to_owned(),
            tags: u.tags.clone(),
        })
    }

    /// All users, by name.
    pub(crate) fn users(&self) -> Vec<UserInfo> {
        self.read()
            .users
            .iter()
            .map(|(name, u)| UserInfo {
                name: name.clone(),
                tags: u.tags.clone(),
            })
            .collect()
    }

    /// All vhost names, sorted.
    pub(crate) fn vhosts(&self) -> Vec<String> {
        self.read().vhosts.keys().cloned().collect()
    }

    /// True when the vhost exists.
    pub(crate) fn vhost_exists(&self, name: &str) -> bool {
        self.read().vhosts.contains_key(name)
    }

    /// Permissions, optionally only those of one vhost or one user.
    pub(crate) fn permissions(
        &self,
        vhost: Option<&str>,
        user: Option<&str>,
    ) -> Vec<PermissionInfo> {
        self.read()
            .permissions
            .iter()
            .filter(|((v, u), _)| vhost.is_none_or(|x| x == v) && user.is_none_or(|x| x == u))
            .map(|((v, u), p)| PermissionInfo {
                user: u.clone(),
                vhost: v.clone(),
                configure: p.configure.clone(),
                write: p.write.clone(),
                read: p.read.clone(),
            })
            .collect()
    }

    /// Applies `change` under the write lock, bumps the generation and saves; returns once the
    /// file holds the change. If the save fails, the change is undone and the error returned:
    /// what the caller is told is what a restart will find.
    fn change(
        &self,
        change: impl FnOnce(&mut AccessState) -> Result<(), AdminError>,
    ) -> Result<(), AdminError> {
        let _saving = self.saving.lock().unwrap_or_else(|e| e.into_inner());
        let (before, snapshot) = {
            let mut state = self.write();
            let before = self.file.as_ref().map(|_| state.clone());
            change(&mut state)?;
            self.generation.fetch_add(1, Ordering::AcqRel);
            (before, self.file.as_ref().map(|_| definitions_of(&state)))
        };
        if let (Some(path), Some(defs), Some(before)) = (&self.file, snapshot, before) {
            if let Err(e) = definitions_file::save(path, &defs) {
                *self.write() = before;
                self.generation.fetch_add(1, Ordering::AcqRel);
                return Err(AdminError::Save(e.to_string()));
            }
        }
        Ok(())
    }

    /// Adds a user with no tags and no permissions.
    pub(crate) fn add_user(&self, name: &str, password: &str) -> Result<(), AdminError> {
        if name.is_empty() {
            return Err(AdminError::InvalidName("empty user name".to_owned()));
        }
        self.change(|s| {
            if s.users.contains_key(name) {
                return Err(AdminError::UserExists(name.to_owned()));
            }
            s.users.insert(
                name.to_owned(),
                User {
                    password_hash: password::hash(password),
                    tags: Vec::new(),
                },
            );
            Ok(())
        })?;
        info!(user = name, "user added");
        Ok(())
    }

    /// Creates user `name`, or replaces its password and tags, with a stored hash in RabbitMQ's
    /// `rabbit_password_hashing_sha256` scheme (a definitions import); `password_hash` must be
    /// such a hash (base64 of 36 bytes). An empty hash makes a user that cannot log in with a
    /// password, as in RabbitMQ.
    pub(crate) fn put_user_hash(
        &self,
        name: &str,
        password_hash: &str,
        tags: &[String],
    ) -> Result<(), AdminError> {
        if name.is_empty() {
            return Err(AdminError::InvalidName("empty user name".to_owned()));
        }
        if !password_hash.is_empty() && !password::is_hash(password_hash) {
            return Err(AdminError::InvalidName(format!(
                "user '{name}': password_hash is not a salted SHA-256 hash"
            )));
        }
        self.change(|s| {
            s.users.insert(
                name.to_owned(),
                User {
                    password_hash: password_hash.to_owned(),
                    tags: tags.iter().filter(|t| !t.is_empty()).cloned().collect(),
                },
            );
            Ok(())
        })
    }

    /// Every user as (name, stored hash, tags), by name (a definitions export).
    pub(crate) fn users_with_hashes(&self) -> Vec<(String, String, Vec<String>)> {
        self.read()
            .users
            .iter()
            .map(|(name, u)| (name.clone(), u.password_hash.clone(), u.tags.clone()))
            .collect()
    }

    /// Deletes a user and all of its permissions.
    pub(crate) fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        self.change(|s| {
            s.users
                .remove(name)
                .ok_or_else(|| AdminError::NoSuchUser(name.to_owned()))?;
            s.permissions.retain(|(_, u), _| u != name);
            Ok(())
        })?;
        info!(user = name, "user deleted");
        Ok(())
    }

    /// Sets a new password (a new salt too).
    pub(crate) fn change_password(&self, name: &str, password: &str) -> Result<(), AdminError> {
        self.change_user(name, |u| u.password_hash = password::hash(password))
    }

    /// Replaces a user's tags.
    pub(crate) fn set_user_tags(&self, name: &str, tags: &[String]) -> Result<(), AdminError> {
        self.change_user(name, |u| {
            u.tags = tags.iter().filter(|t| !t.is_empty()).cloned().collect();
        })
    }

    /// Applies `update` to user `name` (see [`Self::change`]); `NoSuchUser` when there is none.
    fn change_user(&self, name: &str, update: impl FnOnce(&mut User)) -> Result<(), AdminError> {
        self.change(|s| {
            let u = s
                .users
                .get_mut(name)
                .ok_or_else(|| AdminError::NoSuchUser(name.to_owned()))?;
            update(u);
            Ok(())
        })
    }

    /// Adds a vhost (to the definitions only; the caller creates its topology).
    pub(crate) fn add_vhost(&self, name: &str) -> Result<(), AdminError> {
        if name.is_empty() {
            return Err(AdminError::InvalidName("empty vhost name".to_owned()));
        }
        self.change(|s| {
            if s.vhosts.contains_key(name) {
                return Err(AdminError::VHostExists(name.to_owned()));
            }
            s.vhosts.insert(name.to_owned(), ());
            Ok(())
        })
    }

    /// Deletes a vhost and every permission in it.
    pub(crate) fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
        self.change(|s| {
            s.vhosts
                .remove(name)
                .ok_or_else(|| AdminError::NoSuchVHost(name.to_owned()))?;
            s.permissions.retain(|(v, _), _| v != name);
            Ok(())
        })
    }

    /// Sets `user`'s permissions in `vhost`.
    pub(crate) fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AdminError> {
        let perm = Permission::new(configure, write, read).map_err(AdminError::InvalidRegex)?;
        self.change(|s| {
            if !s.users.contains_key(user) {
                return Err(AdminError::NoSuchUser(user.to_owned()));
            }
            if !s.vhosts.contains_key(vhost) {
                return Err(AdminError::NoSuchVHost(vhost.to_owned()));
            }
            s.permissions
                .insert((vhost.to_owned(), user.to_owned()), perm);
            Ok(())
        })
    }

    /// Removes `user`'s permissions in `vhost` (idempotent when the user and vhost exist).
    pub(crate) fn clear_permissions(&self, vhost: &str, user: &str) -> Result<(), AdminError> {
        self.change(|s| {
            if !s.users.contains_key(user) {
                return Err(AdminError::NoSuchUser(user.to_owned()));
            }
            if !s.vhosts.contains_key(vhost) {
                return Err(AdminError::NoSuchVHost(vhost.to_owned()));
            }
            s.permissions.remove(&(vhost.to_owned(), user.to_owned()));
            Ok(())
        })
    }

    fn snapshot(&self) -> AccessFile {
        definitions_of(&self.read())
    }
}

#[cfg(test)]
mod tests;

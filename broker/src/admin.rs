//! [`Admin`]: administration of a running broker's users, vhosts and permissions, the
//! operations of `rabbitmqctl add_user`, `set_permissions` and friends. The management HTTP
//! API and tests call it; every change is saved to the data directory before it returns.
//!
//! The changes block (an fsync of `access.json`; a vhost deletion also waits for the store's
//! commit): from async code, call them on the blocking pool (`tokio::task::spawn_blocking`),
//! as the management API does, not on a runtime worker that AMQP connections share.

use std::sync::Arc;

use crate::access::{PermissionInfo, UserInfo};
use crate::broker_state::BrokerShared;
use crate::error::AdminError;

/// A handle for administering a running broker (from [`crate::BrokerHandle::admin`]).
/// Cheap to clone; it keeps the broker's shared state alive, not the broker's tasks. Its
/// changes block until they are saved: in async code, call them under
/// `tokio::task::spawn_blocking`.
#[derive(Debug, Clone)]
pub struct Admin {
    /// The broker's shared state (also held by the accept loop and every connection).
    shared: Arc<BrokerShared>,
}

impl Admin {
    pub(crate) fn new(shared: Arc<BrokerShared>) -> Self {
        Self { shared }
    }

    /// `add_user NAME PASSWORD`: a user with no tags and no permissions.
    pub fn add_user(&self, name: &str, password: &str) -> Result<(), AdminError> {
        self.shared.access.add_user(name, password)
    }

    /// `delete_user NAME`, with all of its permissions.
    pub fn delete_user(&self, name: &str) -> Result<(), AdminError> {
        self.shared.access.delete_user(name)
    }

    /// `change_password NAME PASSWORD`.
    pub fn change_password(&self, name: &str, password: &str) -> Result<(), AdminError> {
        self.shared.access.change_password(name, password)
    }

    /// `set_user_tags NAME TAG...` (replaces the tags).
    pub fn set_user_tags(&self, name: &str, tags: &[String]) -> Result<(), AdminError> {
        self.shared.access.set_user_tags(name, tags)
    }

    /// `list_users`, sorted by name.
    pub fn list_users(&self) -> Vec<UserInfo> {
        self.shared.access.users()
    }

    /// One user, if it exists.
    pub fn user(&self, name: &str) -> Option<UserInfo> {
        self.shared.access.user(name)
    }

    /// `add_vhost NAME`.
    pub fn add_vhost(&self, name: &str) -> Result<(), AdminError> {
        self.shared.access.add_vhost(name)?;
        self.shared.vhosts.add(name);
        Ok(())
    }

    /// `delete_vhost NAME`: its queues (with their messages), exchanges and permissions go
    /// too, and its connections are closed with 320 CONNECTION_FORCED, as RabbitMQ does.
    /// Returns once the deletion is durable. Blocks for the store's commit and the save of the
    /// access definitions.
    ///
    /// The durable queues and exchanges leave the store first, the vhost leaves `access.json`
    /// only then: a crash in between leaves an empty vhost, never a deleted one whose queues
    /// come back when a vhost of that name is created again. A connection still in the vhost
    /// that declares a durable queue before its close arrives may leave that queue in the
    /// store (the same race RabbitMQ has).
    pub fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
        if !self.shared.access.vhost_exists(name) {
            return Err(AdminError::NoSuchVHost(name.to_owned()));
        }
        self.shared
            .connections
            .close_in_vhost(name, &format!("vhost '{name}' is deleted"));
        if let Some(vhost) = self.shared.vhosts.get(name) {
            for commit in vhost.delete_all() {
                // The writer thread (not a tokio task) resolves it: blocking here cannot
                // deadlock, on any runtime. The management API calls this on the blocking pool
                // (an fsync is too long to park a runtime worker for).
                futures::executor::block_on(commit).map_err(|e| AdminError::Save(e.to_string()))?;
            }
        }
        self.shared.access.delete_vhost(name)?;
        self.shared.vhosts.remove(name);
        Ok(())
    }

    /// `list_vhosts`, sorted.
    pub fn list_vhosts(&self) -> Vec<String> {
        self.shared.access.vhosts()
    }

    /// `set_permissions -p VHOST USER CONF WRITE READ`.
    pub fn set_permissions(
        &self,
        vhost: &str,
        user: &str,
        configure: &str,
        write: &str,
        read: &str,
    ) -> Result<(), AdminError> {
        self.shared
            .access
            .set_permissions(vhost, user, configure, write, read)
    }

    /// `clear_permissions -p VHOST USER`.
    pub fn clear_permissions(&self, vhost: &str, user: &str) -> Result<(), AdminError> {
        self.shared.access.clear_permissions(vhost, user)
    }

    /// `list_permissions` (all vhosts when `vhost` is `None`).
    pub fn list_permissions(&self, vhost: Option<&str>) -> Vec<PermissionInfo> {
        self.shared.access.permissions(vhost, None)
    }

    /// `list_user_permissions USER`.
    pub fn list_user_permissions(&self, user: &str) -> Vec<PermissionInfo> {
        self.shared.access.permissions(None, Some(user))
    }

    /// Checks credentials as a login from `peer` would (the management API's basic auth).
    pub fn authenticate(
        &self,
        user: &str,
        password: &str,
        peer: std::net::IpAddr,
    ) -> Option<UserInfo> {
        self.shared.access.authenticate(user, password, peer)
    }
}

//! [`Admin`]: administration of a running broker's users, vhosts and permissions, the
//! operations of `rabbitmqctl add_user`, `set_permissions` and friends. The management HTTP
//! API and tests call it; every change is saved to the data directory before it returns.

use std::sync::Arc;

use crate::access::{PermissionInfo, UserInfo};
use crate::broker_state::BrokerShared;
use crate::error::AdminError;

/// A handle for administering a running broker (from [`crate::BrokerHandle::admin`]).
/// Cheap to clone; it keeps the broker's shared state alive, not the broker's tasks.
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

    /// `delete_vhost NAME`: its queues, exchanges and permissions go too. Connections already
    /// in it keep working on the detached topology until they close.
    pub fn delete_vhost(&self, name: &str) -> Result<(), AdminError> {
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

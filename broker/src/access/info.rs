//! What the admin API reports about users and permissions ([`UserInfo`], [`PermissionInfo`]):
//! the public view of the access state, never with a password or its hash.

/// A user as the admin API reports it (never with its password).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserInfo {
    /// User name.
    pub name: String,
    /// Tags such as `administrator` and `monitoring`.
    pub tags: Vec<String>,
}

impl UserInfo {
    /// True when the user has the `administrator` tag.
    pub fn is_administrator(&self) -> bool {
        self.tags.iter().any(|t| t == "administrator")
    }

    /// True when the user may read monitoring data (`administrator` or `monitoring`).
    pub fn is_monitoring(&self) -> bool {
        self.tags
            .iter()
            .any(|t| t == "administrator" || t == "monitoring")
    }
}

/// One user's permissions in one vhost, as the admin API reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermissionInfo {
    /// The user.
    pub user: String,
    /// The vhost.
    pub vhost: String,
    /// Configure regex.
    pub configure: String,
    /// Write regex.
    pub write: String,
    /// Read regex.
    pub read: String,
}

//! The permission cache of one connection: which (access, resource) pairs its user was granted
//! in its vhost. Publishing checks `write` on the exchange for every `basic.publish`; with the
//! cache that is a short linear scan comparing names, no regex and no lock, until an
//! administrative change bumps the [`AccessControl`] generation and empties the cache.
//!
//! RabbitMQ caches per channel; one cache per connection is equivalent here because every
//! channel of a connection has the same user and vhost.

use std::sync::Arc;

use super::{Access, AccessControl, ResourceKind};
use crate::error::AmqpError;

/// How many grants are remembered (RabbitMQ's channel cache holds 12).
const CAPACITY: usize = 16;

/// A connection's user, vhost and granted-access cache.
#[derive(Debug)]
pub(crate) struct Grants {
    /// The authenticated user.
    pub(crate) user: String,
    /// The vhost the connection opened.
    vhost: String,
    /// The broker's user database (shared with every connection and the admin API).
    access: Arc<AccessControl>,
    /// The generation the cache was filled at.
    generation: u64,
    /// Granted (access, kind, name), most recent last.
    cache: Vec<(Access, ResourceKind, Box<str>)>,
}

impl Grants {
    /// An empty cache for `user` in `vhost`.
    pub(crate) fn new(user: String, vhost: String, access: Arc<AccessControl>) -> Self {
        Self {
            user,
            vhost,
            generation: access.generation(),
            access,
            cache: Vec::with_capacity(CAPACITY),
        }
    }

    /// True when the user has the `impersonator` tag: it may publish messages whose
    /// `user_id` names another user (RabbitMQ's rule). Looked up only for such a publish.
    pub(crate) fn may_impersonate(&self) -> bool {
        self.access
            .user(&self.user)
            .is_some_and(|u| u.tags.iter().any(|t| t == "impersonator"))
    }

    /// Ok when the user may `access` the resource; otherwise 403 ACCESS_REFUSED worded as
    /// RabbitMQ words it (`write access to exchange 'x' in vhost '/' refused for user 'u'`).
    pub(crate) fn check(
        &mut self,
        access: Access,
        kind: ResourceKind,
        name: &str,
    ) -> Result<(), AmqpError> {
        let generation = self.access.generation();
        if generation != self.generation {
            self.cache.clear();
            self.generation = generation;
        } else if self
            .cache
            .iter()
            .any(|(a, k, n)| *a == access && *k == kind && &**n == name)
        {
            return Ok(());
        }
        let allowed = self.access.with_state(|s| {
            s.permission(&self.vhost, &self.user)
                .is_some_and(|p| p.allows(access, kind, name))
        });
        if !allowed {
            let shown = if kind == ResourceKind::Exchange && name.is_empty() {
                "amq.default"
            } else {
                name
            };
            return Err(AmqpError::access_refused(format!(
                "{} access to {} '{shown}' in vhost '{}' refused for user '{}'",
                access.name(),
                kind.name(),
                self.vhost,
                self.user
            )));
        }
        if self.cache.len() == CAPACITY {
            self.cache.remove(0);
        }
        self.cache.push((access, kind, name.into()));
        Ok(())
    }
}

//! Who is asking the management API, and what RabbitMQ's user tags let them see and do.
//!
//! The rules, as RabbitMQ 3.10's management plugin applies them (its "management user tags"
//! documentation, checked endpoint by endpoint against `rabbitmq_management` 3.10.8):
//!
//! | tag             | vhosts listed | queues, exchanges, bindings | connections, channels, consumers | totals (overview) | users, permissions, vhost admin |
//! |-----------------|---------------|-----------------------------|----------------------------------|-------------------|---------------------------------|
//! | `management`    | with permissions | in vhosts with permissions | own only                     | own vhosts, own connections | no |
//! | `policymaker`   | as management | as management               | as management                    | as management     | no |
//! | `monitoring`    | all           | in vhosts with permissions  | everyone's                       | global            | no |
//! | `administrator` | all           | all                         | everyone's                       | global            | yes |
//!
//! Writes: a non-administrator may close its own connections, and delete (configure
//! permission) or purge (read permission) queues in vhosts it has permissions in, as the
//! management plugin allows through its AMQP permissions; everything else is
//! administrator-only.
//!
//! Departures from RabbitMQ, each stricter: refusals are 403 (RabbitMQ 3.10 answers 401 with a
//! new login challenge); a vhost the caller may not see answers exactly as one that does not
//! exist would for that caller (RabbitMQ answers 404 for a missing vhost but 401 for an
//! inaccessible one, which tells vhost names apart), and likewise another user's connection
//! answers as a missing one.

use std::sync::Arc;

use axum::http::StatusCode;

use super::{ApiError, Ctx};
use crate::access::{Access, ResourceKind, UserInfo};
use crate::connection_registry::ConnectionInfo;
use crate::vhost::VHost;

/// What a tag lets its holder see; ordered from least to most.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Level {
    /// `management` or `policymaker`: own vhosts, own connections.
    Management,
    /// `monitoring`: every vhost's name and totals, everyone's connections and channels.
    Monitoring,
    /// `administrator`: everything, and the administrative writes.
    Administrator,
}

impl Level {
    /// The highest level the user's tags grant (`None`: no access to the management API).
    pub(crate) fn of(user: &UserInfo) -> Option<Self> {
        user.tags
            .iter()
            .filter_map(|t| match t.as_str() {
                "administrator" => Some(Self::Administrator),
                "monitoring" => Some(Self::Monitoring),
                "management" | "policymaker" => Some(Self::Management),
                _ => None,
            })
            .max()
    }
}

/// An authenticated user of the management API (put in each request's extensions by the
/// authentication middleware).
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// The user, with its tags.
    pub(crate) user: UserInfo,
    /// What its tags grant.
    pub(crate) level: Level,
}

impl Caller {
    /// The refusal for an administrator-only endpoint.
    pub(crate) fn require_administrator(&self) -> Result<(), ApiError> {
        if self.level == Level::Administrator {
            Ok(())
        } else {
            Err(ApiError::forbidden("Not administrator user"))
        }
    }

    /// The refusal for an endpoint of monitoring users and administrators (the node and the
    /// per-object metrics).
    pub(crate) fn require_monitor(&self) -> Result<(), ApiError> {
        if self.sees_everyone() {
            Ok(())
        } else {
            Err(ApiError::forbidden("Not monitor user"))
        }
    }

    /// True for `monitoring` and `administrator`: everyone's connections, channels and
    /// consumers, every vhost's name and totals.
    pub(crate) fn sees_everyone(&self) -> bool {
        self.level >= Level::Monitoring
    }

    /// True when the caller may see the objects (queues, exchanges, bindings, channels) of
    /// `vhost`: administrators always, everyone else where they have permissions.
    fn may_enter(&self, ctx: &Ctx, vhost: &str) -> bool {
        if self.level == Level::Administrator {
            ctx.broker.access.vhost_exists(vhost)
        } else {
            ctx.broker.access.can_open_vhost(&self.user.name, vhost)
        }
    }

    /// The vhosts whose objects the caller sees, sorted by name.
    pub(crate) fn entered_vhosts(&self, ctx: &Ctx) -> Vec<Arc<VHost>> {
        ctx.broker
            .access
            .vhosts()
            .iter()
            .filter(|v| self.may_enter(ctx, v))
            .filter_map(|v| ctx.broker.vhosts.get(v))
            .collect()
    }

    /// The vhosts `/api/vhosts` lists: all of them for `monitoring` and `administrator`,
    /// those with permissions for the others.
    pub(crate) fn listed_vhosts(&self, ctx: &Ctx) -> Vec<Arc<VHost>> {
        if self.sees_everyone() {
            ctx.broker
                .access
                .vhosts()
                .iter()
                .filter_map(|v| ctx.broker.vhosts.get(v))
                .collect()
        } else {
            self.entered_vhosts(ctx)
        }
    }

    /// `vhost`, when the caller may see its objects. A vhost that does not exist is 404 for an
    /// administrator; for everyone else it is the same 403 as a vhost they have no
    /// permissions in, so that the answer does not tell which vhost names exist.
    pub(crate) fn enter(&self, ctx: &Ctx, vhost: &str) -> Result<Arc<VHost>, ApiError> {
        let refused = || {
            if self.level == Level::Administrator {
                ApiError::not_found(format!("vhost '{vhost}' does not exist"))
            } else {
                ApiError::forbidden("User not authorised to access virtual host")
            }
        };
        if !self.may_enter(ctx, vhost) {
            return Err(refused());
        }
        ctx.broker.vhosts.get(vhost).ok_or_else(refused)
    }

    /// True when the caller sees connection `c` (and its channels and consumers).
    pub(crate) fn sees_connection(&self, c: &ConnectionInfo) -> bool {
        self.sees_everyone() || c.user == self.user.name
    }

    /// True when the caller may close connection `c`: administrators any, others their own.
    pub(crate) fn may_close(&self, c: &ConnectionInfo) -> bool {
        self.level == Level::Administrator || c.user == self.user.name
    }

    /// Checks the caller's AMQP permission to act on queue `queue` of `vhost` (the caller
    /// already entered it): administrators always may, others as their permission regexes
    /// say, as RabbitMQ's management plugin acts through the user's AMQP permissions.
    pub(crate) fn require_queue_access(
        &self,
        ctx: &Ctx,
        vhost: &str,
        access: Access,
        queue: &str,
    ) -> Result<(), ApiError> {
        self.require_access(ctx, vhost, access, ResourceKind::Queue, queue)
    }

    /// As [`Self::require_queue_access`], for a queue or an exchange (`""` is checked as
    /// `amq.default`, as RabbitMQ does).
    pub(crate) fn require_access(
        &self,
        ctx: &Ctx,
        vhost: &str,
        access: Access,
        kind: ResourceKind,
        name: &str,
    ) -> Result<(), ApiError> {
        if self.level == Level::Administrator {
            return Ok(());
        }
        let allowed = ctx.broker.access.with_state(|s| {
            s.permission(vhost, &self.user.name)
                .is_some_and(|p| p.allows(access, kind, name))
        });
        if allowed {
            Ok(())
        } else {
            Err(ApiError {
                status: StatusCode::FORBIDDEN,
                reason: format!(
                    "{} access to {} '{name}' in vhost '{vhost}' refused for user '{}'",
                    access.name(),
                    kind.name(),
                    self.user.name
                ),
            })
        }
    }
}

/// Queue `name` of `vhost`, which the caller must be allowed to enter.
pub(crate) fn find_queue(
    ctx: &Ctx,
    me: &Caller,
    vhost: &str,
    name: &str,
) -> Result<(Arc<VHost>, Arc<crate::queue::Queue>), ApiError> {
    let vh = me.enter(ctx, vhost)?;
    let q = vh
        .queue(name)
        .ok_or_else(|| ApiError::not_found(format!("no queue '{name}' in vhost '{vhost}'")))?;
    Ok((vh, q))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn user(tags: &[&str]) -> UserInfo {
        UserInfo {
            name: "u".to_owned(),
            tags: tags.iter().map(|t| (*t).to_owned()).collect(),
        }
    }

    #[test]
    fn the_highest_tag_wins_and_other_tags_grant_nothing() {
        assert_eq!(Level::of(&user(&[])), None);
        assert_eq!(Level::of(&user(&["impersonator", ""])), None);
        assert_eq!(Level::of(&user(&["management"])), Some(Level::Management));
        assert_eq!(Level::of(&user(&["policymaker"])), Some(Level::Management));
        assert_eq!(
            Level::of(&user(&["management", "monitoring"])),
            Some(Level::Monitoring)
        );
        assert_eq!(
            Level::of(&user(&["monitoring", "administrator", "management"])),
            Some(Level::Administrator)
        );
    }
}

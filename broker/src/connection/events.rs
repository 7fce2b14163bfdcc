//! What other tasks tell a connection task ([`ConnEvent`]: store confirms, an operator's close)
//! and the replies held until the store commits (`-ok`s that promise durability).

use super::*;

/// Resolves when the held reply's commit does (never when there is none: its `select!` branch
/// is disabled then).
pub(super) async fn committed(
    held: &mut Option<HeldReply>,
) -> Result<(), crate::store::StoreError> {
    match held {
        Some(held) => (&mut held.commit).await,
        None => std::future::pending().await,
    }
}

/// A reply that must not go out before the store has committed what it reports: a durable
/// topology change's `-ok`, `tx.commit-ok`, `purge-ok`.
#[derive(Debug)]
pub(super) struct HeldReply {
    /// The channel to reply on.
    pub(super) channel: u16,
    /// The reply.
    pub(super) method: AMQPClass,
    /// Resolves once the change is committed (or failed).
    pub(super) commit: crate::store::Commit,
}

impl Connection {
    pub(super) fn handle_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Close { reason } => {
                self.fail(0, AmqpError::new(ReplyCode::ConnectionForced, reason));
            }
            ConnEvent::Confirm {
                channel,
                generation,
                seq,
                ok,
            } => {
                let Some(ch) = self.channels.get_mut(&channel) else {
                    return;
                };
                let same = generation
                    .upgrade()
                    .is_some_and(|g| Arc::ptr_eq(&g, &ch.shared));
                if ch.state != ChannelState::Open || !same {
                    return;
                }
                let Some(confirm) = ch.confirm.as_mut() else {
                    return;
                };
                confirm.pending_store = confirm.pending_store.saturating_sub(1);
                ch.shared.set_unconfirmed(confirm.pending_store);
                let method = if ok {
                    self.vhost.stats.confirmed();
                    basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: seq,
                        multiple: false,
                    })
                } else {
                    basic::AMQPMethod::Nack(basic::Nack {
                        delivery_tag: seq,
                        multiple: false,
                        requeue: false,
                    })
                };
                self.send(channel, AMQPClass::Basic(method));
            }
        }
    }

    /// Sends the coalesced `basic.ack multiple=true` of every confirming channel.
    pub(super) fn flush_confirms(&mut self) {
        for (id, ch) in self.channels.iter_mut() {
            if let Some(upto) = ch.confirm.as_mut().and_then(|c| c.ack_upto.take()) {
                let _ = self.writer.send(Outbound::Method(
                    *id,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: upto,
                        multiple: true,
                    })),
                ));
            }
        }
    }

    /// Sends `method` on `channel` once `commit` resolves (at once when there is none): the
    /// reply to a change the store must make durable first. Until then this connection
    /// handles no further frame, so later replies cannot overtake it; other connections are
    /// not held up, and the store's group commit serves them all with one fsync. If the commit
    /// fails the connection is closed with 541 INTERNAL_ERROR instead.
    pub(crate) fn reply_when_committed(
        &mut self,
        channel: u16,
        method: AMQPClass,
        commit: Option<crate::store::Commit>,
    ) {
        match commit {
            None => self.send(channel, method),
            Some(commit) => {
                self.held = Some(HeldReply {
                    channel,
                    method,
                    commit,
                });
            }
        }
    }

    /// The held reply's commit resolved: send it, or fail the connection.
    pub(super) fn release_held(&mut self, outcome: Result<(), crate::store::StoreError>) {
        let Some(held) = self.held.take() else {
            return;
        };
        if self.closing_since.is_some() {
            return;
        }
        match outcome {
            Ok(()) => {
                let open = self
                    .channels
                    .get(&held.channel)
                    .is_some_and(|ch| ch.state == ChannelState::Open);
                if open {
                    self.send(held.channel, held.method);
                }
            }
            Err(err) => self.fail(
                0,
                AmqpError::new(
                    ReplyCode::InternalError,
                    format!("cannot make the change durable: {err}"),
                ),
            ),
        }
    }
}

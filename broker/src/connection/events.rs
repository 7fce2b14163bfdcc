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
                let Some(ch) = self.session.channels.get_mut(&channel) else {
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
                    self.session.vhost.stats.confirmed();
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
                self.session.send(channel, AMQPClass::Basic(method));
            }
        }
    }

    /// Sends the coalesced `basic.ack multiple=true` of every confirming channel.
    pub(super) fn flush_confirms(&mut self) {
        for (id, ch) in self.session.channels.iter_mut() {
            if let Some(upto) = ch.confirm.as_mut().and_then(|c| c.ack_upto.take()) {
                let _ = self.session.outbox.send(Outbound::Method(
                    *id,
                    AMQPClass::Basic(basic::AMQPMethod::Ack(basic::Ack {
                        delivery_tag: upto,
                        multiple: true,
                    })),
                ));
            }
        }
    }

    /// The held reply's commit resolved: send it, or fail the connection.
    pub(super) fn release_held(&mut self, outcome: Result<(), crate::store::StoreError>) {
        let Some(held) = self.session.held.take() else {
            return;
        };
        if self.closing_since.is_some() {
            return;
        }
        match outcome {
            Ok(()) => {
                let open = self
                    .session
                    .channels
                    .get(&held.channel)
                    .is_some_and(|ch| ch.state == ChannelState::Open);
                if open {
                    self.session.send(held.channel, held.method);
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

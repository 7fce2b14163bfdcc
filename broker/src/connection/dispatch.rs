//! Dispatch: each decoded frame to its place — connection-class methods here, channel methods
//! to `crate::methods`, content headers and bodies assembled into a publish — with the reply
//! codes of frames out of place (504, 505, 530).

use super::*;
use crate::error::MethodId;

impl Connection {
    pub(super) fn handle_frame(&mut self, frame: InboundFrame) {
        if self.closing_since.is_some() {
            match frame {
                InboundFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)),
                ) => {
                    self.done = true;
                }
                InboundFrame::Method(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::Close(_)),
                ) => {
                    self.session.send(
                        0,
                        AMQPClass::Connection(connection::AMQPMethod::CloseOk(
                            connection::CloseOk {},
                        )),
                    );
                    self.done = true;
                }
                _ => {}
            }
            return;
        }
        let result = match frame {
            InboundFrame::Heartbeat(0) => Ok(()),
            InboundFrame::Heartbeat(ch) => Err((
                ch,
                AmqpError::unexpected_frame(format!("heartbeat frame on channel {ch}")),
            )),
            InboundFrame::Method(0, method) => self.connection_method(method).map_err(|e| (0, e)),
            InboundFrame::Method(ch, method) => self.channel_method(ch, method),
            InboundFrame::Header(ch, header) => self.content_header(ch, header),
            InboundFrame::Body(ch, body) => self.content_body(ch, body),
        };
        if let Err((ch, err)) = result {
            self.fail(ch, err);
        }
    }

    pub(super) fn connection_method(&mut self, method: AMQPClass) -> Result<(), AmqpError> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        match method {
            AMQPClass::Connection(connection::AMQPMethod::Close(close)) => {
                debug!(connection = self.session.id, peer = %self.peer, code = close.reply_code, text = close.reply_text.as_str(), "client closed the connection");
                self.session.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::CloseOk(connection::CloseOk {})),
                );
                self.done = true;
                self.closing_since = Some(Instant::now());
                Ok(())
            }
            AMQPClass::Connection(connection::AMQPMethod::CloseOk(_)) => Ok(()),
            AMQPClass::Connection(connection::AMQPMethod::UpdateSecret(_)) => {
                self.session.send(
                    0,
                    AMQPClass::Connection(connection::AMQPMethod::UpdateSecretOk(
                        connection::UpdateSecretOk {},
                    )),
                );
                Ok(())
            }
            AMQPClass::Connection(_) => Err(AmqpError::channel_error(
                "unexpected method in connection state running",
            )
            .in_method(class_id, method_id)),
            _ => Err(
                AmqpError::channel_error("unexpected method in connection state running")
                    .in_method(class_id, method_id),
            ),
        }
    }

    pub(super) fn channel_method(
        &mut self,
        ch: u16,
        method: AMQPClass,
    ) -> Result<(), (u16, AmqpError)> {
        let (class_id, method_id) = (method.get_amqp_class_id(), method.get_amqp_method_id());
        let conn_err = |e: AmqpError| (0u16, e.in_method(class_id, method_id));
        let Some(channel) = self.session.channels.get_mut(&ch) else {
            if let AMQPClass::Channel(channel::AMQPMethod::Open(_)) = method {
                // RabbitMQ names no method in this close (amqp_error(..., 'none')).
                self.check_channel_max(ch).map_err(|e| (0, e))?;
                let shared = Arc::new(crate::channel::ChannelShared::new(
                    ch,
                    self.session.id,
                    self.session.outbox.clone(),
                    self.session.cancel_notify,
                ));
                let channel = Channel::new(shared, &self.session.broker.channels);
                self.session.channels.insert(ch, channel);
                self.session.send(
                    ch,
                    AMQPClass::Channel(channel::AMQPMethod::OpenOk(channel::OpenOk {})),
                );
                return Ok(());
            }
            // Anything else, channel.close-ok included (the server sent no close on a channel
            // it does not know), is RabbitMQ's 504 "expected 'channel.open'".
            return Err(conn_err(AmqpError::channel_error(format!(
                "expected 'channel.open' on channel {ch}"
            ))));
        };
        if channel.state == ChannelState::Closing {
            match method {
                AMQPClass::Channel(channel::AMQPMethod::CloseOk(_)) => {
                    self.session.channels.remove(&ch);
                }
                // The client's close crossed ours: answer it, and keep the channel until the
                // close-ok the client owes for ours (AMQP 0-9-1 channel.close: "the response
                // to receiving a Close after sending Close must be to send Close-Ok"; lapin
                // does). Removing it here made that close-ok a 504 on an unknown channel;
                // RabbitMQ 3.10 keeps the channel too (tests/broker_raw_frames.rs).
                AMQPClass::Channel(channel::AMQPMethod::Close(_)) => {
                    self.session.send(
                        ch,
                        AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
                    );
                }
                _ => {}
            }
            return Ok(());
        }
        if channel.content.is_some() {
            return Err(conn_err(AmqpError::unexpected_frame(format!(
                "expected content header for class 60, got method {class_id}.{method_id}"
            ))));
        }
        crate::methods::dispatch(&mut self.session, ch, method).map_err(|e| {
            let e = e.in_method(class_id, method_id);
            if e.code.is_channel_level() {
                (ch, e)
            } else {
                (0, e)
            }
        })
    }

    /// Refuses to open channel `ch` beyond the negotiated channel_max (0 = no limit) with 530
    /// NOT_ALLOWED. RabbitMQ counts open channels (rabbit_reader.erl `create_channel`: "number
    /// of channels opened (~w) has reached the negotiated channel_max (~w)"); we also refuse a
    /// channel *number* above channel_max, which the spec forbids ("the highest channel
    /// number") and RabbitMQ lets through while the count is below the limit.
    pub(super) fn check_channel_max(&self, ch: u16) -> Result<(), AmqpError> {
        if self.channel_max == 0 {
            return Ok(());
        }
        let open = self.session.channels.len();
        if open >= usize::from(self.channel_max) {
            return Err(AmqpError::not_allowed(format!(
                "number of channels opened ({open}) has reached the negotiated channel_max ({})",
                self.channel_max
            )));
        }
        if ch > self.channel_max {
            return Err(AmqpError::not_allowed(format!(
                "channel number {ch} is above the negotiated channel_max ({})",
                self.channel_max
            )));
        }
        Ok(())
    }

    pub(super) fn content_header(
        &mut self,
        ch: u16,
        header: amq_protocol::frame::AMQPContentHeader,
    ) -> Result<(), (u16, AmqpError)> {
        let Some(channel) = content_channel(&mut self.session.channels, ch)? else {
            return Ok(());
        };
        let Some(content) = channel.content.as_mut().filter(|c| c.header.is_none()) else {
            return Err((
                0,
                AmqpError::unexpected_frame("content header without a preceding basic.publish"),
            ));
        };
        if header.class_id != 60 {
            return Err((
                0,
                AmqpError::unexpected_frame(format!(
                    "content header for class {}",
                    header.class_id
                )),
            ));
        }
        let max_message_size = self.session.broker.config.max_message_size;
        if header.body_size > max_message_size {
            // RabbitMQ's text (rabbit_channel:check_msg_size); it checks the assembled body,
            // we check the announced size so an oversized body is never buffered. The rest of
            // the content is dropped with the closing channel.
            // RabbitMQ leaves out "configured" at its own ceiling, 512 MiB.
            let configured = if max_message_size == 512 * 1024 * 1024 {
                ""
            } else {
                "configured "
            };
            return Err((
                ch,
                AmqpError::precondition_failed(format!(
                    "message size {} is larger than {configured}max size {max_message_size}",
                    header.body_size
                ))
                .in_amqp_method(MethodId::BASIC_PUBLISH),
            ));
        }
        content.header = Some((header.properties, header.body_size));
        if header.body_size == 0 {
            self.finish_publish(ch, None)
        } else {
            Ok(())
        }
    }

    pub(super) fn content_body(
        &mut self,
        ch: u16,
        body: bytes::Bytes,
    ) -> Result<(), (u16, AmqpError)> {
        let Some(channel) = content_channel(&mut self.session.channels, ch)? else {
            return Ok(());
        };
        let Some(content) = channel.content.as_mut().filter(|c| c.header.is_some()) else {
            return Err((
                0,
                AmqpError::unexpected_frame("content body without a content header"),
            ));
        };
        let size = content.header.as_ref().map_or(0, |h| h.1);
        let whole = content.received == 0 && body.len() as u64 == size;
        content.received += body.len() as u64;
        if content.received > size {
            return Err((
                0,
                AmqpError::unexpected_frame("content body larger than declared in its header"),
            ));
        }
        if whole {
            // The body came in one frame: keep it as a slice of the read buffer, and charge
            // the block it pins (see `read_block`).
            let block = self.blocks.charge();
            return self.finish_publish(ch, Some((body, block)));
        }
        content.push(&body, &self.session.vhost.account);
        if content.received == size {
            self.finish_publish(ch, None)
        } else {
            Ok(())
        }
    }

    /// Publishes the content of channel `ch`: its body is `whole` (one frame: a read-buffer
    /// slice and the charge of its block), or else the frames the assembly copied.
    pub(super) fn finish_publish(
        &mut self,
        ch: u16,
        whole: Option<(bytes::Bytes, Arc<crate::message::Held>)>,
    ) -> Result<(), (u16, AmqpError)> {
        let Some(mut content) = self
            .session
            .channels
            .get_mut(&ch)
            .and_then(|c| c.content.take())
        else {
            return Ok(());
        };
        let (body, block) = match whole {
            Some((body, block)) => (body, Some(block)),
            None => (content.take_body(), None),
        };
        let (properties, _) = content.header.take().unwrap_or_default();
        self.session
            .publish(ch, content.publish, properties, body, block)
            .map_err(|e| {
                let e = e.in_amqp_method(MethodId::BASIC_PUBLISH);
                if e.code.is_channel_level() {
                    (ch, e)
                } else {
                    (0, e)
                }
            })
    }
}

/// The channel a content frame (header or body) continues: 504 when `ch` was never opened,
/// `None` when it is closing (the rest of its content is dropped with it).
fn content_channel(
    channels: &mut HashMap<u16, Channel>,
    ch: u16,
) -> Result<Option<&mut Channel>, (u16, AmqpError)> {
    match channels.get_mut(&ch) {
        None => Err((
            0,
            AmqpError::channel_error(format!("expected 'channel.open' on channel {ch}")),
        )),
        Some(channel) if channel.state == ChannelState::Closing => Ok(None),
        Some(channel) => Ok(Some(channel)),
    }
}

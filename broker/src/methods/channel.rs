//! `channel.close` and `channel.flow` from the client (`channel.open` is handled by the
//! connection, which owns the channel map).

use amq_protocol::protocol::{channel, AMQPClass};

use super::Session;
use crate::error::AmqpError;

impl Session {
    /// `channel.close`: release everything the channel holds, answer `close-ok`.
    pub(crate) fn channel_close(&mut self, ch: u16) -> Result<(), AmqpError> {
        self.release_channel(ch);
        self.channels.remove(&ch);
        self.send(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::CloseOk(channel::CloseOk {})),
        );
        Ok(())
    }

    /// `channel.flow`: pause or resume deliveries to this channel's consumers.
    ///
    /// Like RabbitMQ, `active=false` is refused with 540 NOT_IMPLEMENTED (clients should use
    /// `basic.qos` instead); the pause machinery stays for a later opt-in.
    pub(crate) fn channel_flow(&mut self, ch: u16, active: bool) -> Result<(), AmqpError> {
        if !active {
            return Err(AmqpError::not_implemented("active=false"));
        }
        let Some(channel) = self.channels.get(&ch) else {
            return Ok(());
        };
        let shared = channel.shared.clone();
        shared.set_flow(active);
        self.send(
            ch,
            AMQPClass::Channel(channel::AMQPMethod::FlowOk(channel::FlowOk { active })),
        );
        if active {
            self.poke_consumed_queues(&shared);
        }
        Ok(())
    }
}

//! The `confirm` class: `confirm.select` puts a channel in publisher-confirm mode (the acks
//! themselves are sent by `basic_publish`).

use amq_protocol::protocol::{confirm, AMQPClass};

use super::Session;
use crate::channel::{ChannelMode, ConfirmState};
use crate::error::AmqpError;

impl Session {
    /// `confirm.select`.
    pub(crate) fn confirm_select(&mut self, ch: u16, nowait: bool) -> Result<(), AmqpError> {
        let Some(channel) = self.channels.get_mut(&ch) else {
            return Ok(());
        };
        if channel.tx.is_some() {
            return Err(AmqpError::precondition_failed(
                "cannot switch from tx to confirm mode",
            ));
        }
        if channel.confirm.is_none() {
            channel.confirm = Some(ConfirmState::default());
            channel.shared.set_mode(ChannelMode::Confirm);
        }
        if !nowait {
            self.send(
                ch,
                AMQPClass::Confirm(confirm::AMQPMethod::SelectOk(confirm::SelectOk {})),
            );
        }
        Ok(())
    }
}

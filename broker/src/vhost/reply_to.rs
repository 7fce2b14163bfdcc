//! The direct reply-to registry: `amq.rabbitmq.reply-to.<token>` names and the channel each
//! one delivers to.

use super::*;

impl VHost {
    /// Registers a direct reply-to channel; returns its token.
    pub(crate) fn register_reply_to(&self, channel: &Arc<ChannelShared>) -> String {
        let token = format!(
            "{:016x}{:016x}",
            rand::random::<u64>(),
            (channel.connection_id << 16) | u64::from(channel.id)
        );
        let mut map = self.reply_to.lock().unwrap_or_else(|e| e.into_inner());
        map.retain(|_, w| w.strong_count() > 0);
        map.insert(token.clone(), Arc::downgrade(channel));
        token
    }

    /// The channel waiting for replies under `token`.
    pub(crate) fn reply_to_channel(&self, token: &str) -> Option<Arc<ChannelShared>> {
        let map = self.reply_to.lock().unwrap_or_else(|e| e.into_inner());
        map.get(token)?.upgrade()
    }

    /// Forgets a reply-to token (cancel or channel close).
    pub(crate) fn unregister_reply_to(&self, token: &str) {
        let mut map = self.reply_to.lock().unwrap_or_else(|e| e.into_inner());
        map.remove(token);
    }
}

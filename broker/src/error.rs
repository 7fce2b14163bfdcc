//! Errors of the broker, and the one place where AMQP reply codes are mapped.
//!
//! Two kinds of failure exist on the wire: a *channel exception* (403, 404, 405, 406) closes one
//! channel with `channel.close`; a *connection exception* (320, 501–506, 530, 540, 541) closes the
//! whole connection with `connection.close`. [`ReplyCode`] names every code we send and
//! [`ReplyCode::is_channel_level`] decides which of the two a failure becomes. Reply texts follow
//! RabbitMQ's shape (`NOT_FOUND - no queue 'q' in vhost '/'`) because clients log them verbatim.

use std::fmt;

/// Defines [`ReplyCode`] from one table: each variant with its numeric code and the spec's
/// name, so the number, the name and the list of codes cannot drift apart.
macro_rules! reply_codes {
    ($($(#[doc = $doc:literal])* $variant:ident = $code:literal, $name:literal;)*) => {
        /// An AMQP 0-9-1 reply code (spec section 1.2, "constants"), as the broker sends it.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum ReplyCode {
            $($(#[doc = $doc])* $variant,)*
        }

        impl ReplyCode {
            /// Every reply code, in the order of the table.
            #[cfg(test)]
            const ALL: &'static [ReplyCode] = &[$(Self::$variant),*];

            /// The numeric code that goes on the wire.
            pub fn code(self) -> u16 {
                match self {
                    $(Self::$variant => $code,)*
                }
            }

            /// The spec's name for the code, used as the prefix of reply texts.
            pub fn name(self) -> &'static str {
                match self {
                    $(Self::$variant => $name,)*
                }
            }
        }
    };
}

reply_codes! {
    /// 200: normal close.
    ReplySuccess = 200, "OK";
    /// 312: a mandatory message could not be routed (`basic.return`).
    NoRoute = 312, "NO_ROUTE";
    /// 320: the broker is shutting down.
    ConnectionForced = 320, "CONNECTION_FORCED";
    /// 403: forbidden by access rules (reserved `amq.` names, internal exchanges, bad login).
    AccessRefused = 403, "ACCESS_REFUSED";
    /// 404: no such exchange or queue.
    NotFound = 404, "NOT_FOUND";
    /// 405: another connection owns the exclusive queue.
    ResourceLocked = 405, "RESOURCE_LOCKED";
    /// 406: a precondition failed (inequivalent redeclare, unknown delivery tag, ...).
    PreconditionFailed = 406, "PRECONDITION_FAILED";
    /// 501: malformed frame (bad end octet, over frame_max, unknown type).
    FrameError = 501, "FRAME_ERROR";
    /// 502: a field held an invalid value.
    SyntaxError = 502, "SYNTAX_ERROR";
    /// 503: a method that is not valid here (bad exchange type, bad mechanism).
    CommandInvalid = 503, "COMMAND_INVALID";
    /// 504: a method on a channel that is not open, or a channel reopened.
    ChannelError = 504, "CHANNEL_ERROR";
    /// 505: a frame that was not expected in this state (content out of sequence).
    UnexpectedFrame = 505, "UNEXPECTED_FRAME";
    /// 506: the broker lacks a resource (too many channels).
    ResourceError = 506, "RESOURCE_ERROR";
    /// 530: forbidden by configuration (unknown vhost, reused consumer tag).
    NotAllowed = 530, "NOT_ALLOWED";
    /// 540: a method we do not implement.
    NotImplemented = 540, "NOT_IMPLEMENTED";
    /// 541: a broker bug.
    InternalError = 541, "INTERNAL_ERROR";
}

impl ReplyCode {
    /// True for the soft errors that close only the channel (403, 404, 405, 406).
    pub fn is_channel_level(self) -> bool {
        matches!(
            self,
            Self::AccessRefused | Self::NotFound | Self::ResourceLocked | Self::PreconditionFailed
        )
    }
}

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.code(), self.name())
    }
}

/// A failure to report to the client with `channel.close` or `connection.close`.
///
/// `class_id`/`method_id` name the method that failed (0 when none did, e.g. a frame error);
/// the connection fills them in from the method it was handling.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{} - {text}", code.name())]
pub(crate) struct AmqpError {
    /// What went wrong, and whether it closes the channel or the connection.
    pub(crate) code: ReplyCode,
    /// Human-readable detail, without the `CODE_NAME - ` prefix.
    pub(crate) text: String,
    /// The class of the failing method, or 0.
    pub(crate) class_id: u16,
    /// The method id of the failing method, or 0.
    pub(crate) method_id: u16,
}

/// An AMQP method by (class id, method id), AMQP 0-9-1 §1.4, for the errors the broker reports
/// against a method it names itself (the others take the ids of the decoded frame).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct MethodId(pub(crate) u16, pub(crate) u16);

impl MethodId {
    /// `connection.open`.
    pub(crate) const CONNECTION_OPEN: Self = Self(10, 40);
    /// `basic.publish`.
    pub(crate) const BASIC_PUBLISH: Self = Self(60, 40);
}

impl AmqpError {
    /// A failure with `code` and detail `text`; the failing method is filled in later.
    pub(crate) fn new(code: ReplyCode, text: impl Into<String>) -> Self {
        Self {
            code,
            text: text.into(),
            class_id: 0,
            method_id: 0,
        }
    }

    /// Records which method failed, unless already recorded.
    pub(crate) fn in_method(mut self, class_id: u16, method_id: u16) -> Self {
        if self.class_id == 0 && self.method_id == 0 {
            self.class_id = class_id;
            self.method_id = method_id;
        }
        self
    }

    /// [`AmqpError::in_method`] for a method the broker names itself.
    pub(crate) fn in_amqp_method(self, method: MethodId) -> Self {
        self.in_method(method.0, method.1)
    }

    /// The reply text as it goes on the wire: `CODE_NAME - detail`, cut to fit a short string.
    pub(crate) fn reply_text(&self) -> String {
        let mut text = format!("{} - {}", self.code.name(), self.text);
        truncate_short(&mut text);
        text
    }
}

/// One constructor per reply code the broker raises itself: `AmqpError::not_found(text)` is
/// `AmqpError::new(ReplyCode::NotFound, text)`.
macro_rules! amqp_error_constructors {
    ($($(#[doc = $doc:literal])* $constructor:ident => $variant:ident;)*) => {
        impl AmqpError {
            $(
                $(#[doc = $doc])*
                pub(crate) fn $constructor(text: impl Into<String>) -> Self {
                    Self::new(ReplyCode::$variant, text)
                }
            )*
        }
    };
}

amqp_error_constructors! {
    /// 403 ACCESS_REFUSED.
    access_refused => AccessRefused;
    /// 404 NOT_FOUND.
    not_found => NotFound;
    /// 405 RESOURCE_LOCKED.
    resource_locked => ResourceLocked;
    /// 406 PRECONDITION_FAILED.
    precondition_failed => PreconditionFailed;
    /// 501 FRAME_ERROR.
    frame_error => FrameError;
    /// 503 COMMAND_INVALID.
    command_invalid => CommandInvalid;
    /// 504 CHANNEL_ERROR.
    channel_error => ChannelError;
    /// 505 UNEXPECTED_FRAME.
    unexpected_frame => UnexpectedFrame;
    /// 530 NOT_ALLOWED.
    not_allowed => NotAllowed;
    /// 540 NOT_IMPLEMENTED.
    not_implemented => NotImplemented;
}

/// Cuts `text` to at most 255 bytes on a char boundary, so it fits an AMQP short string.
pub(crate) fn truncate_short(text: &mut String) {
    if text.len() > 255 {
        let mut end = 255;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
}

/// Why [`crate::BrokerBuilder::start`] failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The listen address could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address from the builder.
        addr: String,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// The bound listener could not report its address.
    #[error("cannot read the listener's address: {0}")]
    LocalAddr(#[source] std::io::Error),
    /// The users, vhosts and permissions file could not be read or is invalid.
    #[error("cannot load access definitions from {path}: {source}")]
    AccessDefinitions {
        /// The file.
        path: String,
        /// What went wrong.
        #[source]
        source: std::io::Error,
    },
    /// The `--definitions` file could not be read or imported.
    #[error("cannot import definitions from {path}: {reason}")]
    Definitions {
        /// The file.
        path: String,
        /// What was wrong.
        reason: String,
    },
    /// The data directory could not be opened (I/O error, or damaged files: see
    /// [`crate::store::StoreError::is_corruption`]).
    #[error("cannot open the data directory: {0}")]
    Store(#[from] crate::store::StoreError),
}

/// Why an administrative operation on users, vhosts or permissions failed
/// ([`crate::Admin`], the management API and `lepusctl` report these).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AdminError {
    /// No user with that name.
    #[error("user '{0}' does not exist")]
    NoSuchUser(String),
    /// A user with that name exists already.
    #[error("user '{0}' already exists")]
    UserExists(String),
    /// No vhost with that name.
    #[error("virtual host '{0}' does not exist")]
    NoSuchVHost(String),
    /// A vhost with that name exists already.
    #[error("virtual host '{0}' already exists")]
    VHostExists(String),
    /// A permission regex does not compile.
    #[error("{0}")]
    InvalidRegex(String),
    /// A name is empty or otherwise unusable.
    #[error("invalid name: {0}")]
    InvalidName(String),
    /// The change was made in memory but could not be written to the data directory.
    #[error("cannot save access definitions: {0}")]
    Save(String),
}

impl AdminError {
    /// True for "not found" errors (HTTP 404 in the management API).
    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NoSuchUser(_) | Self::NoSuchVHost(_))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn soft_and_hard_codes_are_split_as_the_spec_says() {
        for code in [403, 404, 405, 406] {
            let rc = ReplyCode::ALL.iter().find(|c| c.code() == code).unwrap();
            assert!(rc.is_channel_level(), "{rc}");
        }
        for code in [320, 501, 503, 504, 505, 530, 540] {
            let rc = ReplyCode::ALL.iter().find(|c| c.code() == code).unwrap();
            assert!(!rc.is_channel_level(), "{rc}");
        }
    }

    #[test]
    fn reply_text_has_rabbitmq_shape_and_fits_a_short_string() {
        let e = AmqpError::not_found("no queue 'q' in vhost '/'");
        assert_eq!(e.reply_text(), "NOT_FOUND - no queue 'q' in vhost '/'");
        let long = AmqpError::not_found("é".repeat(300));
        assert!(long.reply_text().len() <= 255);
    }
}

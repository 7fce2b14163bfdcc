//! The one error type of the runtime, [`Error`], and its classifiers.
//!
//! `Error<E>` is generic over the *application* error a handler may return (`E` in
//! `async fn f(..) -> Result<T, E>`): a handler's `Err(e)` reaches the caller as
//! [`Error::Remote`]`(e)`, typed. Every other variant is a failure of the RPC machinery itself.
//! Operations that cannot carry an application error (connecting, serving) use the default
//! `E = `[`Never`], so `lepus::Error` alone names that case, and `?` turns it into any
//! `Error<E>` whose `E` is a serde type (the typed errors of `#[lepus::rpc]` functions). AMQP
//! reply codes are mapped here and nowhere else ([`Error::reply_code`]).

use std::time::Duration;

use serde::Serialize;

/// The AMQP reply code of `basic.return` for an unroutable `mandatory` message (spec 1.9, 312).
pub const REPLY_CODE_NO_ROUTE: u16 = 312;

/// An application error type with no values: the `E` of functions that return a plain `T`,
/// and the default `E` of [`Error`].
///
/// It is deliberately not a serde type: that is what lets `?` convert a `lepus::Error` into any
/// `lepus::Error<E>` with `E: Serialize` (the conversion and the identity `From<T> for T` would
/// otherwise overlap at `E = Never`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Never {}

impl std::fmt::Display for Never {
    fn fmt(&self, _: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {}
    }
}

impl std::error::Error for Never {}

/// Why a worker could not run a request: sent back to the caller as [`Error::Failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    /// The handler panicked; the message is the panic payload.
    Panicked,
    /// The request's arguments could not be decoded as the handler's argument types.
    BadRequest,
    /// No handler on this queue has the requested method name.
    UnknownMethod,
    /// The handler's result could not be encoded, or its encoding is larger than the
    /// handler's maximum message size.
    BadReply,
    /// The worker shut down before it ran the request, and no other worker serves its queue:
    /// the handler did not run, so calling again is safe.
    NotRun,
    /// The handler ran past its time limit and was stopped.
    TimeLimit,
    /// The request is larger than the handler's maximum message size; it was not decoded.
    TooLarge,
    /// The request was delivered to workers as often as the worker's delivery limit allows
    /// without any of them answering it (they crashed, hung or were stopped while running it);
    /// it was not run again.
    DeliveryLimit,
}

impl FailureKind {
    /// The wire code of this kind (see `envelope.rs`).
    pub(crate) fn code(self) -> u8 {
        match self {
            FailureKind::Panicked => 0,
            FailureKind::BadRequest => 1,
            FailureKind::UnknownMethod => 2,
            FailureKind::BadReply => 3,
            FailureKind::NotRun => 4,
            FailureKind::TimeLimit => 5,
            FailureKind::TooLarge => 6,
            FailureKind::DeliveryLimit => 7,
        }
    }

    /// The kind for a wire code; unknown codes (from a newer peer) read as `BadRequest`.
    pub(crate) fn from_code(code: u8) -> Self {
        match code {
            0 => FailureKind::Panicked,
            2 => FailureKind::UnknownMethod,
            3 => FailureKind::BadReply,
            4 => FailureKind::NotRun,
            5 => FailureKind::TimeLimit,
            6 => FailureKind::TooLarge,
            7 => FailureKind::DeliveryLimit,
            _ => FailureKind::BadRequest,
        }
    }
}

impl std::fmt::Display for FailureKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            FailureKind::Panicked => "handler panicked",
            FailureKind::BadRequest => "bad request",
            FailureKind::UnknownMethod => "unknown method",
            FailureKind::BadReply => "unencodable result",
            FailureKind::NotRun => "not run: the worker shut down",
            FailureKind::TimeLimit => "time limit exceeded",
            FailureKind::TooLarge => "request too large",
            FailureKind::DeliveryLimit => "delivery limit reached",
        })
    }
}

/// Everything that can go wrong in Lepus. `E` is the application error of the called handler.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error<E = Never> {
    /// The handler ran and returned `Err(e)`; `e` is the handler's own error, decoded.
    #[error("remote error: {0}")]
    Remote(E),
    /// The worker received the request but could not run it to completion (a panic, arguments
    /// it could not decode, a method it does not serve). Never retried by Lepus.
    #[error("remote failure ({kind}): {message}")]
    Failed {
        /// What went wrong on the worker.
        kind: FailureKind,
        /// The worker's description (the panic message, the decode error, ...).
        message: String,
    },
    /// No reply arrived before the call's deadline. The handler may or may not have run.
    #[error("no reply within {0:?}")]
    Timeout(Duration),
    /// The broker returned the request (`basic.return`): no queue is bound to that name, so
    /// nobody serves it.
    #[error("no route to queue {queue:?}: nobody serves it (reply code {reply_code})")]
    NoRoute {
        /// The queue (routing key) the call was addressed to.
        queue: String,
        /// The `basic.return` reply code (312 NO_ROUTE).
        reply_code: u16,
    },
    /// The broker refused the request (`basic.nack`).
    #[error("the broker refused the request (basic.nack)")]
    Nacked,
    /// The connection to the broker broke while the call was in flight. The handler may or may
    /// not have run.
    #[error("connection to the broker lost while the call was in flight")]
    ConnectionLost,
    /// The connection or client was closed by its owner.
    #[error("the connection was closed")]
    Closed,
    /// A failure of the AMQP client library or the network (carries the AMQP reply code when
    /// the broker sent one, see [`Error::reply_code`]).
    #[error("amqp transport: {0}")]
    Transport(#[source] lapin::Error),
    /// Arguments or a result could not be encoded as MessagePack.
    #[error("encode: {0}")]
    Encode(#[source] rmp_serde::encode::Error),
    /// A reply could not be decoded (a peer speaking another version or type).
    #[error("decode: {0}")]
    Decode(String),
    /// The broker has no such entity (an exchange published to, say).
    #[error("{what} not found (reply code {reply_code})")]
    NotFound {
        /// What was missing.
        what: String,
        /// The AMQP reply code (404 NOT_FOUND).
        reply_code: u16,
    },
    /// A connection option or URL was unusable.
    #[error("configuration: {0}")]
    Config(String),
}

impl<E> Error<E> {
    /// True when trying again later may succeed: the broker or the network failed, nobody was
    /// serving yet (or the last worker shut down before running the request), or the reply did
    /// not come in time. Note that after [`Error::Timeout`] and [`Error::ConnectionLost`] the
    /// handler may already have run once; retry only idempotent calls.
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            Error::Timeout(_)
                | Error::NoRoute { .. }
                | Error::Nacked
                | Error::ConnectionLost
                | Error::Transport(_)
                | Error::Failed {
                    kind: FailureKind::NotRun,
                    ..
                }
        )
    }

    /// True when a worker produced this error (a typed application error or a remote failure).
    pub fn is_remote(&self) -> bool {
        matches!(self, Error::Remote(_) | Error::Failed { .. })
    }

    /// True for [`Error::Timeout`].
    pub fn is_timeout(&self) -> bool {
        matches!(self, Error::Timeout(_))
    }

    /// The handler's application error, if this is [`Error::Remote`].
    pub fn remote(&self) -> Option<&E> {
        match self {
            Error::Remote(e) => Some(e),
            _ => None,
        }
    }

    /// The AMQP reply code behind this error, when the broker sent one.
    pub fn reply_code(&self) -> Option<u16> {
        match self {
            Error::NoRoute { reply_code, .. } | Error::NotFound { reply_code, .. } => {
                Some(*reply_code)
            }
            Error::Transport(err) => match err.kind() {
                lapin::ErrorKind::ProtocolError(amqp) => Some(amqp.get_id()),
                _ => None,
            },
            _ => None,
        }
    }

    /// Converts an error that carries no application error into any `Error<E>` (what `?` does
    /// through `From` when `E` is a serde type).
    pub fn widen<F>(self) -> Error<F>
    where
        E: Into<Never>,
    {
        self.map_remote(|e| match e.into() {})
    }
}

impl<E> Error<E> {
    /// Converts the application error, keeping every other variant: `Error<E>` to `Error<F>`
    /// (for instance to wrap the errors of several services in one enum).
    pub fn map_remote<F>(self, f: impl FnOnce(E) -> F) -> Error<F> {
        match self {
            Error::Remote(e) => Error::Remote(f(e)),
            Error::Failed { kind, message } => Error::Failed { kind, message },
            Error::Timeout(d) => Error::Timeout(d),
            Error::NoRoute { queue, reply_code } => Error::NoRoute { queue, reply_code },
            Error::Nacked => Error::Nacked,
            Error::ConnectionLost => Error::ConnectionLost,
            Error::Closed => Error::Closed,
            Error::Transport(e) => Error::Transport(e),
            Error::Encode(e) => Error::Encode(e),
            Error::Decode(e) => Error::Decode(e),
            Error::Config(e) => Error::Config(e),
            Error::NotFound { what, reply_code } => Error::NotFound { what, reply_code },
        }
    }
}

/// `?` from a `lepus::Error` (connecting, enqueueing, ...) into the `lepus::Error<E>` of a typed
/// call, in a function returning `Result<_, lepus::Error<MathError>>`. Sound because
/// `lepus::Error` has no [`Error::Remote`] value. `E: Serialize` (the typed errors of RPC
/// methods) keeps it apart from `From<T> for T`: [`Never`] is not `Serialize`.
impl<E: Serialize> From<Error<Never>> for Error<E> {
    fn from(err: Error<Never>) -> Self {
        err.widen()
    }
}

impl<E> From<lapin::Error> for Error<E> {
    fn from(err: lapin::Error) -> Self {
        Error::Transport(err)
    }
}

/// `Result<T, lepus::Error>`: the result of operations that carry no application error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
#[allow(clippy::unwrap_used)] // in tests a failed unwrap is a failed test
mod tests {
    use super::*;

    #[test]
    fn classifiers_split_transient_from_remote() {
        let timeout: Error = Error::Timeout(Duration::from_secs(1));
        assert!(timeout.is_retryable() && timeout.is_timeout() && !timeout.is_remote());
        let remote: Error<String> = Error::Remote("boom".into());
        assert!(remote.is_remote() && !remote.is_retryable());
        assert_eq!(remote.remote().map(String::as_str), Some("boom"));
        let no_route: Error = Error::NoRoute {
            queue: "q".into(),
            reply_code: REPLY_CODE_NO_ROUTE,
        };
        assert_eq!(no_route.reply_code(), Some(312));
        let widened: Error<String> = no_route.widen();
        assert!(matches!(widened, Error::NoRoute { .. }));
    }

    #[test]
    fn question_mark_widens_an_error_without_application_error() {
        fn typed() -> std::result::Result<(), Error<String>> {
            let plain: std::result::Result<(), Error> = Err(Error::Closed);
            plain?;
            Ok(())
        }
        assert!(matches!(typed(), Err(Error::Closed)));
        let remote: Error<u32> = Error::Remote(7);
        assert!(matches!(remote.map_remote(|n| n + 1), Error::Remote(8)));
    }

    #[test]
    fn failure_kind_codes_round_trip() {
        for kind in [
            FailureKind::Panicked,
            FailureKind::BadRequest,
            FailureKind::UnknownMethod,
            FailureKind::BadReply,
            FailureKind::NotRun,
            FailureKind::TimeLimit,
            FailureKind::TooLarge,
            FailureKind::DeliveryLimit,
        ] {
            assert_eq!(FailureKind::from_code(kind.code()), kind);
        }
    }
}

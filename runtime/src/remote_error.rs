//! How an RPC's application error travels back to its caller: [`RemoteError`], and the codec the
//! generated code picks for each error type ([`ErrCodec`]).
//!
//! An error type that is `Serialize + DeserializeOwned` travels as itself, typed, in
//! MessagePack (a `thiserror` enum deriving serde: the caller matches on its variants). An
//! error type that is not, but is `Display` and can be built from a [`RemoteError`]
//! (`anyhow::Error`, `eyre::Report`, `std::io::Error`, `Box<dyn Error + Send + Sync>`), travels
//! as its text (with its chain of causes, `{:#}`) and is rebuilt on the caller's side from that
//! text: `fib::call` on a function returning `anyhow::Result<u64>` gives
//! `Err(lepus::Error::Remote(anyhow_error))`, whose text is the worker's. Any other error type
//! is a compile error at the function that says so.
//!
//! The choice is made where the types are concrete, in the code `#[lepus::rpc]` generates, by
//! method resolution on `&&&&ErrWire<E>` ("autoref specialization"): the candidate impls sit at
//! different reference depths (`&&&ErrWire<Never>`, `&&ErrWire<E: serde>`, `&ErrWire<E>`), and
//! the deepest one whose impl applies wins. The call takes one `&` more than the deepest impl
//! because the methods take `&self`: method lookup tries the receiver as it is before adding a
//! reference, so `(&&&&x).codec()` meets the `&&&` impl first, then `&&`, then `&`. It cannot be a
//! trait with two blanket impls: `E: Serialize` and, say, `E = io::Error` may overlap the day
//! serde implements `Serialize` for `io::Error`, which coherence forbids.
//!
//! Wire form (see `envelope`): both are the reply tag `0x01` followed by one MessagePack value,
//! the serialized error or a string.

use std::fmt::{self, Display};
use std::marker::PhantomData;

use serde::{de::DeserializeOwned, Serialize};

use crate::error::Never;

/// An application error received as text: what a worker's `anyhow::Error`, `io::Error` or
/// `Box<dyn Error>` became on the way back to the caller (its `{:#}` text, causes included).
/// Error types that are not serde types are rebuilt from it (`From<RemoteError>`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    message: String,
}

impl RemoteError {
    /// A remote error with this text.
    pub fn new(message: impl Into<String>) -> Self {
        RemoteError {
            message: message.into(),
        }
    }

    /// The worker's text of the error.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for RemoteError {}

impl From<RemoteError> for std::io::Error {
    fn from(err: RemoteError) -> Self {
        std::io::Error::other(err)
    }
}

/// `fmt::Error` carries no text: the caller gets the bare error.
impl From<RemoteError> for std::fmt::Error {
    fn from(_: RemoteError) -> Self {
        std::fmt::Error
    }
}

/// How one application error type is encoded into a reply and decoded from one.
#[diagnostic::on_unimplemented(
    message = "the error type `{E}` cannot travel back to the caller of an RPC",
    label = "this RPC's error type is neither a serde type nor rebuildable from its text",
    note = "derive `serde::Serialize` and `serde::Deserialize` for it (the caller gets it typed), \
            or implement `Display` and `From<lepus::RemoteError>` (the caller gets it rebuilt from its text)"
)]
pub trait ErrCodec<E> {
    /// Appends `err` (one MessagePack value) to `buf`.
    fn encode(&self, err: &E, buf: &mut Vec<u8>) -> Result<(), rmp_serde::encode::Error>;
    /// Decodes the error value of a reply.
    fn decode(&self, body: &[u8]) -> Result<E, String>;
}

/// Selects the codec of `E` by autoref specialization (see the module documentation); built
/// by generated code as `(&&&&ErrWire::<E>::NEW).codec()`.
pub struct ErrWire<E>(PhantomData<fn() -> E>);

impl<E> ErrWire<E> {
    /// The selector of `E`.
    pub const NEW: Self = ErrWire(PhantomData);
}

/// The codec of [`Never`]: a plain value's RPC has no error to send.
#[derive(Debug, Clone, Copy)]
pub struct NeverCodec;

/// The codec of a serde error type: MessagePack, typed.
pub struct SerdeCodec<E>(PhantomData<fn() -> E>);

impl<E> SerdeCodec<E> {
    pub(crate) fn new() -> Self {
        SerdeCodec(PhantomData)
    }
}

/// The codec of a `Display + From<RemoteError>` error type: its text.
pub struct TextCodec<E>(PhantomData<fn() -> E>);

/// Depth 3: `Never`.
pub trait SelectNever {
    /// The codec.
    fn codec(&self) -> NeverCodec;
}

impl SelectNever for &&&ErrWire<Never> {
    fn codec(&self) -> NeverCodec {
        NeverCodec
    }
}

/// Depth 2: serde types.
pub trait SelectSerde<E> {
    /// The codec.
    fn codec(&self) -> SerdeCodec<E>;
}

impl<E: Serialize + DeserializeOwned> SelectSerde<E> for &&ErrWire<E> {
    fn codec(&self) -> SerdeCodec<E> {
        SerdeCodec(PhantomData)
    }
}

/// Depth 1: everything else; usable only for `Display + From<RemoteError>` types (else the
/// compile error of [`ErrCodec`]).
pub trait SelectText<E> {
    /// The codec.
    fn codec(&self) -> TextCodec<E>;
}

impl<E> SelectText<E> for &ErrWire<E> {
    fn codec(&self) -> TextCodec<E> {
        TextCodec(PhantomData)
    }
}

impl ErrCodec<Never> for NeverCodec {
    fn encode(&self, err: &Never, _: &mut Vec<u8>) -> Result<(), rmp_serde::encode::Error> {
        match *err {}
    }

    fn decode(&self, _: &[u8]) -> Result<Never, String> {
        Err("the method returns no error, yet the reply carries one".to_owned())
    }
}

impl<E: Serialize + DeserializeOwned> ErrCodec<E> for SerdeCodec<E> {
    fn encode(&self, err: &E, buf: &mut Vec<u8>) -> Result<(), rmp_serde::encode::Error> {
        crate::envelope::encode_into(buf, err)
    }

    fn decode(&self, body: &[u8]) -> Result<E, String> {
        // Depth-bounded: an error value nests as deep as a peer likes (see `msgpack_depth`).
        crate::envelope::decode_bounded_text(body)
    }
}

// `do_not_recommend`: an error type that is neither a serde type nor `Display + From<..>`
// is reported with `ErrCodec`'s message (what to do), not as a missing `From<RemoteError>`.
#[diagnostic::do_not_recommend]
impl<E: Display + From<RemoteError>> ErrCodec<E> for TextCodec<E> {
    fn encode(&self, err: &E, buf: &mut Vec<u8>) -> Result<(), rmp_serde::encode::Error> {
        crate::envelope::encode_into(buf, &format!("{err:#}"))
    }

    fn decode(&self, body: &[u8]) -> Result<E, String> {
        let message: String = crate::envelope::decode_bounded_text(body)?;
        Ok(E::from(RemoteError::new(message)))
    }
}

/// Describes an application error for logs and test observers: `Display` when it has one,
/// else `Debug`, else its type name. Built like [`ErrWire`]: `(&&&&Describe(&err)).describe()`.
pub struct Describe<'a, E>(pub &'a E);

/// Depth 3: `Display`.
pub trait DescribeDisplay {
    /// The text.
    fn describe(&self) -> String;
}

impl<E: Display> DescribeDisplay for &&&Describe<'_, E> {
    fn describe(&self) -> String {
        format!("{:#}", self.0)
    }
}

/// Depth 2: `Debug`.
pub trait DescribeDebug {
    /// The text.
    fn describe(&self) -> String;
}

impl<E: fmt::Debug> DescribeDebug for &&Describe<'_, E> {
    fn describe(&self) -> String {
        format!("{:?}", self.0)
    }
}

/// Depth 1: the type name.
pub trait DescribeName {
    /// The text.
    fn describe(&self) -> String;
}

impl<E> DescribeName for &Describe<'_, E> {
    fn describe(&self) -> String {
        format!("an error of type {}", std::any::type_name::<E>())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
// in tests a failed unwrap is a failed test
// The extra references select the impl (autoref specialization): they are the point.
#[allow(clippy::needless_borrow)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct DebugOnly;

    #[test]
    fn serde_errors_travel_typed_other_errors_as_text() {
        let codec = (&&&&ErrWire::<String>::NEW).codec();
        let mut buf = Vec::new();
        codec.encode(&"overflow".to_owned(), &mut buf).unwrap();
        assert_eq!(codec.decode(&buf).unwrap(), "overflow");

        let codec = (&&&&ErrWire::<std::io::Error>::NEW).codec();
        let mut buf = Vec::new();
        let err = std::io::Error::new(std::io::ErrorKind::NotFound, "no such account");
        codec.encode(&err, &mut buf).unwrap();
        let back = codec.decode(&buf).unwrap();
        assert_eq!(back.to_string(), "no such account");

        let codec = (&&&&ErrWire::<Box<dyn std::error::Error + Send + Sync>>::NEW).codec();
        let mut buf = Vec::new();
        codec.encode(&"boxed".into(), &mut buf).unwrap();
        assert_eq!(codec.decode(&buf).unwrap().to_string(), "boxed");

        let codec = (&&&&ErrWire::<Never>::NEW).codec();
        assert!(codec.decode(&[0xa0]).is_err());
    }

    #[test]
    fn descriptions_prefer_display_then_debug() {
        assert_eq!((&&&&Describe(&"text")).describe(), "text");
        assert_eq!((&&&&Describe(&DebugOnly)).describe(), "DebugOnly");
        struct Nothing;
        assert!((&&&&Describe(&Nothing)).describe().contains("Nothing"));
    }
}

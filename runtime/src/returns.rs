//! [`Returns`]: how the value a handler returns becomes a success or a failure, decided by the
//! type system rather than by how the return type is spelled.
//!
//! `#[lepus::rpc]`, `#[lepus::task]` and `#[lepus::event]` read a function's result through
//! `<R as Returns>`, where `R` is the return type as written. Two impls cover every case:
//! - `Result<T, E>`: `Ok(t)` succeeds with `t`, `Err(e)` fails with `e`. Aliases resolve to it
//!   before the trait is looked up, so `anyhow::Result<()>`, `io::Result<T>`, `eyre::Result<T>`,
//!   `fmt::Result` and `type JobResult = Result<(), MyError>` are all failures when they are
//!   `Err`, whatever the path says.
//! - any `T: `[`Plain`]: always a success (`Err = `[`Never`]). `Plain` is implemented for `()`,
//!   the primitive types, `String`, the std collections, `Option`, `Box`, tuples and arrays;
//!   implement it for your own types (`impl lepus::Plain for User {}`, or
//!   `#[derive(lepus::Plain)]`).
//!
//! Why not "every type that is not a `Result`": stable Rust cannot express that (it needs
//! specialization or negative impls), and a blanket impl over, say, every `Serialize` type would
//! overlap with `Result` (which is `Serialize` too). Coherence does accept the two impls above
//! because `Plain` is local: no crate but this one can implement it for `Result`. A type that is
//! neither is a compile error at the function's return type that says what to do; it is never
//! read silently as a success.

use crate::error::Never;

/// What a handler returns, seen as a success or a failure. Implemented for `Result<T, E>` and
/// for every [`Plain`] type; see the module documentation.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is neither a `Result` nor a type Lepus knows to be a plain value",
    label = "a Lepus handler cannot return `{Self}` as it is",
    note = "a handler returns `Result<T, E>` (any alias of it: `anyhow::Result<T>`, `io::Result<T>`, ...) \
            or a plain value that is never a failure",
    note = "mark your own type as plain with `#[derive(lepus::Plain)]` or `impl lepus::Plain for {Self} {{}}`; \
            for a type of another crate, return `Result<{Self}, lepus::Never>`"
)]
pub trait Returns {
    /// The value of a success.
    type Ok;
    /// The value of a failure ([`Never`] for plain values).
    type Err;

    /// Splits the returned value into success or failure.
    fn into_result(self) -> Result<Self::Ok, Self::Err>;
}

impl<T, E> Returns for Result<T, E> {
    type Ok = T;
    type Err = E;

    fn into_result(self) -> Result<T, E> {
        self
    }
}

// `do_not_recommend`: a type that is neither is reported with `Returns`' message.
#[diagnostic::do_not_recommend]
impl<T: Plain> Returns for T {
    type Ok = T;
    type Err = Never;

    fn into_result(self) -> Result<T, Never> {
        Ok(self)
    }
}

/// A type a handler returns as it is: never a failure. Implemented for the std types below;
/// implement it (it has no items) for your own: `impl lepus::Plain for User {}`, or
/// `#[derive(lepus::Plain)]`. It cannot be implemented for `Result` (or an alias of it), so a
/// `Result` is never mistaken for a plain value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is neither a `Result` nor marked as a plain value",
    label = "a Lepus handler cannot return `{Self}` as it is",
    note = "mark it with `#[derive(lepus::Plain)]` or `impl lepus::Plain for {Self} {{}}` (returned as is, never a failure), \
            or return `Result<{Self}, E>`; for a type of another crate, return `Result<{Self}, lepus::Never>`"
)]
pub trait Plain {}

macro_rules! plain {
    ($($ty:ty),* $(,)?) => { $(impl Plain for $ty {})* };
}

plain!(
    (),
    bool,
    char,
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    f32,
    f64,
    String,
    &'static str,
    std::time::Duration,
    std::time::SystemTime,
    std::net::IpAddr,
    std::net::Ipv4Addr,
    std::net::Ipv6Addr,
    std::net::SocketAddr,
    std::path::PathBuf,
    uuid::Uuid,
    Never,
);

impl<T> Plain for Vec<T> {}
impl<T> Plain for std::collections::VecDeque<T> {}
impl<T> Plain for Option<T> {}
impl<T: ?Sized> Plain for Box<T> {}
impl<T: ?Sized> Plain for std::sync::Arc<T> {}
impl<K, V, S> Plain for std::collections::HashMap<K, V, S> {}
impl<K, V> Plain for std::collections::BTreeMap<K, V> {}
impl<T, S> Plain for std::collections::HashSet<T, S> {}
impl<T> Plain for std::collections::BTreeSet<T> {}
impl<T, const N: usize> Plain for [T; N] {}

macro_rules! plain_tuples {
    ($(($($t:ident),+)),* $(,)?) => { $(impl<$($t),+> Plain for ($($t,)+) {})* };
}

plain_tuples!(
    (A),
    (A, B),
    (A, B, C),
    (A, B, C, D),
    (A, B, C, D, E),
    (A, B, C, D, E, F),
    (A, B, C, D, E, F, G),
    (A, B, C, D, E, F, G, H),
    (A, B, C, D, E, F, G, H, I),
    (A, B, C, D, E, F, G, H, I, J),
    (A, B, C, D, E, F, G, H, I, J, K),
    (A, B, C, D, E, F, G, H, I, J, K, L),
);

#[cfg(test)]
mod tests {
    use super::*;

    type Fallible = Result<u8, String>;

    fn split<R: Returns>(value: R) -> Result<R::Ok, R::Err> {
        value.into_result()
    }

    #[test]
    fn results_and_their_aliases_fail_plain_values_never_do() {
        assert_eq!(split::<Fallible>(Err("no".into())), Err("no".to_owned()));
        assert_eq!(split::<std::io::Result<u8>>(Ok(1)).ok(), Some(1));
        assert!(split::<std::fmt::Result>(Err(std::fmt::Error)).is_err());
        assert_eq!(split(7u32).ok(), Some(7));
        assert_eq!(split(()).ok(), Some(()));
        // A plain value that holds results is still a plain value.
        assert!(split(vec![Fallible::Err("inner".into())]).is_ok());
        assert!(split(Some(Fallible::Err("inner".into()))).is_ok());
    }
}

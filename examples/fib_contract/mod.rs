//! The contract `fib_server` serves and `fib_client` calls: the RPC's signature, queue and
//! error type, in one module both processes compile (as two services would share an API
//! crate; see `examples/accounts/api`). The body only runs where `fib` is served (or called
//! locally: `fib`, all in one process, does both).

use serde::{Deserialize, Serialize};

/// The error `fib` can return; the caller decodes it typed.
#[derive(Debug, Serialize, Deserialize, thiserror::Error)]
pub(crate) enum MathError {
    #[error("fib({0}) does not fit in a u64")]
    Overflow(u32),
}

/// fib over RPC on `rpc_queue`: this gives the server `fib::handler()` and the client
/// `fib::call`.
#[lepus::rpc(queue = "rpc_queue")]
pub(crate) async fn fib(n: u32) -> Result<u64, MathError> {
    fib_u64(n).ok_or(MathError::Overflow(n))
}

/// The `n`-th Fibonacci number, or `None` past 93 (`fib(94)` does not fit in a u64). The
/// integration tests (`tests/rpc_calls.rs`) serve this same computation.
pub(crate) fn fib_u64(n: u32) -> Option<u64> {
    if n > 93 {
        return None;
    }
    let (mut a, mut b) = (0u64, 1u64);
    for _ in 0..n {
        (a, b) = (b, a + b);
    }
    Some(a)
}

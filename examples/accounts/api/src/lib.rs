//! The contract of the `accounts` service, and of the `limits` service it calls: two traits
//! and the types they carry. This crate holds no implementation and does not build the broker;
//! a caller (`accounts-web`) depends on it alone and gets the typed clients
//! [`AccountsClient`] and [`LimitsClient`], a server (`accounts-server`) implements the traits
//! and serves them with [`AccountsServer`] and [`LimitsServer`].
//!
//! On the wire a method is a request of `type` = the method's name on the service's queue,
//! exactly what a `#[lepus::rpc(queue = "accounts")] async fn get_balance(account: String)`
//! would send (see `lepus::envelope`).

use serde::{Deserialize, Serialize};

/// What can go wrong in the accounts service; comes back typed to callers, as
/// `lepus::Error::Remote(AccountError)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum AccountError {
    /// No account of that name.
    #[error("no account {0:?}")]
    NoSuchAccount(String),
    /// `open` of a name already taken.
    #[error("account {0:?} already exists")]
    AlreadyExists(String),
    /// A withdrawal larger than the balance.
    #[error("insufficient funds: balance {balance}, wanted {wanted}")]
    InsufficientFunds {
        /// The balance, in cents.
        balance: u64,
        /// The amount asked for, in cents.
        wanted: u64,
    },
    /// The limits service refused the withdrawal.
    #[error("refused: {0}")]
    Refused(LimitError),
    /// The limits service could not be asked (down, or no time left): nothing was withdrawn.
    #[error("limits service unavailable: {0}")]
    LimitsUnavailable(String),
}

/// The accounts service: balances in cents, kept by whoever implements it.
#[lepus::service(queue = "accounts")]
pub trait Accounts {
    /// Opens an empty account.
    async fn open(&self, account: String) -> Result<(), AccountError>;
    /// The balance of `account`.
    async fn get_balance(&self, account: String) -> Result<u64, AccountError>;
    /// Adds `cents` to `account`; returns the new balance.
    async fn deposit(&self, account: String, cents: u64) -> Result<u64, AccountError>;
    /// Takes `cents` from `account` once the limits service agrees, and has a notification
    /// sent (a task); returns the new balance. The handler sees its call's context (deadline,
    /// ids), which its own call to the limits service inherits.
    async fn withdraw(
        &self,
        ctx: lepus::Context,
        account: String,
        cents: u64,
    ) -> Result<u64, AccountError>;
    /// Every account and its balance, by name.
    async fn list(&self) -> Vec<(String, u64)>;
}

/// Why the limits service refuses a withdrawal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum LimitError {
    /// Over the per-withdrawal limit.
    #[error("{wanted} is over the limit of {limit}")]
    OverLimit {
        /// The limit, in cents.
        limit: u64,
        /// The amount asked for, in cents.
        wanted: u64,
    },
}

/// The limits service: says whether a withdrawal may go ahead.
#[lepus::service(queue = "limits")]
pub trait Limits {
    /// `Ok(())` when `account` may withdraw `cents`.
    async fn check(&self, account: String, cents: u64) -> Result<(), LimitError>;
}

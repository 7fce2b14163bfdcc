//! The accounts service: [`Bank`] implements [`Accounts`] on a database pool ([`Pool`]) and
//! the client of another service ([`LimitsClient`]); [`DailyLimit`] implements [`Limits`];
//! [`notify_withdrawal`] is a task the bank enqueues, a function handler whose state (the
//! [`Outbox`]) is injected when its worker is built. No `static` anywhere: every piece of
//! state is given to the worker that serves it, so two servers in one process keep theirs.
//!
//! [`serve_accounts`] and [`serve_limits`] configure the two workers the binary runs (and the
//! tests start on their broker).

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use accounts_api::{
    AccountError, Accounts, AccountsServer, LimitError, Limits, LimitsClient, LimitsServer,
};
use lepus::{Client, Context, Error, State, Worker};

/// Stands in for a database pool (an `sqlx::PgPool`, say): cheap to clone, shared by every
/// request the server handles.
pub type Pool = Arc<Db>;

/// The "database": balances by account.
#[derive(Debug, Default)]
pub struct Db {
    balances: Mutex<BTreeMap<String, u64>>,
}

impl Db {
    /// The table, locked (a poisoned lock still holds consistent data: every write is one
    /// statement).
    fn balances(&self) -> MutexGuard<'_, BTreeMap<String, u64>> {
        self.balances.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The implementation of [`Accounts`]: its state is the pool, the limits service's client and
/// the client it enqueues with.
#[derive(Debug, Clone)]
pub struct Bank {
    pool: Pool,
    limits: LimitsClient,
    client: Client,
}

impl Bank {
    /// A bank on `pool`, asking the limits service and enqueueing through `client`.
    pub fn new(pool: Pool, client: &Client) -> Bank {
        Bank {
            pool,
            limits: LimitsClient::new(client),
            client: client.clone(),
        }
    }
}

impl Accounts for Bank {
    async fn open(&self, account: String) -> Result<(), AccountError> {
        let mut balances = self.pool.balances();
        if balances.contains_key(&account) {
            return Err(AccountError::AlreadyExists(account));
        }
        balances.insert(account, 0);
        Ok(())
    }

    async fn get_balance(&self, account: String) -> Result<u64, AccountError> {
        let balances = self.pool.balances();
        balances
            .get(&account)
            .copied()
            .ok_or(AccountError::NoSuchAccount(account))
    }

    async fn deposit(&self, account: String, cents: u64) -> Result<u64, AccountError> {
        let mut balances = self.pool.balances();
        let balance = balances
            .get_mut(&account)
            .ok_or_else(|| AccountError::NoSuchAccount(account.clone()))?;
        *balance = balance.saturating_add(cents);
        Ok(*balance)
    }

    async fn withdraw(
        &self,
        ctx: Context,
        account: String,
        cents: u64,
    ) -> Result<u64, AccountError> {
        // A nested call: it waits at most what is left of our caller's deadline, and is not
        // started at all once that is spent (the limits service never sees it).
        tracing::debug!(time_left = ?ctx.time_left(), "asking the limits service");
        match self.limits.check(account.clone(), cents).await {
            Ok(()) => {}
            Err(Error::Remote(refusal)) => return Err(AccountError::Refused(refusal)),
            Err(other) => return Err(AccountError::LimitsUnavailable(other.to_string())),
        }
        let balance = {
            let mut balances = self.pool.balances();
            let balance = balances
                .get_mut(&account)
                .ok_or_else(|| AccountError::NoSuchAccount(account.clone()))?;
            if *balance < cents {
                return Err(AccountError::InsufficientFunds {
                    balance: *balance,
                    wanted: cents,
                });
            }
            *balance -= cents;
            *balance
        };
        // A task enqueued from a handler: it carries this call's trace id.
        if let Err(e) = notify_withdrawal::enqueue(&self.client, account, cents).await {
            // The money moved; a lost notification is logged, not a failed withdrawal.
            tracing::warn!(cause = %e, "could not enqueue the notification");
        }
        Ok(balance)
    }

    async fn list(&self) -> Vec<(String, u64)> {
        let balances = self.pool.balances();
        balances.iter().map(|(k, v)| (k.clone(), *v)).collect()
    }
}

/// The implementation of [`Limits`]: a fixed limit per withdrawal, and a pause before
/// answering (a slow dependency, to show deadlines at work).
#[derive(Debug, Clone)]
pub struct DailyLimit {
    /// The largest withdrawal allowed, in cents.
    pub limit: u64,
    /// How long each check takes.
    pub delay: Duration,
}

impl Limits for DailyLimit {
    async fn check(&self, _account: String, cents: u64) -> Result<(), LimitError> {
        tokio::time::sleep(self.delay).await;
        if cents > self.limit {
            return Err(LimitError::OverLimit {
                limit: self.limit,
                wanted: cents,
            });
        }
        Ok(())
    }
}

/// Where notifications go (an SMTP client, say): the state of [`notify_withdrawal`]. Cheap to
/// clone; every clone shares the same sent list.
#[derive(Debug, Clone, Default)]
pub struct Outbox {
    sent: Arc<Mutex<Vec<Notification>>>,
}

/// A notification "sent" by [`notify_withdrawal`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Notification {
    /// The account.
    pub account: String,
    /// The amount withdrawn, in cents.
    pub cents: u64,
    /// The trace id of the call that enqueued it (the chain of work it belongs to).
    pub trace_id: Option<String>,
}

impl Outbox {
    /// Every notification sent so far.
    pub fn sent(&self) -> Vec<Notification> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// Sends the notification of a withdrawal: a task, retried on failure, with its state (the
/// [`Outbox`]) injected by the worker (`Worker::state`) and its context asked for.
#[lepus::task(queue = "accounts.notifications", retries = 3)]
pub async fn notify_withdrawal(
    State(outbox): State<Outbox>,
    ctx: Context,
    account: String,
    cents: u64,
) -> Result<(), String> {
    let notification = Notification {
        account,
        cents,
        trace_id: ctx.trace_id().map(str::to_owned),
    };
    outbox
        .sent
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(notification);
    Ok(())
}

/// Configures `worker` to serve the accounts service: the [`Bank`] and the notification task
/// (with its [`Outbox`]). Up to 16 requests run at once on the shared `Bank`.
pub fn serve_accounts(worker: Worker, bank: Bank, outbox: Outbox) -> Worker {
    worker
        .prefetch(16)
        .concurrency(16)
        .state(outbox)
        .serve(AccountsServer::new(bank))
        .serve(notify_withdrawal::handler())
}

/// Configures `worker` to serve the limits service.
pub fn serve_limits(worker: Worker, limits: DailyLimit) -> Worker {
    worker
        .prefetch(16)
        .concurrency(16)
        .serve(LimitsServer::new(limits))
}

//! A caller of the accounts service that knows only its contract (`accounts-api`): what a web
//! front end does with it, written once for the binary and the tests.

use std::time::Duration;

use accounts_api::{AccountError, AccountsClient};
use lepus::CallOptions;

/// The front end's view of the accounts service: the contract's client, with the time it
/// gives every call.
#[derive(Debug, Clone)]
pub struct Front {
    accounts: AccountsClient,
}

impl Front {
    /// Calls through `client`, giving each call `timeout` at most.
    pub fn new(client: &lepus::Client, timeout: Duration) -> Front {
        Front {
            accounts: AccountsClient::new(client)
                .with_options(CallOptions::default().timeout(timeout)),
        }
    }

    /// The typed client.
    pub fn accounts(&self) -> &AccountsClient {
        &self.accounts
    }

    /// A short session: opens `who`, deposits, withdraws, and tries to overdraw; returns the
    /// final balance and the typed error of the overdraft.
    pub async fn session(
        &self,
        who: &str,
    ) -> Result<(u64, AccountError), lepus::Error<AccountError>> {
        self.accounts.open(who.to_owned()).await?;
        self.accounts.deposit(who.to_owned(), 5_000).await?;
        self.accounts.withdraw(who.to_owned(), 2_000).await?;
        let overdraft = match self.accounts.withdraw(who.to_owned(), 9_900).await {
            Err(lepus::Error::Remote(e)) => e,
            Ok(balance) => {
                return Err(lepus::Error::Config(format!(
                    "an overdraft went through: balance {balance}"
                )))
            }
            Err(other) => return Err(other),
        };
        let balance = self.accounts.get_balance(who.to_owned()).await?;
        Ok((balance, overdraft))
    }
}

#[lepus::service(queue = "accounts")]
pub trait Accounts {
    async fn balance(account: String) -> u64;
    async fn owner(self, account: String) -> String;
}

fn main() {}

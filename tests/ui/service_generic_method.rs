#[lepus::service(queue = "accounts")]
pub trait Accounts {
    async fn balance<T: Send>(&self, account: T) -> u64;
}

fn main() {}

#[lepus::service(queue = "accounts")]
pub trait Accounts {
    async fn deposit(&mut self, account: String, amount: u64) -> u64;
}

fn main() {}

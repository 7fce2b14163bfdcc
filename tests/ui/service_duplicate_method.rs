#[lepus::service(queue = "accounts")]
pub trait Accounts {
    async fn balance(&self, account: String) -> u64;
    #[lepus(name = "balance")]
    async fn balance_v2(&self, account: String) -> u64;
}

fn main() {}

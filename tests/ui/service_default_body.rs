#[lepus::service(queue = "accounts")]
pub trait Accounts {
    async fn balance(&self, account: String) -> u64 {
        let _ = account;
        0
    }
}

fn main() {}

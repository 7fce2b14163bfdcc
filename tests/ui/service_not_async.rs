#[lepus::service(queue = "accounts")]
pub trait Accounts {
    fn balance(&self, account: String) -> u64;
}

fn main() {}

/// Has no serde derives: cannot travel.
pub struct Account {
    pub id: u64,
}

#[derive(lepus::Plain)]
pub struct Opaque;

#[lepus::service(queue = "accounts")]
pub trait Accounts {
    async fn open(&self, account: Account) -> u64;
    async fn snapshot(&self) -> Opaque;
}

fn main() {}

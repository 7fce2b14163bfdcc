#[lepus::service]
pub trait NoQueue {
    async fn a(&self) -> u64;
}

#[lepus::service(queue = "q", prefetch = 4)]
pub trait UnknownKey {
    async fn a(&self) -> u64;
}

#[lepus::service(queue = "q")]
pub trait Empty {}

#[lepus::service(queue = "q")]
pub trait Generic<T> {
    async fn a(&self, t: T) -> u64;
}

#[lepus::service(queue = "q")]
pub trait NotAMethod {
    const LIMIT: u64;
    async fn new(&self) -> u64;
}

#[lepus::service(queue = "q")]
pub struct NotATrait;

fn main() {}

#[lepus::rpc(queue = "q", durable = true)]
async fn fib(n: u32) -> u64 {
    n as u64
}

fn main() {}

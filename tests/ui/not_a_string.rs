#[lepus::rpc(queue = 42)]
async fn fib(n: u32) -> u64 {
    n as u64
}

fn main() {}

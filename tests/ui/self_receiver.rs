struct Calculator;

impl Calculator {
    #[lepus::rpc(queue = "q")]
    async fn fib(&self, n: u32) -> u64 {
        n as u64
    }
}

fn main() {}

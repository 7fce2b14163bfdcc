// Every problem is reported at once, each at its own token.
#[lepus::rpc(qeue = "q")]
fn fib<T>(_n: &T) -> u64 {
    0
}

fn main() {}

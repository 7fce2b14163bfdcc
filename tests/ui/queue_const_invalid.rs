const EMPTY: &str = "";

#[lepus::rpc(queue = EMPTY)]
async fn f(n: u32) -> u32 {
    n
}

fn main() {}

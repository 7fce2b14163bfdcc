#[lepus::rpc(queue = "q")]
async fn numbers() -> impl Iterator<Item = u32> {
    0..3
}

fn main() {}

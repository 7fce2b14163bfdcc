struct Opaque;

#[lepus::rpc(queue = "q")]
async fn take(n: u32, opaque: Opaque) -> u32 {
    let _ = opaque;
    n
}

fn main() {}

#[derive(lepus::Plain)]
struct Opaque;

#[lepus::rpc(queue = "q")]
async fn make() -> Opaque {
    Opaque
}

fn main() {}

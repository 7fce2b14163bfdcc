#[lepus::rpc(queue = "q")]
async fn count() -> u32
where
    u32: Copy,
{
    1
}

fn main() {}

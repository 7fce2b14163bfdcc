#[derive(Debug)]
struct Opaque;

#[lepus::rpc(queue = "q")]
async fn f(n: u32) -> Result<u32, Opaque> {
    if n == 0 {
        return Err(Opaque);
    }
    Ok(n)
}

fn main() {}

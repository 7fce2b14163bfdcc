#[derive(Debug)]
struct NoText;

#[lepus::task(queue = "jobs")]
async fn job(n: u32) -> Result<(), NoText> {
    let _ = n;
    Err(NoText)
}

fn main() {}

#[lepus::rpc(queue = "q")]
async fn shout(text: &str) -> String {
    text.to_uppercase()
}

fn main() {}

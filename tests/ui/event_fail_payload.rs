#[lepus::event(exchange = "logs", kind = "fanout")]
async fn two(line: String, level: u8) {
    let _ = (line, level);
}

#[lepus::event(exchange = "logs", kind = "fanout")]
async fn none() {}

fn main() {}

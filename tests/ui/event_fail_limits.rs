#[lepus::event(exchange = "logs", kind = "fanout", time_limit = "0ms", blocking = 1)]
async fn a(line: String) {
    let _ = line;
}

fn main() {}

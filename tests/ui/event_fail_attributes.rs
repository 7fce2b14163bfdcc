#[lepus::event(exchange = "logs", kind = "headers")]
async fn a(line: String) {
    let _ = line;
}

#[lepus::event(exchange = "logs", kind = "topic")]
async fn b(line: String) {
    let _ = line;
}

#[lepus::event(exchange = "logs", kind = "fanout", delivery = "everyone")]
async fn c(line: String) {
    let _ = line;
}

#[lepus::event(kind = "fanout")]
async fn d(line: String) {
    let _ = line;
}

fn main() {}

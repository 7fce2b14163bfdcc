#[lepus::task(
    queue = "emails",
    retries = "three",
    backoff = "fast",
    time_limit = "0s",
    max_priority = 300,
    rate_limit = "fast",
    colour = "blue"
)]
async fn send_email(to: String) {
    let _ = to;
}

fn main() {}

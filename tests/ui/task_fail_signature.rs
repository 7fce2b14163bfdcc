struct Mailer;

impl Mailer {
    #[lepus::task(queue = "emails")]
    async fn send(&self, to: String) {
        let _ = to;
    }
}

#[lepus::task(queue = "emails")]
async fn generic<T: Send>(to: &str, x: T) {
    let _ = (to, x);
}

fn main() {}

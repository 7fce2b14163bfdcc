#[derive(serde::Serialize, serde::Deserialize)]
struct User {
    name: String,
}

#[lepus::rpc(queue = "users")]
async fn user(id: u32) -> User {
    User { name: id.to_string() }
}

fn main() {}

#[lepus::rpc(queue = "q", time_limit = "0s", blocking = "yes")]
async fn a() {}

#[lepus::rpc(queue = "q", time_limit = "soon", time_limit = "5s")]
async fn b() {}

fn main() {}

//! Shapes the macro accepts: visibilities, patterns, no arguments, unit and Result returns,
//! raw identifiers, several functions on one queue.
use serde::{Deserialize, Serialize};

#[derive(Debug, Serialize, Deserialize)]
pub struct Pair {
    pub a: u8,
    pub b: String,
}

pub mod api {
    use super::Pair;

    #[lepus::rpc(queue = "shapes")]
    pub async fn public(pair: Pair) -> Result<Pair, String> {
        Ok(pair)
    }

    #[lepus::rpc(queue = "shapes", name = "crate_only", time_limit = "5s", blocking = true)]
    pub(crate) async fn crate_only(mut n: u32, _: bool) {
        n += 1;
        let _ = n;
    }

    #[lepus::rpc(queue = "shapes")]
    pub(super) async fn r#type() -> Vec<(u8, Option<String>)> {
        Vec::new()
    }
}

#[lepus::rpc(queue = "shapes")]
async fn private((a, b): (u32, u32), client: u32, options: u32) -> u32 {
    a + b + client + options
}

fn main() {
    let _: lepus::Handler = api::public::handler();
    let _: lepus::Handler = api::crate_only::handler();
    let _: lepus::Handler = api::r#type::handler();
    let _: lepus::Handler = private::handler();
    assert_eq!(api::crate_only::METHOD, "crate_only");
    assert_eq!(api::r#type::METHOD, "type");
    // The marker of each method is the struct named like the function.
    let _: api::public = api::public {};
    let _ = api::r#type {};
    async fn calls(client: &lepus::Client) {
        let _: Result<Pair, lepus::Error<String>> =
            api::public::call(client, Pair { a: 1, b: "x".into() }).await;
        let _: Result<(), lepus::Error> = api::crate_only::call(client, 1, true).await;
        let _: Result<u32, lepus::Error> =
            private::call_with(client, (1, 2), 3, 4, lepus::CallOptions::default()).await;
    }
    let _ = calls;
}

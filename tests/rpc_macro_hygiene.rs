//! Hygiene of `#[lepus::rpc]`: the generated code compiles with no prelude and with common
//! names shadowed by unrelated items, because it only uses absolute paths.
#![no_implicit_prelude]
#![allow(dead_code)]

// Decoys: if the generated code used any of these names unqualified, it would pick these up
// (through the generated `use super::*`) and fail to compile.
struct Result;
struct Option;
struct Box;
struct String;
struct Vec;
struct Client;
struct Error;
struct Handler;
struct CallOptions;
struct Never;
trait Future {}
trait Send {}
trait Method {}
trait Default {}
mod core {}
mod lepus {}

#[::lepus::rpc(queue = "hygiene")]
async fn add(
    a: ::core::primitive::u32,
    b: ::core::primitive::u32,
) -> ::core::result::Result<::core::primitive::u32, ::std::string::String> {
    ::core::result::Result::Ok(a + b)
}

#[::lepus::rpc(queue = "hygiene", name = "unit")]
async fn unit() {}

#[::lepus::rpc(queue = "hygiene")]
async fn plain(
    client: ::core::primitive::u64,
    options: ::core::primitive::u64,
    args: ::core::primitive::u64,
) -> ::core::primitive::u64 {
    client + options + args
}

#[test]
fn generated_items_compile_without_a_prelude() {
    let handlers: [::lepus::Handler; 3] = [add::handler(), unit::handler(), plain::handler()];
    ::core::assert_eq!(handlers[0].queue(), "hygiene");
    ::core::assert_eq!(handlers[0].method(), "add");
    ::core::assert_eq!(handlers[1].method(), "unit");
    ::core::assert_eq!(add::QUEUE, "hygiene");
    ::core::assert_eq!(plain::METHOD, "plain");
    // The functions themselves stay callable locally.
    ::core::assert_eq!(
        ::futures::executor::block_on(add(2, 3)),
        ::core::result::Result::Ok(5)
    );
    ::core::assert_eq!(::futures::executor::block_on(plain(1, 2, 3)), 6);
}

//! Compile-time behaviour of `#[lepus::service]` (issue 16): each misuse of a contract trait is
//! an error at the offending token (`tests/ui/service_*.rs` with their `.stderr`): a method
//! that is not `async`, a generic method, `&mut self` (or no `&self`), an argument or result
//! that cannot travel, two methods of one name on the wire, a default body, and the
//! attribute's own mistakes; and a contract compiles under `#![no_implicit_prelude]`
//! (`tests/ui/service_pass_hygiene.rs`). No broker is involved.

#[test]
fn service_macro_errors_point_at_the_token() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/service_pass_*.rs");
    for case in [
        "not_async",
        "generic_method",
        "mut_self",
        "no_self",
        "not_serializable",
        "duplicate_method",
        "default_body",
        "bad_attribute",
        "bad_limits",
    ] {
        cases.compile_fail(format!("tests/ui/service_{case}.rs"));
    }
}

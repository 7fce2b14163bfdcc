//! Compile-time behaviour of `#[lepus::rpc]`: each misuse is an error at the offending token
//! (`tests/ui/*.rs` with their `.stderr`), and the accepted shapes compile (`pass_*.rs`).

#[test]
fn rpc_macro_ui() {
    let cases = trybuild::TestCases::new();
    cases.pass("tests/ui/pass_*.rs");
    for case in [
        "not_async",
        "self_receiver",
        "generics",
        "where_clause",
        "unknown_key",
        "missing_queue",
        "not_a_string",
        "empty_queue",
        "duplicate_key",
        "not_key_value",
        "reference_arg",
        "impl_trait",
        "combined",
        "not_serializable",
        "limits_bad_values",
    ] {
        cases.compile_fail(format!("tests/ui/{case}.rs"));
    }
}

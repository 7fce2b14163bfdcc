//! Compile-time behaviour of `#[lepus::rpc]`: each misuse is an error at the offending token
//! (`tests/ui/*.rs` with their `.stderr`), and the accepted shapes compile (`pass_*.rs`): among
//! them what cannot be supported, with the message that says what to do instead (a return type
//! that is neither a `Result` nor plain, an error type that cannot travel back, a `Result`
//! declared plain, `?` dropping a remote error).

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
        "arg_not_serializable",
        "returns_not_plain",
        "rpc_error_cannot_travel",
        "queue_const_invalid",
        "plain_for_result_alias",
        "question_mark_drops_remote",
    ] {
        cases.compile_fail(format!("tests/ui/{case}.rs"));
    }
}

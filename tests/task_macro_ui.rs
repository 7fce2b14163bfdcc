//! Compile-time behaviour of `#[lepus::task]` and `#[lepus::event]`: each misuse is an error at
//! the offending token (`tests/ui/task_fail_*`, `tests/ui/event_fail_*`, with their expected
//! `.stderr`), and the generated code compiles under `#![no_implicit_prelude]`
//! (`tests/ui/task_pass_hygiene.rs`). No broker is involved.

#[test]
fn task_and_event_macro_errors_point_at_the_token() {
    let cases = trybuild::TestCases::new();
    cases.compile_fail("tests/ui/task_fail_*.rs");
    cases.compile_fail("tests/ui/event_fail_*.rs");
    cases.pass("tests/ui/task_pass_*.rs");
}

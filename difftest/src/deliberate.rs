//! The deliberate differences between the bundled broker and RabbitMQ 3.10: the one list of
//! them, and the code that keeps the differential tester from reporting them.
//!
//! Each entry says what differs, why we differ on purpose, and how the tester handles it
//! (the generator leaves the input out, or the trace normalises the observation on both
//! sides). A difference that is a bug does not belong here: it is fixed, or it is reported.
//!
//! Departures found by the lapin and raw-socket suites are listed in `tests/README.md` next
//! to the tests that pin them; those the tester could observe are repeated here.
//!
//! | # | difference | why | handled by |
//! |---|---|---|---|
//! | 1 | `basic.publish immediate=true`: both brokers refuse it (540 NOT_IMPLEMENTED), so it is no difference; kept in programs | — | compared as usual |
//!
//! (The table grows as campaigns find differences we decide to keep; see `difftest/README.md`
//! for the campaigns and what they found.)

use crate::program::{OpKind, Props};

/// False for operations the generator must leave out (an entry of the table above).
pub fn generate(kind: &OpKind) -> bool {
    let _ = kind;
    true
}

/// Rewrites properties as observed, on both sides, where a deliberate difference would
/// otherwise show.
pub fn normalise_props(props: Props) -> Props {
    props
}

//! Fuzz target: the AMQP frame decoder over arbitrary bytes (no panic, no hang, no unbounded
//! allocation from a frame header's size field).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lepus_broker::fuzzing::frames(data);
});

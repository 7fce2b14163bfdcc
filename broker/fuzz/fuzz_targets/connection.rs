//! Fuzz target: arbitrary client bytes through a real connection task (protocol header,
//! handshake, channel and method handling, content assembly, close) of an in-memory broker.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lepus_broker::fuzzing::connection(data);
});

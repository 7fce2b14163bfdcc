//! Fuzz target, structure-aware: the input is read as choices for a grammar of a whole client
//! connection (protocol header, start-ok with a grammar-made client-properties table, tune-ok
//! with boundary limits, open, a session on a few channels, one wrong frame at the end),
//! which a real connection task of an in-memory broker serves.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lepus_broker::fuzzing::grammar_connection(data);
});

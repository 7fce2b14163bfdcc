//! Fuzz target, structure-aware: the input is read as choices for a grammar of client frames
//! (every method with boundary values, field tables and arrays of any type, size and depth,
//! one wrong frame at the end), which go to the frame decoder.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    lepus_broker::fuzzing::grammar_frames(data);
});

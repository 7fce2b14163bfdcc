//! The unit tests of `fuzzing/grammar.rs`.

use super::*;

#[test]
fn a_nest_is_well_formed_at_any_depth() {
    for style in 0u8..3 {
        for depth in [0u16, 1, 2, 3, 100, 5000] {
            let mut input = vec![style];
            input.extend_from_slice(&depth.to_be_bytes());
            let mut c = Choices::new(&input);
            let mut out = Vec::new();
            nest(&mut c, &mut out, 1 << 20);
            // Walk it: every size field must equal the bytes that follow it.
            let mut pos = 0;
            let mut levels = 0;
            loop {
                let kind = out[pos];
                let size =
                    u32::from_be_bytes([out[pos + 1], out[pos + 2], out[pos + 3], out[pos + 4]])
                        as usize;
                assert_eq!(size, out.len() - pos - 5, "style {style} depth {depth}");
                if size == 0 {
                    break;
                }
                pos += 5;
                if kind == b'F' {
                    assert_eq!(&out[pos..pos + 2], &[1, b'a']);
                    pos += 2;
                }
                levels += 1;
            }
            assert_eq!(levels, usize::from(depth));
        }
    }
}

#[test]
fn tables_decode_with_amq_protocol_at_shallow_depth() {
    // Ordinary grammar tables are what a real client may send: amq-protocol decodes most
    // of them (those with unknown type octets or cut strings excepted).
    let mut decoded = 0;
    for seed in 0u32..300 {
        let data: Vec<u8> = (0..64u32)
            .map(|i| (seed.wrapping_mul(2_654_435_761).wrapping_add(i * 97) >> 3) as u8)
            .collect();
        let mut c = Choices::new(&data);
        let mut out = Vec::new();
        // A small budget keeps nests shallow (a test thread's stack is small).
        table(&mut c, &mut out, MAX_RECURSIVE_DEPTH, 200);
        if amq_protocol::types::parsing::parse_field_table(out.as_slice()).is_ok() {
            decoded += 1;
        }
    }
    assert!(decoded > 100, "only {decoded} of 300 tables decode");
}

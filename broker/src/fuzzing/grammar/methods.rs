//! Client methods as the grammar writes them: every client-to-server method of 0-9-1 (and
//! RabbitMQ's extensions) with its arguments, bit fields packed as the spec packs them, and
//! content headers.

use super::*;

/// Packs `bits` into octets, first bit lowest, as the spec packs consecutive bit fields.
pub(super) fn bits(out: &mut Vec<u8>, bits: &[bool]) {
    for chunk in bits.chunks(8) {
        let mut octet = 0u8;
        for (i, b) in chunk.iter().enumerate() {
            if *b {
                octet |= 1 << i;
            }
        }
        out.push(octet);
    }
}

pub(super) fn random_bits<const N: usize>(c: &mut Choices<'_>) -> [bool; N] {
    let v = c.u8();
    std::array::from_fn(|i| v & (1 << (i % 8)) != 0)
}

/// The payload of a client method: class id, method id, arguments. `budget` bounds the
/// tables; the method is one of every client-to-server method of 0-9-1 (plus RabbitMQ's).
pub(crate) fn method(c: &mut Choices<'_>, budget: usize) -> Vec<u8> {
    let mut p = Vec::new();
    let head = |p: &mut Vec<u8>, class: u16, method: u16| {
        p.extend_from_slice(&class.to_be_bytes());
        p.extend_from_slice(&method.to_be_bytes());
    };
    let reserved_short = |p: &mut Vec<u8>| p.extend_from_slice(&[0, 0]);
    match c.u8() % 36 {
        // connection
        0 => {
            head(&mut p, 10, 11); // start-ok
            table(c, &mut p, 0, budget);
            shortstr(c, &mut p);
            longstr(c, &mut p, budget);
            shortstr(c, &mut p);
        }
        1 => {
            head(&mut p, 10, 21); // secure-ok
            longstr(c, &mut p, budget);
        }
        2 => {
            head(&mut p, 10, 31); // tune-ok
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            p.extend_from_slice(&c.boundary_u32().to_be_bytes());
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        3 => {
            head(&mut p, 10, 40); // open
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
        }
        4 => {
            head(&mut p, 10, 50); // close
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            shortstr(c, &mut p);
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        5 => head(&mut p, 10, 51), // close-ok
        6 => {
            head(&mut p, 10, 60); // blocked (server to client; a client sending it is wrong)
            shortstr(c, &mut p);
        }
        7 => {
            head(&mut p, 10, 70); // update-secret
            longstr(c, &mut p, budget);
            shortstr(c, &mut p);
        }
        // channel
        8 => {
            head(&mut p, 20, 10); // open
            shortstr(c, &mut p);
        }
        9 => {
            head(&mut p, 20, 20); // flow
            bits(&mut p, &random_bits::<1>(c));
        }
        10 => {
            head(&mut p, 20, 21); // flow-ok
            bits(&mut p, &random_bits::<1>(c));
        }
        11 => {
            head(&mut p, 20, 40); // close
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            shortstr(c, &mut p);
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
        }
        12 => head(&mut p, 20, 41), // close-ok
        13 => {
            head(&mut p, 30, 10); // access.request
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<5>(c));
        }
        // exchange
        14 => {
            head(&mut p, 40, 10); // declare
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<5>(c));
            table(c, &mut p, 0, budget);
        }
        15 => {
            head(&mut p, 40, 20); // delete
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<2>(c));
        }
        16 | 17 => {
            head(&mut p, 40, if c.bool() { 30 } else { 40 }); // bind / unbind
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
            table(c, &mut p, 0, budget);
        }
        // queue
        18 => {
            head(&mut p, 50, 10); // declare
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<5>(c));
            table(c, &mut p, 0, budget);
        }
        19 => {
            head(&mut p, 50, 20); // bind
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
            table(c, &mut p, 0, budget);
        }
        20 => {
            head(&mut p, 50, 30); // purge
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
        }
        21 => {
            head(&mut p, 50, 40); // delete
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<3>(c));
        }
        22 => {
            head(&mut p, 50, 50); // unbind
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            table(c, &mut p, 0, budget);
        }
        // basic
        23 => {
            head(&mut p, 60, 10); // qos
            p.extend_from_slice(&c.boundary_u32().to_be_bytes());
            p.extend_from_slice(&c.boundary_u16().to_be_bytes());
            bits(&mut p, &random_bits::<1>(c));
        }
        24 => {
            head(&mut p, 60, 20); // consume
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<4>(c));
            table(c, &mut p, 0, budget);
        }
        25 => {
            head(&mut p, 60, 30); // cancel
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
        }
        26 | 27 => {
            head(&mut p, 60, 40); // publish
            reserved_short(&mut p);
            shortstr(c, &mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<2>(c));
        }
        28 => {
            head(&mut p, 60, 70); // get
            reserved_short(&mut p);
            shortstr(c, &mut p);
            bits(&mut p, &random_bits::<1>(c));
        }
        29..=31 => {
            let (id, nbits) = match c.u8() % 3 {
                0 => (80, 1),  // ack
                1 => (90, 1),  // reject
                _ => (120, 2), // nack
            };
            head(&mut p, 60, id);
            p.extend_from_slice(&c.boundary_u64().to_be_bytes());
            let b = random_bits::<2>(c);
            bits(&mut p, &b[..nbits]);
        }
        32 => {
            head(&mut p, 60, if c.bool() { 100 } else { 110 }); // recover-async / recover
            bits(&mut p, &random_bits::<1>(c));
        }
        33 => {
            head(&mut p, 85, 10); // confirm.select
            bits(&mut p, &random_bits::<1>(c));
        }
        _ => {
            head(&mut p, 90, [10, 20, 30][c.below(3)]); // tx.select / commit / rollback
        }
    }
    p
}

/// A content header payload (class 60): weight, body size, property flags, properties.
pub(super) fn content_header(c: &mut Choices<'_>, body_size: u64, budget: usize) -> Vec<u8> {
    let mut p = Vec::new();
    let class: u16 = if c.u8().is_multiple_of(16) {
        c.u16()
    } else {
        60
    };
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&[0, 0]);
    p.extend_from_slice(&body_size.to_be_bytes());
    let flags = c.u16() & !1; // bit 0 would announce a second flags word
    p.extend_from_slice(&flags.to_be_bytes());
    // content-type, content-encoding, headers, delivery-mode, priority, correlation-id,
    // reply-to, expiration, message-id, timestamp, type, user-id, app-id, cluster-id
    for bit in 0..14u16 {
        if flags & (1 << (15 - bit)) == 0 {
            continue;
        }
        match bit {
            2 => table(c, &mut p, 0, budget),
            3 | 4 => p.push(c.u8()),
            9 => p.extend_from_slice(&c.boundary_u64().to_be_bytes()),
            _ => shortstr(c, &mut p),
        }
    }
    p
}

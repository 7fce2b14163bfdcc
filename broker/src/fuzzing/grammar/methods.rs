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

/// One argument of a method, as the grammar fills it (AMQP 0-9-1 §4.2.5 domains).
#[derive(Clone, Copy)]
enum Arg {
    /// A reserved `short` (the old ticket), always 0.
    Reserved,
    /// A `short`, biased to its boundaries.
    Short,
    /// A `long`, biased to its boundaries.
    Long,
    /// A `longlong`, biased to its boundaries.
    LongLong,
    /// A short string.
    ShortStr,
    /// A long string.
    LongStr,
    /// `n` consecutive bit fields, packed into one octet (n ≤ 8).
    Bits(usize),
    /// A field table.
    Table,
}

use Arg::*;

/// The payload of a client method: class id, method id, arguments. `budget` bounds the
/// tables; the method is one of every client-to-server method of 0-9-1 (plus RabbitMQ's).
pub(crate) fn method(c: &mut Choices<'_>, budget: usize) -> Vec<u8> {
    let (class, method, args): (u16, u16, &[Arg]) = match c.u8() % 36 {
        // connection
        0 => (10, 11, &[Table, ShortStr, LongStr, ShortStr]), // start-ok
        1 => (10, 21, &[LongStr]),                            // secure-ok
        2 => (10, 31, &[Short, Long, Short]),                 // tune-ok
        3 => (10, 40, &[ShortStr, ShortStr, Bits(1)]),        // open
        4 => (10, 50, &[Short, ShortStr, Short, Short]),      // close
        5 => (10, 51, &[]),                                   // close-ok
        // blocked (server to client; a client sending it is wrong)
        6 => (10, 60, &[ShortStr]),
        7 => (10, 70, &[LongStr, ShortStr]), // update-secret
        // channel
        8 => (20, 10, &[ShortStr]),                       // open
        9 => (20, 20, &[Bits(1)]),                        // flow
        10 => (20, 21, &[Bits(1)]),                       // flow-ok
        11 => (20, 40, &[Short, ShortStr, Short, Short]), // close
        12 => (20, 41, &[]),                              // close-ok
        13 => (30, 10, &[ShortStr, Bits(5)]),             // access.request
        // exchange
        14 => (40, 10, &[Reserved, ShortStr, ShortStr, Bits(5), Table]), // declare
        15 => (40, 20, &[Reserved, ShortStr, Bits(2)]),                  // delete
        16 | 17 => {
            let id = if c.bool() { 30 } else { 40 }; // bind / unbind
            (
                40,
                id,
                &[Reserved, ShortStr, ShortStr, ShortStr, Bits(1), Table],
            )
        }
        // queue
        18 => (50, 10, &[Reserved, ShortStr, Bits(5), Table]), // declare
        19 => (
            50,
            20,
            &[Reserved, ShortStr, ShortStr, ShortStr, Bits(1), Table],
        ), // bind
        20 => (50, 30, &[Reserved, ShortStr, Bits(1)]),        // purge
        21 => (50, 40, &[Reserved, ShortStr, Bits(3)]),        // delete
        22 => (50, 50, &[Reserved, ShortStr, ShortStr, ShortStr, Table]), // unbind
        // basic
        23 => (60, 10, &[Long, Short, Bits(1)]), // qos
        24 => (60, 20, &[Reserved, ShortStr, ShortStr, Bits(4), Table]), // consume
        25 => (60, 30, &[ShortStr, Bits(1)]),    // cancel
        26 | 27 => (60, 40, &[Reserved, ShortStr, ShortStr, Bits(2)]), // publish
        28 => (60, 70, &[Reserved, ShortStr, Bits(1)]), // get
        29..=31 => match c.u8() % 3 {
            0 => (60, 80, &[LongLong, Bits(1)]),  // ack
            1 => (60, 90, &[LongLong, Bits(1)]),  // reject
            _ => (60, 120, &[LongLong, Bits(2)]), // nack
        },
        32 => (60, if c.bool() { 100 } else { 110 }, &[Bits(1)]), // recover-async / recover
        33 => (85, 10, &[Bits(1)]),                               // confirm.select
        _ => (90, [10, 20, 30][c.below(3)], &[]),                 // tx.select / commit / rollback
    };
    let mut p = Vec::new();
    p.extend_from_slice(&class.to_be_bytes());
    p.extend_from_slice(&method.to_be_bytes());
    for arg in args {
        match *arg {
            Reserved => p.extend_from_slice(&[0, 0]),
            Short => p.extend_from_slice(&c.boundary_u16().to_be_bytes()),
            Long => p.extend_from_slice(&c.boundary_u32().to_be_bytes()),
            LongLong => p.extend_from_slice(&c.boundary_u64().to_be_bytes()),
            ShortStr => shortstr(c, &mut p),
            LongStr => longstr(c, &mut p, budget),
            Bits(n) => bits(&mut p, &random_bits::<8>(c)[..n]),
            Table => table(c, &mut p, 0, budget),
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

//! `Definitions`: the durable topology (exchanges, queues, bindings) and its snapshot file.
//! Changes are logged as records in the segment log (see `record`) and folded into a new
//! snapshot from time to time (see `snapshot`).

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use bytes::Bytes;

use super::ledger::LogPoint;
use super::record::{put_shortstr, put_table};
use super::segment::sync_dir;
use super::{QueueId, StoreError};

/// A durable exchange (`exchange.declare` with durable=true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExchangeDef {
    /// Virtual host.
    pub vhost: String,
    /// Exchange name.
    pub name: String,
    /// Exchange type: `direct`, `fanout`, `topic`, `headers`, ...
    pub kind: String,
    /// `auto-delete` flag.
    pub auto_delete: bool,
    /// `internal` flag.
    pub internal: bool,
    /// The declare's `arguments` field table, AMQP-encoded (opaque to the store).
    pub arguments: Bytes,
}

/// A durable queue (`queue.declare` with durable=true).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueDef {
    /// The store's id for this queue, used in log records; never reused.
    pub id: QueueId,
    /// Virtual host.
    pub vhost: String,
    /// Queue name.
    pub name: String,
    /// `auto-delete` flag.
    pub auto_delete: bool,
    /// The declare's `arguments` field table (`x-message-ttl`, `x-max-length`, ...),
    /// AMQP-encoded (opaque to the store).
    pub arguments: Bytes,
}

/// Bit 0 of the flags byte of an exchange or a queue: `auto-delete`.
const FLAG_AUTO_DELETE: u8 = 1;
/// Bit 1 of the flags byte of an exchange: `internal`.
const FLAG_INTERNAL: u8 = 2;

impl ExchangeDef {
    /// The flags byte of an exchange declare record and of a snapshot entry (the same layout
    /// in both): bit 0 auto-delete, bit 1 internal.
    pub(crate) fn flags(&self) -> u8 {
        (u8::from(self.auto_delete) * FLAG_AUTO_DELETE) | (u8::from(self.internal) * FLAG_INTERNAL)
    }

    /// The exchange an exchange declare record or a snapshot entry describes, its `flags` byte
    /// read as [`flags`](Self::flags) writes it (other bits ignored).
    pub(crate) fn from_flags(
        vhost: String,
        name: String,
        kind: String,
        flags: u8,
        arguments: Bytes,
    ) -> Self {
        ExchangeDef {
            vhost,
            name,
            kind,
            auto_delete: flags & FLAG_AUTO_DELETE != 0,
            internal: flags & FLAG_INTERNAL != 0,
            arguments,
        }
    }
}

/// The flags byte of a queue declare record and of a snapshot entry (the same layout in both):
/// bit 0 auto-delete.
pub(crate) fn queue_flags(auto_delete: bool) -> u8 {
    u8::from(auto_delete) * FLAG_AUTO_DELETE
}

impl QueueDef {
    /// The queue a queue declare record or a snapshot entry describes, its `flags` byte read as
    /// [`queue_flags`] writes it (other bits ignored).
    pub(crate) fn from_flags(
        id: QueueId,
        vhost: String,
        name: String,
        flags: u8,
        arguments: Bytes,
    ) -> Self {
        QueueDef {
            id,
            vhost,
            name,
            auto_delete: flags & FLAG_AUTO_DELETE != 0,
            arguments,
        }
    }
}

/// What a binding routes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BindingDestination {
    /// `queue.bind`.
    Queue,
    /// `exchange.bind` (RabbitMQ extension).
    Exchange,
}

/// A binding between durable entities.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BindingDef {
    /// Virtual host.
    pub vhost: String,
    /// Source exchange name.
    pub source: String,
    /// Whether `destination` names a queue or an exchange.
    pub destination_kind: BindingDestination,
    /// Destination queue or exchange name.
    pub destination: String,
    /// Routing key.
    pub routing_key: String,
    /// The bind's `arguments` field table, AMQP-encoded (opaque to the store).
    pub arguments: Bytes,
}

/// The durable topology. Each change is a record in the segment log (kinds 4 to 9 of
/// `Record`), group-committed with the messages; the file `definitions` is a snapshot of the
/// topology as of a place in the log, written (write-temp + fsync + rename + fsync of the
/// directory, so a crash leaves either the old or the new snapshot, never a mix) once the log
/// holds more than 1,024 topology records and more than half as many as the topology has
/// entries, or when a segment that could otherwise be deleted holds some. The topology at open is the snapshot
/// plus the topology records from its place in the log on; records before it are skipped,
/// and segments holding records after it are kept.
///
/// File layout (integers big-endian; a *shortstr* is a u8 length then UTF-8 bytes, as in AMQP
/// 0-9-1 §4.2.5.3; a *table* is a u32 length then an AMQP field table's encoded bytes):
///
/// 1. Magic `b"LPDF"` [4 bytes].
/// 2. Format version as u32, currently 2 [4 bytes].
/// 3. Next queue id as u64 [8 bytes].
/// 4. The place in the log the snapshot covers up to (version 2 only): segment number as u32,
///    byte offset as u32 [8 bytes]. Every topology record before it is in the snapshot, none
///    after it. A version 1 file (written before topology records existed) covers no record.
/// 5. Exchange count as u32, then per exchange: vhost shortstr, name shortstr, type shortstr,
///    flags u8 (bit 0 auto-delete, bit 1 internal), arguments table.
/// 6. Queue count as u32, then per queue: id u64, vhost shortstr, name shortstr, flags u8
///    (bit 0 auto-delete), arguments table.
/// 7. Binding count as u32, then per binding: vhost shortstr, source shortstr, destination kind
///    u8 (0 queue, 1 exchange), destination shortstr, routing key shortstr, arguments table.
/// 8. CRC-32 (IEEE) of fields 1-7 as u32 [4 bytes].
///
/// Not stored: exclusive queues (they die with their connection), non-durable entities, and
/// policies or users (the broker has none).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Definitions {
    /// Durable exchanges.
    pub exchanges: Vec<ExchangeDef>,
    /// Durable queues.
    pub queues: Vec<QueueDef>,
    /// Bindings between durable entities.
    pub bindings: Vec<BindingDef>,
    /// The id the next declared queue gets.
    pub(crate) next_queue_id: u64,
}

const MAGIC: &[u8; 4] = b"LPDF";
const VERSION: u32 = 2;
const FILE_NAME: &str = "definitions";

/// The snapshot file in `data_dir`.
pub(crate) fn definitions_path(data_dir: &Path) -> PathBuf {
    data_dir.join(FILE_NAME)
}

impl Definitions {
    /// Finds a queue by vhost and name.
    pub fn queue(&self, vhost: &str, name: &str) -> Option<&QueueDef> {
        self.queues
            .iter()
            .find(|q| q.vhost == vhost && q.name == name)
    }

    /// Reads the snapshot and the place in the log it covers up to, or returns empty
    /// definitions covering nothing when there is none yet.
    pub(crate) fn load(data_dir: &Path) -> Result<(Self, LogPoint), StoreError> {
        let path = definitions_path(data_dir);
        match fs::read(&path) {
            Ok(bytes) => Self::decode(&bytes)
                .map_err(|reason| StoreError::CorruptDefinitions { path, reason }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((
                Self {
                    next_queue_id: 1,
                    ..Self::default()
                },
                (0, 0),
            )),
            Err(e) => Err(StoreError::io(path, e)),
        }
    }

    /// Replaces the snapshot atomically and durably, as covering the log up to `covers`.
    /// Blocking.
    pub(crate) fn save(&self, data_dir: &Path, covers: LogPoint) -> Result<(), StoreError> {
        let path = definitions_path(data_dir);
        let tmp = data_dir.join(format!("{FILE_NAME}.tmp"));
        let bytes = self.encode(covers);
        let written = File::create(&tmp).and_then(|mut file| {
            file.write_all(&bytes)?;
            file.sync_all()
        });
        if let Err(e) = written {
            // On a full disk, a partial snapshot would hold space the log needs; the next
            // snapshot starts over anyway.
            let _ = fs::remove_file(&tmp);
            return Err(StoreError::io(&tmp, e));
        }
        fs::rename(&tmp, &path).map_err(|e| StoreError::io(&path, e))?;
        sync_dir(data_dir)
    }

    pub(crate) fn encode(&self, covers: LogPoint) -> Vec<u8> {
        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_be_bytes());
        out.extend_from_slice(&self.next_queue_id.to_be_bytes());
        out.extend_from_slice(&covers.0.to_be_bytes());
        out.extend_from_slice(&covers.1.to_be_bytes());
        put_u32(&mut out, self.exchanges.len());
        for e in &self.exchanges {
            put_shortstr(&mut out, &e.vhost);
            put_shortstr(&mut out, &e.name);
            put_shortstr(&mut out, &e.kind);
            out.push(e.flags());
            put_table(&mut out, &e.arguments);
        }
        put_u32(&mut out, self.queues.len());
        for q in &self.queues {
            out.extend_from_slice(&q.id.0.to_be_bytes());
            put_shortstr(&mut out, &q.vhost);
            put_shortstr(&mut out, &q.name);
            out.push(queue_flags(q.auto_delete));
            put_table(&mut out, &q.arguments);
        }
        put_u32(&mut out, self.bindings.len());
        for b in &self.bindings {
            put_shortstr(&mut out, &b.vhost);
            put_shortstr(&mut out, &b.source);
            out.push(match b.destination_kind {
                BindingDestination::Queue => 0,
                BindingDestination::Exchange => 1,
            });
            put_shortstr(&mut out, &b.destination);
            put_shortstr(&mut out, &b.routing_key);
            put_table(&mut out, &b.arguments);
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        out
    }

    pub(crate) fn decode(bytes: &[u8]) -> Result<(Self, LogPoint), &'static str> {
        let (body, crc) = bytes.split_last_chunk::<4>().ok_or("file too short")?;
        if crc32fast::hash(body) != u32::from_be_bytes(*crc) {
            return Err("checksum mismatch");
        }
        let mut r = Reader(body);
        if r.take(4)? != MAGIC {
            return Err("bad magic");
        }
        let version = r.u32()?;
        if version != 1 && version != VERSION {
            return Err("unsupported version");
        }
        let mut defs = Self {
            next_queue_id: r.u64()?,
            ..Self::default()
        };
        let covers = if version == 1 {
            (0, 0)
        } else {
            (r.u32()?, r.u32()?)
        };
        for _ in 0..r.u32()? {
            let (vhost, name, kind) = (r.shortstr()?, r.shortstr()?, r.shortstr()?);
            let flags = r.u8()?;
            defs.exchanges.push(ExchangeDef::from_flags(
                vhost,
                name,
                kind,
                flags,
                r.table()?,
            ));
        }
        for _ in 0..r.u32()? {
            let id = QueueId(r.u64()?);
            let (vhost, name) = (r.shortstr()?, r.shortstr()?);
            let flags = r.u8()?;
            defs.queues
                .push(QueueDef::from_flags(id, vhost, name, flags, r.table()?));
        }
        for _ in 0..r.u32()? {
            let (vhost, source) = (r.shortstr()?, r.shortstr()?);
            let destination_kind = match r.u8()? {
                0 => BindingDestination::Queue,
                1 => BindingDestination::Exchange,
                _ => return Err("bad binding destination kind"),
            };
            defs.bindings.push(BindingDef {
                vhost,
                source,
                destination_kind,
                destination: r.shortstr()?,
                routing_key: r.shortstr()?,
                arguments: r.table()?,
            });
        }
        if !r.0.is_empty() {
            return Err("trailing bytes");
        }
        Ok((defs, covers))
    }
}

fn put_u32(out: &mut Vec<u8>, n: usize) {
    // Entity counts are far below u32::MAX (each entity is at least a few bytes of a snapshot
    // read into memory whole).
    out.extend_from_slice(&(n as u32).to_be_bytes());
}

/// A cursor over the snapshot bytes.
struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], &'static str> {
        if n > self.0.len() {
            return Err("truncated");
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }
    fn u8(&mut self) -> Result<u8, &'static str> {
        Ok(self.take(1)?[0])
    }
    fn u32(&mut self) -> Result<u32, &'static str> {
        let b = self.take(4)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }
    fn u64(&mut self) -> Result<u64, &'static str> {
        let b = self.take(8)?;
        let mut a = [0; 8];
        a.copy_from_slice(b);
        Ok(u64::from_be_bytes(a))
    }
    fn shortstr(&mut self) -> Result<String, &'static str> {
        let len = self.u8()?;
        let b = self.take(usize::from(len))?;
        String::from_utf8(b.to_vec()).map_err(|_| "shortstr is not UTF-8")
    }
    fn table(&mut self) -> Result<Bytes, &'static str> {
        let len = self.u32()?;
        Ok(Bytes::copy_from_slice(self.take(len as usize)?))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn sample() -> Definitions {
        Definitions {
            exchanges: vec![ExchangeDef {
                vhost: "/".into(),
                name: "tasks".into(),
                kind: "direct".into(),
                auto_delete: false,
                internal: true,
                arguments: Bytes::from_static(b"\x00\x00\x00\x00"),
            }],
            queues: vec![QueueDef {
                id: QueueId(4),
                vhost: "/".into(),
                name: "work".into(),
                auto_delete: true,
                arguments: Bytes::new(),
            }],
            bindings: vec![BindingDef {
                vhost: "/".into(),
                source: "tasks".into(),
                destination_kind: BindingDestination::Queue,
                destination: "work".into(),
                routing_key: "k".into(),
                arguments: Bytes::new(),
            }],
            next_queue_id: 5,
        }
    }

    #[test]
    fn empty_definitions_byte_layout() {
        let defs = Definitions {
            next_queue_id: 1,
            ..Definitions::default()
        };
        let bytes = defs.encode((3, 0x0102));
        #[rustfmt::skip]
        let expected_body: &[u8] = &[
            b'L', b'P', b'D', b'F',         // magic
            0, 0, 0, 2,                     // version
            0, 0, 0, 0, 0, 0, 0, 1,         // next queue id
            0, 0, 0, 3,                     // covers the log up to segment 3,
            0, 0, 1, 2,                     // offset 258
            0, 0, 0, 0,                     // exchanges
            0, 0, 0, 0,                     // queues
            0, 0, 0, 0,                     // bindings
        ];
        assert_eq!(&bytes[..bytes.len() - 4], expected_body);
        assert_eq!(Definitions::decode(&bytes), Ok((defs, (3, 0x0102))));
    }

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let defs = sample();
        let mut bytes = defs.encode((1, 8));
        assert_eq!(Definitions::decode(&bytes), Ok((defs, (1, 8))));
        bytes[12] ^= 1;
        assert_eq!(Definitions::decode(&bytes), Err("checksum mismatch"));
        assert_eq!(Definitions::decode(&[1, 2]), Err("file too short"));
    }

    #[test]
    fn a_version_1_snapshot_covers_no_log_record() {
        let defs = sample();
        // Version 1: no log position after the next queue id.
        let v2 = defs.encode((9, 9));
        let mut v1 = v2[..v2.len() - 4].to_vec();
        v1[4..8].copy_from_slice(&1u32.to_be_bytes());
        v1.drain(16..24);
        let crc = crc32fast::hash(&v1);
        v1.extend_from_slice(&crc.to_be_bytes());
        assert_eq!(Definitions::decode(&v1), Ok((defs, (0, 0))));
    }

    #[test]
    fn the_flags_byte_reads_back_as_it_was_written() {
        for (auto_delete, internal, byte) in [
            (false, false, 0),
            (true, false, 1),
            (false, true, 2),
            (true, true, 3),
        ] {
            let x =
                ExchangeDef::from_flags("/".into(), "x".into(), "topic".into(), byte, Bytes::new());
            assert_eq!(
                (x.auto_delete, x.internal, x.flags()),
                (auto_delete, internal, byte)
            );
        }
        // Bits the layout does not define are ignored.
        let x = ExchangeDef::from_flags("/".into(), "x".into(), "topic".into(), 0xfd, Bytes::new());
        assert_eq!((x.auto_delete, x.internal), (true, false));
        for (auto_delete, byte) in [(false, 0), (true, 1)] {
            let q = QueueDef::from_flags(QueueId(4), "/".into(), "q".into(), byte, Bytes::new());
            assert_eq!(
                (q.auto_delete, queue_flags(q.auto_delete)),
                (auto_delete, byte)
            );
        }
        let q = QueueDef::from_flags(QueueId(4), "/".into(), "q".into(), 0xfe, Bytes::new());
        assert!(!q.auto_delete);
    }
}

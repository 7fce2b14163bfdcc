//! `lepus-difftest`: differential testing of the bundled broker against RabbitMQ.
//!
//! Random but well-formed AMQP 0-9-1 programs (several connections and channels, topology
//! with every flag and argument, publishes with every property, consumers, acks, qos,
//! confirms, transactions, closes) run against both brokers through a raw client of our own;
//! everything a client can observe is recorded in a canonical trace and compared. A program
//! that diverges is shrunk to a short one and printed as a regression test. See
//! `difftest/README.md` for the commands, and [`deliberate`] for the differences we keep.
//!
//! # Layout
//! - [`program`]: operations, programs and their text form.
//! - `text`: quoted strings and field tables as text (shared by programs and traces).
//! - [`generate`]: random programs from a seed.
//! - [`client`]: the raw AMQP client (amq-protocol's codec, nothing hidden).
//! - [`runner`]: runs a program against one broker, settling before each observation.
//! - [`trace`]: what was observed, its canonical text, and the comparison.
//! - [`campaign`]: pairs of runs, shrinking, campaigns, test-case printing.
//! - [`regression`]: replaying kept failures as tests.
//! - [`deliberate`]: the one list of deliberate differences.

pub mod campaign;
pub mod client;
pub mod deliberate;
pub mod generate;
pub mod program;
pub mod regression;
pub mod runner;
mod text;
pub mod trace;

pub use text::ParseError;

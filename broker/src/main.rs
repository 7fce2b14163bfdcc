//! `lepus-broker`: runs the bundled broker as a server (placeholder).

fn main() {}

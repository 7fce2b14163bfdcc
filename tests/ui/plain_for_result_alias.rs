//! A `Result` (or an alias of one) cannot be declared plain: it would be read as a success.
type Outcome = Result<u32, String>;

impl lepus::Plain for Outcome {}

fn main() {}

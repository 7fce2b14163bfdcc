//! `?` does not turn a typed `lepus::Error<E>` into `lepus::Error`: its `Remote(E)` has no
//! place there. (The other way round is fine.)
fn call() -> Result<u32, lepus::Error<String>> {
    Err(lepus::Error::Remote("no".into()))
}

fn plain() -> Result<u32, lepus::Error> {
    let n = call()?;
    Ok(n)
}

fn main() {
    let _ = plain;
}

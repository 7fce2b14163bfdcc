//! What the topic benches share: the deterministic generator of their random patterns, so that
//! `topic_route` and `topic_stall` bind the same patterns and their runs compare.

/// A deterministic pattern generator (xorshift).
pub(crate) struct Rng(pub(crate) u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    /// A 255-byte pattern of 128 one-character words drawn from `alphabet`.
    pub(crate) fn pattern(&mut self, alphabet: &[&str]) -> String {
        let words: Vec<&str> = (0..128)
            .map(|_| alphabet[(self.next() % alphabet.len() as u64) as usize])
            .collect();
        words.join(".")
    }
}

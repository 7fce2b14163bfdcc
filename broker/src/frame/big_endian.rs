//! Bounds-checked big-endian reads off a frame payload, shared by the hand-written codec
//! ([`super::basic_codec`]) and the nesting pre-scan ([`super::nesting`]).

/// A reader of big-endian fields: a reader supplies [`take`](Self::take), and the integer
/// reads come with it. Every read is `None`, consuming nothing, past the reader's end. The
/// default methods are monomorphized and inlined into each reader, so they cost what
/// hand-written ones do (no dynamic dispatch, no allocation).
pub(super) trait BigEndianReader<'a> {
    /// The next `n` bytes, or `None` when fewer are left.
    fn take(&mut self, n: usize) -> Option<&'a [u8]>;

    /// One octet.
    #[inline]
    fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    /// A big-endian `u16`.
    #[inline]
    fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_be_bytes([b[0], b[1]]))
    }

    /// A big-endian `u32`.
    #[inline]
    fn u32(&mut self) -> Option<u32> {
        self.take(4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A big-endian `u64`.
    #[inline]
    fn u64(&mut self) -> Option<u64> {
        let b = self.take(8)?;
        let mut raw = [0u8; 8];
        raw.copy_from_slice(b);
        Some(u64::from_be_bytes(raw))
    }
}

//! Formatting without a heap: a fixed buffer that truncates, and `log!`.

/// A fixed-capacity text buffer. Writes past the end are cut, never an error,
/// so a log line can never fault a task.
pub struct Buf<const N: usize> {
    bytes: [u8; N],
    len: usize,
}

impl<const N: usize> Buf<N> {
    pub const fn new() -> Self {
        Buf {
            bytes: [0; N],
            len: 0,
        }
    }
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
    pub fn as_str(&self) -> &str {
        // Truncation may split a UTF-8 sequence; show what is valid.
        match core::str::from_utf8(self.as_bytes()) {
            Ok(s) => s,
            Err(e) => core::str::from_utf8(&self.bytes[..e.valid_up_to()]).unwrap_or(""),
        }
    }
    pub fn clear(&mut self) {
        self.len = 0;
    }
    /// Appends `bytes` (cut at the capacity), without `core::fmt`.
    pub fn push(&mut self, bytes: &[u8]) {
        let n = bytes.len().min(N - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&bytes[..n]);
        self.len += n;
    }
    /// Appends `v` in decimal, without `core::fmt`.
    pub fn push_decimal(&mut self, mut v: u32) {
        let mut digits = [0u8; 10];
        let mut i = digits.len();
        loop {
            i -= 1;
            digits[i] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        self.push(&digits[i..]);
    }
}

impl<const N: usize> Default for Buf<N> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const N: usize> core::fmt::Write for Buf<N> {
    fn write_str(&mut self, s: &str) -> core::fmt::Result {
        self.push(s.as_bytes());
        Ok(())
    }
}

/// Logs a formatted line to the kernel console (prefixed with the task name).
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => {{
        let mut b = $crate::fmt::Buf::<192>::new();
        let _ = core::fmt::Write::write_fmt(&mut b, format_args!($($arg)*));
        $crate::sys_log(b.as_bytes());
    }};
}

#[cfg(test)]
mod tests {
    use super::Buf;

    #[test]
    fn push_and_decimal_cut_at_capacity() {
        let mut b = Buf::<16>::new();
        b.push(b"at x.rs:");
        b.push_decimal(0);
        b.push(b" ");
        b.push_decimal(4_294_967_295);
        assert_eq!(b.as_str(), "at x.rs:0 429496");
        let mut b = Buf::<8>::new();
        b.push_decimal(1207);
        assert_eq!(b.as_str(), "1207");
    }
}

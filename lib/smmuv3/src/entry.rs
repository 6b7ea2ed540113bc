//! Field plumbing shared by every in-memory format (STE, CD, commands,
//! events, PRI entries, descriptors).
//!
//! Each format is an array of little-endian 64-bit words. A field is named by
//! an [`EntryField`] (word, least significant bit, width); the formats expose
//! one associated constant per architectural field (`Ste::CONFIG`,
//! `Cd::ASID`, ...) and a getter/setter pair generated from it, so the bit
//! position of every field is written exactly once, in this crate.

use core::fmt;

/// Position of one field inside a multi-word entry.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EntryField {
    /// Index of the 64-bit word that holds the field.
    pub word: usize,
    /// Bit number of the field's least significant bit inside that word.
    pub lsb: u32,
    /// Width in bits (1..=64).
    pub width: u32,
}

impl EntryField {
    /// A field of `width` bits starting at bit `lsb` of word `word`.
    pub const fn new(word: usize, lsb: u32, width: u32) -> Self {
        assert!(width >= 1 && lsb + width <= 64);
        Self { word, lsb, width }
    }

    /// The field's bits, unshifted (`width` ones).
    pub const fn value_mask(self) -> u64 {
        if self.width == 64 {
            u64::MAX
        } else {
            (1u64 << self.width) - 1
        }
    }

    /// The field's bits in place inside its word.
    pub const fn mask(self) -> u64 {
        self.value_mask() << self.lsb
    }

    /// Extracts the field (shifted down) from the value of its word.
    pub const fn extract(self, word: u64) -> u64 {
        (word >> self.lsb) & self.value_mask()
    }

    /// Returns `word` with the field replaced by `value` (excess bits of
    /// `value` are dropped).
    pub const fn insert(self, word: u64, value: u64) -> u64 {
        (word & !self.mask()) | ((value & self.value_mask()) << self.lsb)
    }

    /// True when `value` fits in the field without truncation.
    pub const fn fits(self, value: u64) -> bool {
        value & !self.value_mask() == 0
    }
}

/// An encoding that the architecture reserves for a field (or that this crate
/// does not know), found while decoding.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct ReservedEncoding {
    /// Architecture name of the field.
    pub field: &'static str,
    /// The raw value found.
    pub value: u64,
}

impl fmt::Display for ReservedEncoding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "reserved encoding {:#x} in {}", self.value, self.field)
    }
}

/// Defines a field-less enum whose discriminants are the architecture's
/// encodings, with `raw()` and `from_raw()`.
macro_rules! spec_enum {
    (
        $(#[$m:meta])*
        $vis:vis enum $name:ident as $field:literal {
            $( $(#[$vm:meta])* $var:ident = $val:expr ),+ $(,)?
        }
    ) => {
        $(#[$m])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[repr(u8)]
        $vis enum $name {
            $( $(#[$vm])* $var = $val ),+
        }

        impl $name {
            /// Every variant, in declaration order.
            pub const ALL: &'static [$name] = &[$($name::$var),+];

            /// The architectural encoding.
            #[inline]
            pub const fn raw(self) -> u64 {
                self as u64
            }

            /// Decodes the architectural encoding.
            pub const fn from_raw(value: u64) -> Result<Self, $crate::entry::ReservedEncoding> {
                $( if value == $val { return Ok($name::$var); } )+
                Err($crate::entry::ReservedEncoding { field: $field, value })
            }
        }

        impl TryFrom<u64> for $name {
            type Error = $crate::entry::ReservedEncoding;
            fn try_from(value: u64) -> Result<Self, Self::Error> {
                Self::from_raw(value)
            }
        }

        impl From<$name> for u64 {
            fn from(v: $name) -> u64 {
                v.raw()
            }
        }
    };
}

/// Implements the word plumbing (`word`, `set_word`, `words`, `from_words`,
/// `field`, `set_field`) for a `#[repr(C)]` struct `{ words: [U64; N] }`.
macro_rules! entry_words {
    ($ty:ident, $n:literal) => {
        impl $ty {
            /// Number of 64-bit words.
            pub const WORDS: usize = $n;
            /// Size in bytes.
            pub const BYTES: usize = $n * 8;

            /// An all-zero entry.
            pub const fn zeroed() -> Self {
                Self {
                    words: [zerocopy::little_endian::U64::ZERO; $n],
                }
            }

            /// Builds the entry from native `u64` words (word 0 first).
            pub fn from_words(words: [u64; $n]) -> Self {
                let mut e = Self::zeroed();
                for (dst, src) in e.words.iter_mut().zip(words) {
                    *dst = zerocopy::little_endian::U64::new(src);
                }
                e
            }

            /// The words as native `u64` values (word 0 first).
            pub fn words(&self) -> [u64; $n] {
                let mut out = [0u64; $n];
                for (dst, src) in out.iter_mut().zip(self.words.iter()) {
                    *dst = src.get();
                }
                out
            }

            /// Word `i` as a native `u64`. Panics if `i` is out of range.
            #[inline]
            pub fn word(&self, i: usize) -> u64 {
                self.words[i].get()
            }

            /// Replaces word `i`. Panics if `i` is out of range.
            #[inline]
            pub fn set_word(&mut self, i: usize, value: u64) -> &mut Self {
                self.words[i] = zerocopy::little_endian::U64::new(value);
                self
            }

            /// Reads a field (shifted down).
            #[inline]
            pub fn field(&self, f: $crate::entry::EntryField) -> u64 {
                f.extract(self.word(f.word))
            }

            /// Writes a field; bits of `value` beyond the field's width are
            /// dropped (a debug assertion catches that).
            #[inline]
            pub fn set_field(&mut self, f: $crate::entry::EntryField, value: u64) -> &mut Self {
                debug_assert!(f.fits(value), "value {:#x} does not fit {:?}", value, f);
                let w = f.insert(self.word(f.word), value);
                self.set_word(f.word, w)
            }
        }

        impl Default for $ty {
            fn default() -> Self {
                Self::zeroed()
            }
        }

        impl core::fmt::Debug for $ty {
            fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
                f.write_str(stringify!($ty))?;
                f.debug_list()
                    .entries(self.words().iter().map(|w| $crate::entry::Hex(*w)))
                    .finish()
            }
        }

        impl PartialEq for $ty {
            fn eq(&self, other: &Self) -> bool {
                self.words() == other.words()
            }
        }
        impl Eq for $ty {}
    };
}

/// A one-bit field: `NAME` constant, `get() -> bool`, `set(bool)`.
macro_rules! flag_field {
    ($(#[$m:meta])* $NAME:ident, $get:ident, $set:ident, $word:literal, $bit:literal) => {
        $(#[$m])*
        pub const $NAME: $crate::entry::EntryField = $crate::entry::EntryField::new($word, $bit, 1);
        $(#[$m])*
        #[inline]
        pub fn $get(&self) -> bool {
            self.field(Self::$NAME) != 0
        }
        $(#[$m])*
        #[inline]
        pub fn $set(&mut self, value: bool) -> &mut Self {
            self.set_field(Self::$NAME, value as u64)
        }
    };
}

/// An integer field `[hi:lo]` read and written shifted down.
macro_rules! uint_field {
    ($(#[$m:meta])* $NAME:ident, $get:ident, $set:ident, $ty:ty, $word:literal, $hi:literal, $lo:literal) => {
        $(#[$m])*
        pub const $NAME: $crate::entry::EntryField =
            $crate::entry::EntryField::new($word, $lo, $hi - $lo + 1);
        $(#[$m])*
        #[inline]
        pub fn $get(&self) -> $ty {
            self.field(Self::$NAME) as $ty
        }
        $(#[$m])*
        #[inline]
        pub fn $set(&mut self, value: $ty) -> &mut Self {
            self.set_field(Self::$NAME, value as u64)
        }
    };
}

/// An address field holding bits `[hi:lo]` of an address in place (no
/// shift): the getter returns the address with the low bits zero, the setter
/// takes the full address (it must be aligned to `1 << lo` and below
/// `1 << (hi + 1)`; a debug assertion checks this).
macro_rules! addr_field {
    ($(#[$m:meta])* $NAME:ident, $get:ident, $set:ident, $word:literal, $hi:literal, $lo:literal) => {
        $(#[$m])*
        pub const $NAME: $crate::entry::EntryField =
            $crate::entry::EntryField::new($word, $lo, $hi - $lo + 1);
        $(#[$m])*
        #[inline]
        pub fn $get(&self) -> u64 {
            self.word($word) & Self::$NAME.mask()
        }
        $(#[$m])*
        #[inline]
        pub fn $set(&mut self, addr: u64) -> &mut Self {
            debug_assert!(
                addr & !Self::$NAME.mask() == 0,
                "address {:#x} is misaligned or too wide for {}",
                addr,
                stringify!($NAME)
            );
            self.set_field(Self::$NAME, (addr & Self::$NAME.mask()) >> $lo)
        }
    };
}

/// A field with a typed encoding (a `spec_enum!`): the getter returns
/// `Result<T, ReservedEncoding>`.
macro_rules! enum_field {
    ($(#[$m:meta])* $NAME:ident, $get:ident, $set:ident, $ty:ty, $word:literal, $hi:literal, $lo:literal) => {
        $(#[$m])*
        pub const $NAME: $crate::entry::EntryField =
            $crate::entry::EntryField::new($word, $lo, $hi - $lo + 1);
        $(#[$m])*
        #[inline]
        pub fn $get(&self) -> Result<$ty, $crate::entry::ReservedEncoding> {
            <$ty>::from_raw(self.field(Self::$NAME))
        }
        $(#[$m])*
        #[inline]
        pub fn $set(&mut self, value: $ty) -> &mut Self {
            self.set_field(Self::$NAME, value.raw())
        }
    };
}

/// Debug helper: prints a word in hex.
pub(crate) struct Hex(pub u64);

impl fmt::Debug for Hex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:#018x}", self.0)
    }
}

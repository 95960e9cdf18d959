//! Error and event texts, built without `core::fmt`.
//!
//! Why by hand: `core::fmt` (its `Formatter`, padding, integer `Display` and the vtables
//! `write!` builds) was about 7 KiB of the component's code, more than a tenth, for texts
//! that only ever join strings, decimal numbers and `0x..` reason codes. `text!` joins
//! [`Piece`]s into a `String`; the `Display` impls of the public error types write the same
//! text, so native users keep `{}` and `to_string()`.

pub use alloc::string::String;

/// Something `text!` can append.
pub trait Piece {
    /// Appends itself.
    fn push_onto(&self, out: &mut String);
}

impl Piece for str {
    fn push_onto(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl Piece for String {
    fn push_onto(&self, out: &mut String) {
        out.push_str(self);
    }
}

impl<T: Piece + ?Sized> Piece for &T {
    fn push_onto(&self, out: &mut String) {
        (**self).push_onto(out);
    }
}

/// One decimal routine for every width: a generic one per integer type would be copied per
/// type into the component.
fn push_decimal(mut n: u64, out: &mut String) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    for &d in &digits[i..] {
        out.push(char::from(d));
    }
}

macro_rules! decimal_pieces {
    ($($t:ty),*) => {$(
        impl Piece for $t {
            fn push_onto(&self, out: &mut String) {
                push_decimal(u64::from(*self), out);
            }
        }
    )*};
}
decimal_pieces!(u8, u16, u32, u64);

impl Piece for usize {
    fn push_onto(&self, out: &mut String) {
        push_decimal(*self as u64, out);
    }
}

/// A byte as `0x` and two hex digits, the way the spec writes reason codes and property ids.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Hex(pub u8);

impl Piece for Hex {
    fn push_onto(&self, out: &mut String) {
        const DIGITS: &[u8; 16] = b"0123456789abcdef";
        out.push_str("0x");
        out.push(char::from(DIGITS[usize::from(self.0 >> 4)]));
        out.push(char::from(DIGITS[usize::from(self.0 & 0xF)]));
    }
}

/// Joins pieces into a `String`: `text!("packet of ", size, " bytes")`.
#[macro_export]
macro_rules! text {
    ($($piece:expr),* $(,)?) => {{
        #[allow(unused_mut, reason = "`text!()` with no pieces")]
        let mut out = $crate::text::String::new();
        $( $crate::text::Piece::push_onto(&$piece, &mut out); )*
        out
    }};
}

#[cfg(test)]
mod tests {
    use super::Hex;
    use alloc::string::String;

    #[test]
    fn joins_strings_numbers_and_hex() {
        let owned = String::from("owned");
        assert_eq!(
            text!("a ", 0u8, " ", 42u16, " ", u32::MAX, " ", u64::MAX, " ", 7usize, " ", owned, " ", Hex(0x8f), " ", Hex(4)),
            "a 0 42 4294967295 18446744073709551615 7 owned 0x8f 0x04"
        );
        assert_eq!(text!(), "");
    }

    proptest::proptest! {
        /// The same digits `core::fmt` writes, for every value.
        #[test]
        fn numbers_match_core_fmt(n: u64, b: u8) {
            proptest::prop_assert_eq!(text!(n), alloc::format!("{n}"));
            proptest::prop_assert_eq!(text!(Hex(b)), alloc::format!("{b:#04x}"));
        }
    }
}

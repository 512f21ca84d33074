//! Domain types of microseg: the condition language, trait values and their types, the
//! trait schema, and time.
//!
//! This crate does no I/O and never reads the clock: every function that depends on "now"
//! takes an explicit `as_of` [`time::Timestamp`].

pub mod condition;
pub mod schema;
pub mod sign;
pub mod time;
pub mod value;

pub use schema::{Schema, TraitSpec};
pub use time::{Timestamp, DAY_MS};
pub use value::{TraitType, Value};

/// A dense profile id inside one workspace, assigned in first-seen order from 0, so that
/// segment members are bitmaps. External ids are what people see.
pub type ProfileId = u32;

/// `bytes` as lower-case hexadecimal (hashes and keys are shown and stored this way).
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(DIGITS[usize::from(b >> 4)] as char);
        out.push(DIGITS[usize::from(b & 15)] as char);
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn hex_is_two_lower_case_digits_a_byte() {
        assert_eq!(super::hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
        assert_eq!(super::hex(&[]), "");
    }
}

//! Small big-integer helpers over `crypto-bigint` (fixed widths up to 4096 bits).

use alloc::vec::Vec;

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Integer, Limb, Uint, U2048};

/// Largest supported integer, in bytes (4096 bits).
const MAX_BYTES: usize = 512;

/// Left-pads big-endian bytes into a `Uint<L>` (no heap); `None` if they do not fit.
pub(crate) fn to_uint<const L: usize>(bytes: &[u8]) -> Option<Uint<L>> {
    let size = L * Limb::BYTES;
    if bytes.len() > size || size > MAX_BYTES {
        return None;
    }
    let mut padded = [0u8; MAX_BYTES];
    let buf = padded.get_mut(..size)?;
    buf.get_mut(size - bytes.len()..)?.copy_from_slice(bytes);
    Some(Uint::<L>::from_be_slice(buf))
}

/// Big-endian bytes of the full `Uint<L>` width.
pub(crate) fn to_be_bytes<const L: usize>(value: &Uint<L>) -> Vec<u8> {
    let mut out = Vec::with_capacity(L * Limb::BYTES);
    for word in value.as_words().iter().rev() {
        out.extend_from_slice(&word.to_be_bytes());
    }
    out
}

/// `base^e mod n` as big-endian bytes of the full `Uint<L>` width; `None` unless
/// `n` is odd and `base < n`.
///
/// Stack: the windowed exponentiation keeps 16 residues, 16 × `L` limbs (8 KiB at 4096 bits).
pub(crate) fn modpow<const L: usize>(base: &[u8], e: &[u8], n: &[u8]) -> Option<Vec<u8>> {
    let n = to_uint::<L>(n)?;
    let base = to_uint::<L>(base)?;
    let e_bits = crate::keys::bit_len(e);
    let e = to_uint::<L>(e)?;
    // `DynResidueParams::new` panics on an even modulus: rule that out first.
    if base >= n || e_bits == 0 || !bool::from(n.is_odd()) {
        return None;
    }
    let params = DynResidueParams::new(&n);
    let result = DynResidue::new(&base, params)
        .pow_bounded_exp(&e, e_bits)
        .retrieve();
    Some(to_be_bytes(&result))
}

/// Whether `p * q == n` (big-endian bytes, each factor at most 2048 bits), without heap
/// allocation; `None` when a number is too large to check.
pub(crate) fn product_equals(p: &[u8], q: &[u8], n: &[u8]) -> Option<bool> {
    const L: usize = U2048::LIMBS;
    let half = L * Limb::BYTES;
    let n = n.get(n.iter().position(|b| *b != 0).unwrap_or(n.len())..)?;
    if n.len() > 2 * half {
        return None;
    }
    let (n_hi, n_lo) = n.split_at(n.len().saturating_sub(half));
    let (lo, hi) = to_uint::<L>(p)?.mul_wide(&to_uint::<L>(q)?);
    Some(lo == to_uint::<L>(n_lo)? && hi == to_uint::<L>(n_hi)?)
}

//! Small big-integer helpers over `crypto-bigint` (fixed widths up to 4096 bits).

use alloc::vec;
use alloc::vec::Vec;

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Integer, Limb, Uint, U2048};

/// Left-pads big-endian bytes into a `Uint<L>`; `None` if they do not fit.
pub(crate) fn to_uint<const L: usize>(bytes: &[u8]) -> Option<Uint<L>> {
    let size = L * Limb::BYTES;
    if bytes.len() > size {
        return None;
    }
    let mut padded = vec![0u8; size];
    padded.get_mut(size - bytes.len()..)?.copy_from_slice(bytes);
    Some(Uint::<L>::from_be_slice(&padded))
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

/// Whether `p * q == n` (big-endian bytes, each factor at most 2048 bits); `None` when a
/// factor is too large to check.
pub(crate) fn product_equals(p: &[u8], q: &[u8], n: &[u8]) -> Option<bool> {
    const L: usize = U2048::LIMBS;
    let p = to_uint::<L>(p)?;
    let q = to_uint::<L>(q)?;
    let (lo, hi) = p.mul_wide(&q);
    let mut product = to_be_bytes(&hi);
    product.extend_from_slice(&to_be_bytes(&lo));
    let start = product
        .iter()
        .position(|b| *b != 0)
        .unwrap_or(product.len());
    let n_start = n.iter().position(|b| *b != 0).unwrap_or(n.len());
    Some(product.get(start..) == n.get(n_start..))
}

//! Small big-integer helpers over `crypto-bigint` (fixed widths up to 4096 bits).

use alloc::vec::Vec;

use crypto_bigint::modular::runtime_mod::{DynResidue, DynResidueParams};
use crypto_bigint::{Integer, Limb, NonZero, Uint, U1024, U1536, U2048};

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

/// The parts of an RSA private key (PKCS#1), big-endian bytes.
pub(crate) struct RsaParts<'a> {
    /// Public exponent `e`.
    pub e: &'a [u8],
    /// Private exponent `d`.
    pub d: &'a [u8],
    /// First prime `p`.
    pub p: &'a [u8],
    /// Second prime `q`.
    pub q: &'a [u8],
    /// `dP = d mod (p - 1)`.
    pub dp: &'a [u8],
    /// `dQ = d mod (q - 1)`.
    pub dq: &'a [u8],
    /// `qInv = q^-1 mod p`.
    pub qinv: &'a [u8],
}

/// Whether an RSA private key's exponents and CRT parts agree with its primes, as signers rely
/// on them: `dP = d mod (p - 1)`, `dQ = d mod (q - 1)`, `d * e = 1` modulo `p - 1` and
/// `q - 1`, and `qInv * q = 1 (mod p)`. (`n = p * q` is [`product_equals`]'s.) Everything is
/// computed at the primes' width (`d`, twice as wide, as a double-width number); a part too
/// wide for it cannot agree (no signer takes an exponent that large). `None` when the primes
/// are larger than 2048 bits.
pub(crate) fn rsa_parts_agree(parts: &RsaParts<'_>) -> Option<bool> {
    let half = strip(parts.p).len().max(strip(parts.q).len());
    if half <= U1024::BYTES {
        parts_agree::<{ U1024::LIMBS }>(parts)
    } else if half <= U1536::BYTES {
        parts_agree::<{ U1536::LIMBS }>(parts)
    } else if half <= U2048::BYTES {
        parts_agree::<{ U2048::LIMBS }>(parts)
    } else {
        None
    }
}

/// Big-endian bytes without their leading zeros.
fn strip(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    bytes.get(start..).unwrap_or(&[])
}

/// Big-endian bytes (leading zeros allowed) as a `Uint<L>`; `None` if they do not fit.
fn uint<const L: usize>(bytes: &[u8]) -> Option<Uint<L>> {
    to_uint::<L>(strip(bytes))
}

fn parts_agree<const L: usize>(parts: &RsaParts<'_>) -> Option<bool> {
    Some(agree::<L>(parts).unwrap_or(false))
}

/// `None` when a part does not fit the width.
fn agree<const L: usize>(parts: &RsaParts<'_>) -> Option<bool> {
    let (e, p, q) = (
        uint::<L>(parts.e)?,
        uint::<L>(parts.p)?,
        uint::<L>(parts.q)?,
    );
    let (dp, dq, qinv) = (
        uint::<L>(parts.dp)?,
        uint::<L>(parts.dq)?,
        uint::<L>(parts.qinv)?,
    );
    // `d` as a double-width number: its low and high halves.
    let d = strip(parts.d);
    let (d_hi, d_lo) = d.split_at(d.len().saturating_sub(Uint::<L>::BYTES));
    let d = (to_uint::<L>(d_lo)?, to_uint::<L>(d_hi)?);
    let one = Uint::<L>::ONE;
    if p <= one || q <= one {
        return Some(false);
    }
    let nonzero = |x: Uint<L>| Option::<NonZero<Uint<L>>>::from(NonZero::new(x));
    let (p1, q1) = (
        nonzero(p.wrapping_sub(&one))?,
        nonzero(q.wrapping_sub(&one))?,
    );
    // `x * y mod m`, through the double-width product.
    let mul_mod = |x: &Uint<L>, y: &Uint<L>, m: &Uint<L>| Uint::const_rem_wide(x.mul_wide(y), m).0;
    Some(
        Uint::const_rem_wide(d, &p1).0 == dp
            && Uint::const_rem_wide(d, &q1).0 == dq
            && mul_mod(&dp, &e, &p1) == one
            && mul_mod(&dq, &e, &q1) == one
            && mul_mod(&qinv, &q, &p) == one,
    )
}

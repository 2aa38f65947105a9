//! Copies and comparisons of short byte strings without libc calls.
//!
//! Keys, namespaces and values are mostly a few bytes long, and the hot path
//! copies and compares them on every access. For lengths unknown at compile
//! time `copy_from_slice` and `==` call `memcpy` / `memcmp`, whose call and
//! size dispatch cost more than the work itself. Up to 32 bytes these
//! helpers use two fixed-size, possibly overlapping, moves or loads (the
//! trick `memcpy` implementations use inside), which compile to a few
//! register instructions.
//!
//! Backends and the codec use them on their per-access paths.
//!
//! ```
//! use state_api::short_bytes::{bytes_eq, copy_bytes};
//!
//! let mut buffer = [0u8; 9];
//! copy_bytes(&mut buffer, b"user-0042");
//! assert!(bytes_eq(&buffer, b"user-0042"));
//! assert!(!bytes_eq(&buffer, b"user-0043"));
//! ```

/// Copies `src` into `dst`, which must have the same length.
///
/// # Panics
/// When the lengths differ (as `copy_from_slice` does).
#[inline(always)]
pub fn copy_bytes(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if dst.len() != n {
        dst.copy_from_slice(src);
        return;
    }
    match n {
        0 => {}
        1..=3 => {
            // First, middle and last byte cover 1, 2 and 3 bytes.
            for i in [0, n / 2, n - 1] {
                if let (Some(d), Some(s)) = (dst.get_mut(i), src.get(i)) {
                    *d = *s;
                }
            }
        }
        4..=7 => overlapping::<4>(dst, src),
        8..=15 => overlapping::<8>(dst, src),
        16..=32 => overlapping::<16>(dst, src),
        _ => dst.copy_from_slice(src),
    }
}

/// Copies the first and the last `W` bytes (`W <= n <= 2 W`), covering all.
#[inline(always)]
fn overlapping<const W: usize>(dst: &mut [u8], src: &[u8]) {
    let n = src.len();
    if let (Some(d), Some(s)) = (dst.get_mut(..W), src.get(..W)) {
        d.copy_from_slice(s);
    }
    if let (Some(d), Some(s)) = (dst.get_mut(n - W..), src.get(n - W..)) {
        d.copy_from_slice(s);
    }
}

/// `a == b`, without a `memcmp` call for lengths up to 32.
#[inline(always)]
pub fn bytes_eq(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    if b.len() != n {
        return false;
    }
    match n {
        0 => true,
        1..=3 => a.first() == b.first() && a.get(n / 2) == b.get(n / 2) && a.last() == b.last(),
        4..=7 => ends_eq::<4>(a, b),
        8..=15 => ends_eq::<8>(a, b),
        16..=32 => ends_eq::<16>(a, b),
        _ => a == b,
    }
}

/// Whether the first and the last `W` bytes are equal (`W <= n <= 2 W`).
#[inline(always)]
fn ends_eq<const W: usize>(a: &[u8], b: &[u8]) -> bool {
    let n = a.len();
    let head = |x: &[u8]| <[u8; W]>::try_from(x.get(..W).unwrap_or_default()).ok();
    let tail = |x: &[u8]| <[u8; W]>::try_from(x.get(n - W..).unwrap_or_default()).ok();
    head(a) == head(b) && tail(a) == tail(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn copies_and_compares_every_length() {
        for n in 0..=70usize {
            let src: Vec<u8> = (0..n as u8)
                .map(|b| b.wrapping_mul(37).wrapping_add(1))
                .collect();
            let mut dst = vec![0u8; n];
            copy_bytes(&mut dst, &src);
            assert_eq!(dst, src, "length {n}");
            assert!(bytes_eq(&dst, &src), "length {n}");
            for i in 0..n {
                let mut other = src.clone();
                other[i] ^= 0x40;
                assert!(!bytes_eq(&other, &src), "length {n}, byte {i} differs");
            }
            if n > 0 {
                assert!(!bytes_eq(&src[..n - 1], &src), "lengths differ");
            }
        }
    }
}

//! HMAC-SHA1 of many messages at once: the SRTP tag of a fan-out's copies.
//!
//! Chrome's default SRTP profile (AES-CM + HMAC-SHA1) made the tag the largest user-space cost
//! of a forwarded packet (~17 % of the SFU's CPU at 1x100): each subscriber's copy has its own
//! key, so nothing is shared, and SHA-1 with the CPU's SHA extensions still runs one block after
//! another. With AVX-512 the same work runs on sixteen messages side by side, one message per
//! 32-bit lane of a 512-bit register — the multi-buffer technique Intel's ISA-L crypto uses —
//! each round a handful of vector instructions for all sixteen. [`tags`] takes up to any number
//! of (key, message, rollover counter) jobs and uses that path for them in groups of sixteen
//! when the CPU has AVX-512 (`avx512f` + `avx512bw`, detected at run time), else four (then two)
//! interleaved with the SHA extensions (`mod ni`) where the CPU has them, else the `sha1` crate's
//! block function one message at a time.
//!
//! Only the SHA-1 block function is written here (FIPS 180-4 section 6.1.2); HMAC (RFC 2104) is
//! the key's inner and outer states computed once ([`HmacKey`]), as RustCrypto's `hmac` keeps
//! them. The unit tests check every path against RustCrypto's `hmac` + `sha1` for every message
//! length from 0 to 300 bytes, mixed lengths and keys in one group, and group sizes 1 to 40.

use sha1::Digest;

/// The length of an HMAC-SHA1 tag before truncation.
pub const TAG_LEN: usize = 20;

/// An HMAC-SHA1 key as the two SHA-1 states after its padded inner and outer key blocks.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HmacKey {
    inner: [u32; 5],
    outer: [u32; 5],
}

const INIT: [u32; 5] = [
    0x6745_2301,
    0xEFCD_AB89,
    0x98BA_DCFE,
    0x1032_5476,
    0xC3D2_E1F0,
];

impl HmacKey {
    /// The key's states (a key longer than a block is hashed first, as RFC 2104 says).
    pub fn new(key: &[u8]) -> HmacKey {
        let mut k = [0u8; 64];
        if key.len() > 64 {
            k[..20].copy_from_slice(&sha1::Sha1::digest(key));
        } else {
            k[..key.len()].copy_from_slice(key);
        }
        let pad = |x: u8| {
            let mut b = [0u8; 64];
            for (b, k) in b.iter_mut().zip(&k) {
                *b = k ^ x;
            }
            let mut s = INIT;
            sha1::compress(&mut s, &[b.into()]);
            s
        };
        HmacKey {
            inner: pad(0x36),
            outer: pad(0x5c),
        }
    }
}

/// One tag to compute: HMAC-SHA1 under `key` of `data` followed by `roc` (SRTP's rollover
/// counter, big-endian; RFC 3711 section 4.2).
#[derive(Clone, Copy)]
pub struct Job<'a> {
    pub key: &'a HmacKey,
    pub data: &'a [u8],
    pub roc: u32,
}

impl Job<'static> {
    /// A placeholder to fill an array of jobs with (its tag means nothing).
    pub const EMPTY: Job<'static> = Job {
        key: &HmacKey {
            inner: INIT,
            outer: INIT,
        },
        data: &[],
        roc: 0,
    };
}

/// The tag of every job, in order, into `out` (`out.len()` ≥ `jobs.len()`).
pub fn tags(jobs: &[Job<'_>], out: &mut [[u8; TAG_LEN]]) {
    assert!(out.len() >= jobs.len(), "one tag per job");
    #[cfg(target_arch = "x86_64")]
    if avx512() {
        for (jobs, out) in jobs.chunks(LANES).zip(out.chunks_mut(LANES)) {
            if jobs.len() < MIN_GROUP {
                for (job, out) in jobs.iter().zip(out.iter_mut()) {
                    *out = tag_one(job);
                }
            } else {
                // SAFETY: the CPU has the features `tags16` is compiled for (checked above).
                unsafe { x16::tags16(jobs, out) };
            }
        }
        return;
    }
    #[cfg(target_arch = "x86_64")]
    if ni::available() {
        // Four at a time, then a pair, then one.
        let (quads, rest) = jobs.as_chunks::<4>();
        let (pairs, rest) = rest.as_chunks::<2>();
        let (out4, out) = out.split_at_mut(quads.len() * 4);
        let (out2, out) = out.split_at_mut(pairs.len() * 2);
        for (q, out) in quads.iter().zip(out4.chunks_exact_mut(4)) {
            // SAFETY: the CPU has the SHA extensions and SSE4.1 (checked above).
            unsafe { ni::tags4(q, out) };
        }
        for (pair, out) in pairs.iter().zip(out2.chunks_exact_mut(2)) {
            // SAFETY: as above.
            unsafe { ni::tags2(pair, out) };
        }
        if let Some(job) = rest.first() {
            out[0] = tag_one(job);
        }
        return;
    }
    for (job, out) in jobs.iter().zip(out.iter_mut()) {
        *out = tag_one(job);
    }
}

/// Whether [`tags`] runs sixteen messages at once on this CPU.
pub fn multi_buffer() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        avx512()
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        false
    }
}

#[cfg(target_arch = "x86_64")]
fn avx512() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512bw")
}

/// Messages per group on the AVX-512 path: one per 32-bit lane.
const LANES: usize = 16;

/// Fewer messages than this go one at a time: a group costs the same with 3 lanes as with 16,
/// about four messages' worth with the SHA extensions (`cargo xtask bench`: 183 against 700 ns
/// per 1,200-byte message).
const MIN_GROUP: usize = 4;

/// The padded tail of a job's inner message: what is left of `data` after its whole blocks,
/// the rollover counter, SHA-1's 0x80 and the bit length (counting the key block before it).
/// Returns the tail (one or two blocks) and how many blocks it fills.
fn tail(job: &Job<'_>) -> ([u8; 128], usize) {
    let whole = job.data.len() / 64 * 64;
    let rest = &job.data[whole..];
    let mut t = [0u8; 128];
    t[..rest.len()].copy_from_slice(rest);
    t[rest.len()..rest.len() + 4].copy_from_slice(&job.roc.to_be_bytes());
    t[rest.len() + 4] = 0x80;
    let blocks = if rest.len() + 4 + 1 + 8 <= 64 { 1 } else { 2 };
    let bits = ((64 + job.data.len() + 4) as u64) * 8;
    t[blocks * 64 - 8..blocks * 64].copy_from_slice(&bits.to_be_bytes());
    (t, blocks)
}

/// The outer message's one block: the inner digest, 0x80, the bit length of key block + digest.
fn outer_block(inner: &[u32; 5]) -> [u8; 64] {
    let mut b = [0u8; 64];
    for (d, w) in b.chunks_mut(4).zip(inner) {
        d.copy_from_slice(&w.to_be_bytes());
    }
    b[20] = 0x80;
    b[56..].copy_from_slice(&((64u64 + 20) * 8).to_be_bytes());
    b
}

fn digest_bytes(s: &[u32; 5]) -> [u8; TAG_LEN] {
    let mut out = [0u8; TAG_LEN];
    for (d, w) in out.chunks_mut(4).zip(s) {
        d.copy_from_slice(&w.to_be_bytes());
    }
    out
}

/// `[u8; 64]` blocks as the `sha1` crate's block type, without a copy.
fn as_blocks(b: &[[u8; 64]]) -> &[sha1::digest::core_api::Block<sha1::Sha1Core>] {
    // SAFETY: `GenericArray<u8, U64>` has the layout of `[u8; 64]` (generic-array guarantees
    // it, and `sha1::compress` casts its blocks back to `[u8; 64]` the same way).
    unsafe { &*(b as *const [[u8; 64]] as *const [sha1::digest::core_api::Block<sha1::Sha1Core>]) }
}

/// One job with the `sha1` crate's block function (each run of blocks in one call, so the state
/// stays in registers between them).
fn tag_one(job: &Job<'_>) -> [u8; TAG_LEN] {
    let mut s = job.key.inner;
    let whole = job.data.len() / 64 * 64;
    let (blocks, _) = job.data[..whole].as_chunks::<64>();
    sha1::compress(&mut s, as_blocks(blocks));
    let (t, n) = tail(job);
    let (tb, _) = t[..n * 64].as_chunks::<64>();
    sha1::compress(&mut s, as_blocks(tb));
    let mut o = job.key.outer;
    sha1::compress(&mut o, as_blocks(&[outer_block(&s)]));
    digest_bytes(&o)
}

#[cfg(target_arch = "x86_64")]
mod ni {
    //! Two or four messages at once with the SHA extensions (`sha1rnds4` and friends, one
    //! message's state in two 128-bit registers): a block's 20 round instructions depend on each
    //! other, so one message keeps the SHA unit waiting on latency; others interleaved fill those
    //! gaps (the "x2" of ISA-L crypto's `sha1_ni`). For CPUs with SHA-NI and no AVX-512 (AMD Zen 1–3,
    //! where `perf` put the tags at 18 % of the SFU's CPU at 1x100 one message at a time).
    //! `cargo xtask bench` on a Zen VM, a 1,200-byte tag: 835 ns one at a time, 454 ns in pairs,
    //! 365 ns in fours.

    use super::{as_blocks, digest_bytes, outer_block, tail, Job, TAG_LEN};
    use std::arch::x86_64::*;

    pub(super) fn available() -> bool {
        std::arch::is_x86_feature_detected!("sha")
            && std::arch::is_x86_feature_detected!("ssse3")
            && std::arch::is_x86_feature_detected!("sse4.1")
    }

    /// HMAC-SHA1 of two jobs.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn tags2(jobs: &[Job<'_>; 2], out: &mut [[u8; TAG_LEN]]) {
        let [a, b] = jobs;
        let mut s = [a.key.inner, b.key.inner];
        let (wa, _) = a.data[..a.data.len() / 64 * 64].as_chunks::<64>();
        let (wb, _) = b.data[..b.data.len() / 64 * 64].as_chunks::<64>();
        // The engine groups its tags by block count: the two are usually the same length.
        let common = wa.len().min(wb.len());
        compress(&mut s, [&wa[..common], &wb[..common]]);
        let [sa, sb] = &mut s;
        sha1::compress(sa, as_blocks(&wa[common..]));
        sha1::compress(sb, as_blocks(&wb[common..]));
        let ((ta, na), (tb, nb)) = (tail(a), tail(b));
        let (ta, _) = ta[..na * 64].as_chunks::<64>();
        let (tb, _) = tb[..nb * 64].as_chunks::<64>();
        if na == nb {
            compress(&mut s, [ta, tb]);
        } else {
            let [sa, sb] = &mut s;
            sha1::compress(sa, as_blocks(ta));
            sha1::compress(sb, as_blocks(tb));
        }
        let mut o = [a.key.outer, b.key.outer];
        let ob = [outer_block(&s[0]), outer_block(&s[1])];
        compress(&mut o, [&ob[..1], &ob[1..]]);
        out[0] = digest_bytes(&o[0]);
        out[1] = digest_bytes(&o[1]);
    }

    /// HMAC-SHA1 of four jobs: four messages side by side when they have the same number of
    /// blocks (a fan-out's copies, which the engine groups by block count), else two pairs.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn tags4(jobs: &[Job<'_>; 4], out: &mut [[u8; TAG_LEN]]) {
        let n = jobs[0].data.len() / 64;
        // Each padded tail built once: compared here, hashed below.
        let tails = jobs.map(|j| tail(&j));
        let t = tails[0].1;
        if !jobs
            .iter()
            .zip(&tails)
            .all(|(j, tl)| j.data.len() / 64 == n && tl.1 == t)
        {
            let (a, b) = jobs.split_at(2);
            tags2(a.try_into().expect("two"), &mut out[..2]);
            tags2(b.try_into().expect("two"), &mut out[2..]);
            return;
        }
        let mut s = jobs.map(|j| j.key.inner);
        let w: [&[[u8; 64]]; 4] = jobs.map(|j| j.data[..n * 64].as_chunks::<64>().0);
        compress(&mut s, w);
        let tb: [&[[u8; 64]]; 4] =
            std::array::from_fn(|l| tails[l].0[..t * 64].as_chunks::<64>().0);
        compress(&mut s, tb);
        let mut o = jobs.map(|j| j.key.outer);
        let ob = s.map(|s| outer_block(&s));
        let obs: [&[[u8; 64]]; 4] = std::array::from_fn(|l| &ob[l..l + 1]);
        compress(&mut o, obs);
        for l in 0..4 {
            out[l] = digest_bytes(&o[l]);
        }
    }

    /// SHA-1's block function (the `sha1` crate's SHA-NI code, each step done for all `N`
    /// messages before the next) over `N` runs of blocks of the same length.
    #[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
    pub(super) fn compress<const N: usize>(states: &mut [[u32; 5]; N], blocks: [&[[u8; 64]]; N]) {
        assert!(
            blocks.iter().all(|b| b.len() == blocks[0].len()),
            "runs of the same length"
        );
        let mask = _mm_set_epi64x(0x0001_0203_0405_0607, 0x0809_0A0B_0C0D_0E0F);
        let mut abcd = [_mm_setzero_si128(); N];
        let mut e = [_mm_setzero_si128(); N];
        for l in 0..N {
            let s = &states[l];
            abcd[l] = _mm_set_epi32(s[0] as i32, s[1] as i32, s[2] as i32, s[3] as i32);
            e[l] = _mm_set_epi32(s[4] as i32, 0, 0, 0);
        }
        #[allow(clippy::needless_range_loop)] // block `i` of every message
        for i in 0..blocks[0].len() {
            let mut w = [[_mm_setzero_si128(); 5]; N];
            let mut h0 = [_mm_setzero_si128(); N];
            let mut h1 = [_mm_setzero_si128(); N];
            for l in 0..N {
                let p = blocks[l][i].as_ptr() as *const __m128i;
                for (k, w) in w[l][..4].iter_mut().enumerate() {
                    // SAFETY: `p` points at 64 bytes; unaligned loads only.
                    *w = _mm_shuffle_epi8(unsafe { _mm_loadu_si128(p.add(k)) }, mask);
                }
                h0[l] = abcd[l];
                h1[l] = _mm_add_epi32(e[l], w[l][0]);
            }
            // Rounds 0..16.
            for l in 0..N {
                h1[l] = _mm_sha1rnds4_epu32(h0[l], h1[l], 0);
                h0[l] = _mm_sha1rnds4_epu32(h1[l], _mm_sha1nexte_epu32(h0[l], w[l][1]), 0);
                h1[l] = _mm_sha1rnds4_epu32(h0[l], _mm_sha1nexte_epu32(h1[l], w[l][2]), 0);
                h0[l] = _mm_sha1rnds4_epu32(h1[l], _mm_sha1nexte_epu32(h0[l], w[l][3]), 0);
            }
            // Rounds 16..80, four at a time: the next four schedule words from the last four,
            // into the register of the oldest; even steps update h1, odd ones h0.
            macro_rules! step {
                ($j:literal, $f:literal) => {
                    for l in 0..N {
                        let x = _mm_sha1msg1_epu32(w[l][$j % 5], w[l][($j + 1) % 5]);
                        let x = _mm_xor_si128(x, w[l][($j + 2) % 5]);
                        let x = _mm_sha1msg2_epu32(x, w[l][($j + 3) % 5]);
                        w[l][($j + 4) % 5] = x;
                        if $j % 2 == 0 {
                            h1[l] = _mm_sha1rnds4_epu32(h0[l], _mm_sha1nexte_epu32(h1[l], x), $f);
                        } else {
                            h0[l] = _mm_sha1rnds4_epu32(h1[l], _mm_sha1nexte_epu32(h0[l], x), $f);
                        }
                    }
                };
            }
            step!(0, 0);
            step!(1, 1);
            step!(2, 1);
            step!(3, 1);
            step!(4, 1);
            step!(5, 1);
            step!(6, 2);
            step!(7, 2);
            step!(8, 2);
            step!(9, 2);
            step!(10, 2);
            step!(11, 3);
            step!(12, 3);
            step!(13, 3);
            step!(14, 3);
            step!(15, 3);
            for l in 0..N {
                abcd[l] = _mm_add_epi32(abcd[l], h0[l]);
                e[l] = _mm_sha1nexte_epu32(h1[l], e[l]);
            }
        }
        for l in 0..N {
            states[l] = [
                _mm_extract_epi32(abcd[l], 3) as u32,
                _mm_extract_epi32(abcd[l], 2) as u32,
                _mm_extract_epi32(abcd[l], 1) as u32,
                _mm_extract_epi32(abcd[l], 0) as u32,
                _mm_extract_epi32(e[l], 3) as u32,
            ];
        }
    }
}

#[cfg(target_arch = "x86_64")]
mod x16 {
    //! The sixteen-lane SHA-1 block function (AVX-512F for the arithmetic and rotations,
    //! AVX-512BW for the byte swap).

    use super::{digest_bytes, tail, Job, LANES, TAG_LEN};
    use std::arch::x86_64::*;

    /// HMAC-SHA1 of 2..=16 jobs, one per lane.
    #[target_feature(enable = "avx512f,avx512bw")]
    pub(super) fn tags16(jobs: &[Job<'_>], out: &mut [[u8; TAG_LEN]]) {
        debug_assert!(jobs.len() <= LANES && out.len() >= jobs.len());
        let n = jobs.len();
        let mut tails = [([0u8; 128], 0usize); LANES];
        let mut whole = [0usize; LANES];
        let mut total = [0usize; LANES];
        let mut state = [[0u32; LANES]; 5];
        for (l, job) in jobs.iter().enumerate() {
            tails[l] = tail(job);
            whole[l] = job.data.len() / 64;
            total[l] = whole[l] + tails[l].1;
            for (s, v) in state.iter_mut().zip(job.key.inner) {
                s[l] = v;
            }
        }
        let steps = total[..n].iter().copied().max().unwrap_or(0);
        // SAFETY: [u32; 16] and __m512i have the same size; unaligned loads.
        let mut s: [__m512i; 5] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_si512(state[i].as_ptr().cast()) });
        let zero = [0u8; 64];
        let swap = _mm512_set4_epi32(0x0c0d_0e0f, 0x0809_0a0b, 0x0405_0607, 0x0001_0203);
        for b in 0..steps {
            let mut active: __mmask16 = 0;
            let mut rows = [_mm512_setzero_si512(); LANES];
            for (l, row) in rows.iter_mut().enumerate().take(n) {
                let block: &[u8] = if b < whole[l] {
                    &jobs[l].data[b * 64..b * 64 + 64]
                } else if b < total[l] {
                    let k = b - whole[l];
                    &tails[l].0[k * 64..k * 64 + 64]
                } else {
                    &zero
                };
                // SAFETY: `block` is 64 bytes; an unaligned load.
                *row = unsafe { _mm512_loadu_si512(block.as_ptr().cast()) };
                active |= ((b < total[l]) as u16) << l;
            }
            let mut w = transpose(&rows);
            for w in w.iter_mut() {
                *w = _mm512_shuffle_epi8(*w, swap);
            }
            compress(&mut s, w, active);
        }
        // The outer hash: one block per lane, the inner digest and fixed padding.
        let mut w = [_mm512_setzero_si512(); 16];
        w[..5].copy_from_slice(&s);
        w[5] = _mm512_set1_epi32(0x8000_0000u32 as i32);
        w[15] = _mm512_set1_epi32((64 + 20) * 8);
        for (i, st) in state.iter_mut().enumerate() {
            for (l, job) in jobs.iter().enumerate() {
                st[l] = job.key.outer[i];
            }
        }
        // SAFETY: as above.
        let mut o: [__m512i; 5] =
            std::array::from_fn(|i| unsafe { _mm512_loadu_si512(state[i].as_ptr().cast()) });
        compress(&mut o, w, 0xffff);
        for (i, v) in o.iter().enumerate() {
            // SAFETY: as above.
            unsafe { _mm512_storeu_si512(state[i].as_mut_ptr().cast(), *v) };
        }
        for (l, out) in out.iter_mut().enumerate().take(n) {
            *out = digest_bytes(&std::array::from_fn(|i| state[i][l]));
        }
    }

    /// Sixteen rows of sixteen words (a lane's block each) as sixteen columns (word `t` of every
    /// lane): pairs of words, then of pairs, interleaved within each 128-bit quarter, then the
    /// quarters moved across the four groups of four rows.
    #[target_feature(enable = "avx512f")]
    fn transpose(r: &[__m512i; 16]) -> [__m512i; 16] {
        let mut out = [_mm512_setzero_si512(); 16];
        for g in 0..4 {
            let (r0, r1, r2, r3) = (r[4 * g], r[4 * g + 1], r[4 * g + 2], r[4 * g + 3]);
            let t0 = _mm512_unpacklo_epi32(r0, r1);
            let t1 = _mm512_unpackhi_epi32(r0, r1);
            let t2 = _mm512_unpacklo_epi32(r2, r3);
            let t3 = _mm512_unpackhi_epi32(r2, r3);
            // u[k], quarter j: word 4j + k of rows 4g..4g+3.
            out[4 * g] = _mm512_unpacklo_epi64(t0, t2);
            out[4 * g + 1] = _mm512_unpackhi_epi64(t0, t2);
            out[4 * g + 2] = _mm512_unpacklo_epi64(t1, t3);
            out[4 * g + 3] = _mm512_unpackhi_epi64(t1, t3);
        }
        let u = out;
        for k in 0..4 {
            let (a, b, c, d) = (u[k], u[4 + k], u[8 + k], u[12 + k]);
            let x0 = _mm512_shuffle_i32x4::<0x44>(a, b);
            let x1 = _mm512_shuffle_i32x4::<0xee>(a, b);
            let y0 = _mm512_shuffle_i32x4::<0x44>(c, d);
            let y1 = _mm512_shuffle_i32x4::<0xee>(c, d);
            out[k] = _mm512_shuffle_i32x4::<0x88>(x0, y0);
            out[4 + k] = _mm512_shuffle_i32x4::<0xdd>(x0, y0);
            out[8 + k] = _mm512_shuffle_i32x4::<0x88>(x1, y1);
            out[12 + k] = _mm512_shuffle_i32x4::<0xdd>(x1, y1);
        }
        out
    }

    /// One SHA-1 block for every lane set in `active` (the others keep their state).
    #[target_feature(enable = "avx512f")]
    fn compress(state: &mut [__m512i; 5], mut w: [__m512i; 16], active: __mmask16) {
        let mut v = *state;
        macro_rules! rounds {
            ($($t:literal)*) => { $( round::<$t>(&mut v, &mut w); )* };
        }
        rounds!(
            0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19
            20 21 22 23 24 25 26 27 28 29 30 31 32 33 34 35 36 37 38 39
            40 41 42 43 44 45 46 47 48 49 50 51 52 53 54 55 56 57 58 59
            60 61 62 63 64 65 66 67 68 69 70 71 72 73 74 75 76 77 78 79
        );
        for (s, v) in state.iter_mut().zip(v) {
            *s = _mm512_mask_add_epi32(*s, active, *s, v);
        }
    }

    /// Round `T` of FIPS 180-4's SHA-1: the five working variables rotate through `v` rather
    /// than move (round T's `a` is `v[(5 - T % 5) % 5]`), the schedule through `w`.
    #[inline]
    #[target_feature(enable = "avx512f")]
    fn round<const T: usize>(v: &mut [__m512i; 5], w: &mut [__m512i; 16]) {
        let a = (5 - T % 5) % 5;
        let (b, c, d, e) = ((a + 1) % 5, (a + 2) % 5, (a + 3) % 5, (a + 4) % 5);
        if T >= 16 {
            let x = _mm512_ternarylogic_epi32::<0x96>(
                w[(T + 13) % 16],
                w[(T + 8) % 16],
                w[(T + 2) % 16],
            );
            w[T % 16] = _mm512_rol_epi32::<1>(_mm512_xor_si512(x, w[T % 16]));
        }
        let (f, k) = match T / 20 {
            // Ch: b ? c : d.
            0 => (
                _mm512_ternarylogic_epi32::<0xca>(v[b], v[c], v[d]),
                0x5A82_7999u32,
            ),
            // Parity.
            1 => (
                _mm512_ternarylogic_epi32::<0x96>(v[b], v[c], v[d]),
                0x6ED9_EBA1,
            ),
            // Maj.
            2 => (
                _mm512_ternarylogic_epi32::<0xe8>(v[b], v[c], v[d]),
                0x8F1B_BCDC,
            ),
            _ => (
                _mm512_ternarylogic_epi32::<0x96>(v[b], v[c], v[d]),
                0xCA62_C1D6,
            ),
        };
        let kw = _mm512_add_epi32(w[T % 16], _mm512_set1_epi32(k as i32));
        let t = _mm512_add_epi32(
            _mm512_add_epi32(v[e], kw),
            _mm512_add_epi32(f, _mm512_rol_epi32::<5>(v[a])),
        );
        v[e] = t;
        v[b] = _mm512_rol_epi32::<30>(v[b]);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hmac::{Hmac, Mac};

    fn reference(key: &[u8], data: &[u8], roc: u32) -> [u8; TAG_LEN] {
        let mut m = <Hmac<sha1::Sha1> as Mac>::new_from_slice(key).expect("any length");
        m.update(data);
        m.update(&roc.to_be_bytes());
        m.finalize().into_bytes().into()
    }

    fn bytes(n: usize, seed: u32) -> Vec<u8> {
        let mut x = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 17;
                x ^= x << 5;
                x as u8
            })
            .collect()
    }

    #[test]
    fn one_message_matches_rustcrypto_at_every_length() {
        let key = bytes(20, 1);
        let k = HmacKey::new(&key);
        for len in 0..300 {
            let data = bytes(len, len as u32);
            let job = Job {
                key: &k,
                data: &data,
                roc: 0x0102_0304 ^ len as u32,
            };
            assert_eq!(
                tag_one(&job),
                reference(&key, &data, job.roc),
                "length {len}"
            );
            let mut out = [[0u8; TAG_LEN]; 1];
            tags(&[job], &mut out);
            assert_eq!(out[0], reference(&key, &data, job.roc), "length {len}");
        }
    }

    #[test]
    fn groups_of_mixed_lengths_and_keys_match_rustcrypto() {
        // Lengths straddling every padding case (55/56/63/64 bytes left with the 4-byte
        // counter), equal lengths (a fan-out) and lanes that finish many blocks apart.
        let keys: Vec<Vec<u8>> = (0..40)
            .map(|i| bytes(if i % 7 == 0 { 80 } else { 20 }, 100 + i))
            .collect();
        let hk: Vec<HmacKey> = keys.iter().map(|k| HmacKey::new(k)).collect();
        for round in 0..30u32 {
            let count = 1 + (round as usize * 7) % 40;
            let lens: Vec<usize> = (0..count)
                .map(|i| match round % 3 {
                    0 => 1200,
                    1 => [0, 51, 52, 55, 56, 59, 60, 63, 64, 115, 116, 1250, 1500][i % 13],
                    _ => (i * 97 + round as usize * 31) % 1400,
                })
                .collect();
            let datas: Vec<Vec<u8>> = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| bytes(n, round * 1000 + i as u32))
                .collect();
            let jobs: Vec<Job<'_>> = datas
                .iter()
                .enumerate()
                .map(|(i, d)| Job {
                    key: &hk[i],
                    data: d,
                    roc: round.wrapping_mul(0x9e37_79b9) ^ i as u32,
                })
                .collect();
            let mut out = vec![[0u8; TAG_LEN]; count];
            tags(&jobs, &mut out);
            for (i, j) in jobs.iter().enumerate() {
                assert_eq!(
                    out[i],
                    reference(&keys[i], j.data, j.roc),
                    "round {round}, job {i} of {count}, length {}",
                    j.data.len()
                );
            }
        }
    }

    #[test]
    fn pairs_with_the_sha_extensions_match_rustcrypto() {
        #[cfg(target_arch = "x86_64")]
        if !ni::available() {
            eprintln!("no SHA extensions on this CPU: their pairs and fours are not checked here");
        }
        #[cfg(target_arch = "x86_64")]
        if ni::available() {
            // Four different keys, messages and counters in every lane, lanes in every order:
            // all of a length class side by side, then mixed tails (two pairs), then mixed
            // block counts.
            let keys: Vec<Vec<u8>> = (0..4).map(|i| bytes(20, 40 + i)).collect();
            let hk: Vec<HmacKey> = keys.iter().map(|k| HmacKey::new(k)).collect();
            for lens in [
                [1160, 1170, 1180, 1190],
                [1160, 1210, 1170, 1180],
                [1200, 64, 1200, 0],
            ] {
                let datas: Vec<Vec<u8>> = lens.iter().map(|&n| bytes(n, n as u32 * 3)).collect();
                for pick in [[0, 1, 2, 3], [3, 2, 1, 0], [0, 0, 0, 1], [2, 3, 0, 1]] {
                    let q = pick.map(|i| Job {
                        key: &hk[i],
                        data: &datas[i],
                        roc: 0x1000_0001 * (i as u32 + 1),
                    });
                    let mut out = [[0u8; TAG_LEN]; 4];
                    // SAFETY: checked above.
                    unsafe { ni::tags4(&q, &mut out) };
                    for (&i, t) in pick.iter().zip(&out) {
                        let want = reference(&keys[i], &datas[i], 0x1000_0001 * (i as u32 + 1));
                        assert_eq!(*t, want, "lengths {lens:?}, lanes {pick:?}");
                    }
                }
            }
            let key = [bytes(20, 3), bytes(20, 4)];
            let k = [HmacKey::new(&key[0]), HmacKey::new(&key[1])];
            // Equal lengths, lengths some blocks apart, and tails of one and of two blocks.
            for (la, lb) in [
                (0, 0),
                (1200, 1200),
                (55, 56),
                (60, 0),
                (1200, 64),
                (3, 1250),
                (116, 115),
            ] {
                let (da, db) = (bytes(la, la as u32), bytes(lb, lb as u32 + 1));
                let jobs = [
                    Job {
                        key: &k[0],
                        data: &da,
                        roc: 7,
                    },
                    Job {
                        key: &k[1],
                        data: &db,
                        roc: 0xffff_fffe,
                    },
                ];
                let mut out = [[0u8; TAG_LEN]; 2];
                // SAFETY: checked above.
                unsafe { ni::tags2(&jobs, &mut out) };
                assert_eq!(out[0], reference(&key[0], &da, 7), "lengths {la}, {lb}");
                assert_eq!(
                    out[1],
                    reference(&key[1], &db, 0xffff_fffe),
                    "lengths {la}, {lb}"
                );
                // Four: side by side when all have the same length, else as two pairs.
                for pick in [[0, 0, 0, 0], [0, 1, 1, 0], [1, 1, 1, 1]] {
                    let q = pick.map(|i| jobs[i]);
                    let mut out = [[0u8; TAG_LEN]; 4];
                    // SAFETY: checked above.
                    unsafe { ni::tags4(&q, &mut out) };
                    for (&i, t) in pick.iter().zip(&out) {
                        let j = &jobs[i];
                        assert_eq!(
                            *t,
                            reference(&key[i], j.data, j.roc),
                            "{la}, {lb}: {pick:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn the_key_states_are_hmacs_padded_keys() {
        // A key of exactly a block and one longer (hashed first) give RustCrypto's tags too.
        for n in [0, 1, 20, 63, 64, 65, 200] {
            let key = bytes(n, 7);
            let k = HmacKey::new(&key);
            let data = bytes(100, 9);
            assert_eq!(
                tag_one(&Job {
                    key: &k,
                    data: &data,
                    roc: 5
                }),
                reference(&key, &data, 5),
                "key of {n} bytes"
            );
        }
    }
}

//! The AES-CM keystream of SRTP (RFC 3711 section 4.1.1) with VAES: counter blocks made in
//! registers, four blocks an instruction (AVX-512) or two (AVX2: AMD's Zen 3, which has VAES
//! without AVX-512, or a VM that hides AVX-512), and XORed into the packet in the same pass.
//!
//! Why not RustCrypto's `aes` alone (which [`srtp_out`](crate::srtp_out) still uses for the key
//! derivation, and for the keystream on CPUs without VAES): per call, its VAES
//! backend rebuilds its broadcast round keys and block arrays, and the caller has to write
//! every counter block to memory first and XOR the result back in a second pass. With a
//! forwarded packet being one call, `perf` at 1x100 in `cargo xtask load` put that set-up at
//! ~2.6 % and the counter blocks at ~4.5 % of the SFU's CPU, against 1.6 % for the rounds. Here the round
//! keys are expanded once per session (AES-NI's key-generation assist, as in Intel's AES-NI
//! white paper) and each packet is one pass: counters, rounds, XOR. On an AMD EPYC (VAES-256,
//! no AVX-512) `aes` 0.9 runs its AES-NI backend, one block an instruction (its `vaes` check
//! also asks for the 512-bit register state): there the 256-bit
//! path took a 1,200-byte keystream from 288 to 103 ns in `cargo xtask bench`, and lets
//! `srtp_out` encrypt a payload as it is appended (no plain copy first). Only the block
//! function's use of the hardware instructions is written here; the tests hold both widths to
//! the `aes` crate.

/// A session's AES key expanded for [`xor`]: 11 round keys (AES-128) or 15 (AES-256).
pub struct RoundKeys {
    keys: [[u8; 16]; 15],
    rounds: usize,
    /// Which VAES width this CPU runs: 512-bit registers (AVX-512: four blocks an
    /// instruction) or 256-bit ones (AVX2 with VAES, as AMD's Zen 3 has: two).
    width: Width,
}

/// The register width the keystream runs at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Width {
    /// VAES on 512-bit registers (AVX-512F and BW).
    Zmm,
    /// VAES on 256-bit registers (AVX2).
    Ymm,
}

impl Drop for RoundKeys {
    fn drop(&mut self) {
        for k in &mut self.keys {
            // SAFETY: a plain write to a live, aligned array element; volatile so the wipe of
            // key material is not optimised away.
            unsafe { std::ptr::write_volatile(k, [0; 16]) };
        }
    }
}

impl RoundKeys {
    /// The expanded key when this CPU has VAES (with AVX-512, else with AVX2) and AES-NI,
    /// else `None` (the caller keeps RustCrypto's `aes`). `key` is 16 or 32 bytes; any other
    /// length is `None`.
    pub fn new(key: &[u8]) -> Option<Box<RoundKeys>> {
        Self::with_width(key, Self::best_width()?)
    }

    /// The widest VAES this CPU runs, if any.
    pub fn best_width() -> Option<Width> {
        #[cfg(target_arch = "x86_64")]
        {
            if x86::available_zmm() {
                return Some(Width::Zmm);
            }
            if x86::available_ymm() {
                return Some(Width::Ymm);
            }
        }
        None
    }

    /// The expanded key for the given width; `None` if this CPU cannot run it (the tests run
    /// the 256-bit path on CPUs that also have the 512-bit one).
    pub fn with_width(key: &[u8], width: Width) -> Option<Box<RoundKeys>> {
        #[cfg(target_arch = "x86_64")]
        {
            let ok = match width {
                Width::Zmm => x86::available_zmm(),
                Width::Ymm => x86::available_ymm(),
            };
            if !ok || !matches!(key.len(), 16 | 32) {
                return None;
            }
            let mut rk = Box::new(RoundKeys {
                keys: [[0; 16]; 15],
                rounds: 0,
                width,
            });
            // SAFETY: `available_zmm` / `available_ymm` (just above) checked AES-NI.
            rk.rounds = unsafe { x86::expand(key, &mut rk.keys) };
            Some(rk)
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = (key, width);
            None
        }
    }

    /// The register width this key's keystream runs at.
    pub fn width(&self) -> Width {
        self.width
    }
}

/// XORs `data` with the AES-CM keystream that starts at counter block `iv`: block `n` is `iv`
/// with `n` (big-endian) in its last two bytes, which RFC 3711's IV leaves zero — a packet has
/// fewer than 2^16 blocks.
pub fn xor(keys: &RoundKeys, iv: [u8; 16], data: &mut [u8]) {
    let p = data.as_mut_ptr();
    // SAFETY: `data` is valid for reads and writes of its length; the source and destination
    // being the same bytes is allowed (each block is read before it is written).
    unsafe { xor_raw(keys, iv, p, p, data.len()) }
}

/// Appends `src` XORed with the keystream from `iv` to `dst`, in one pass over `src`: a
/// forwarded packet's payload goes into a subscriber's send buffer already encrypted, with no
/// plain copy first (nor a zeroed one: the new bytes are written once).
pub fn xor_append(keys: &RoundKeys, iv: [u8; 16], src: &[u8], dst: &mut Vec<u8>) {
    dst.reserve(src.len());
    let end = dst.len();
    // SAFETY: `reserve` made room for `src.len()` bytes after `end`; `xor_raw` writes every one
    // of them (reading only `src`, which cannot overlap `dst`'s spare capacity: `dst` is
    // borrowed mutably), so they are initialised before `set_len` exposes them.
    unsafe {
        xor_raw(keys, iv, src.as_ptr(), dst.as_mut_ptr().add(end), src.len());
        dst.set_len(end + src.len());
    }
}

/// The keystream from `iv` XORed with `len` bytes at `src`, written to `dst`.
///
/// # Safety
/// `src` valid for reads and `dst` for writes of `len` bytes; they are either the same address
/// or do not overlap.
unsafe fn xor_raw(keys: &RoundKeys, iv: [u8; 16], src: *const u8, dst: *mut u8, len: usize) {
    debug_assert_eq!(&iv[14..], &[0, 0], "the block counter's bytes");
    debug_assert!(len <= 16 << 16, "at most 2^16 blocks");
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a `RoundKeys` of a width exists only where that width's `available_*` said
    // yes; the pointers are the caller's promise.
    unsafe {
        match (keys.width, keys.rounds) {
            (Width::Zmm, 10) => x86::xor::<10>(&keys.keys, &iv, src, dst, len),
            (Width::Zmm, _) => x86::xor::<14>(&keys.keys, &iv, src, dst, len),
            (Width::Ymm, 10) => x86::xor_ymm::<10>(&keys.keys, &iv, src, dst, len),
            (Width::Ymm, _) => x86::xor_ymm::<14>(&keys.keys, &iv, src, dst, len),
        }
    }
    #[cfg(not(target_arch = "x86_64"))]
    {
        let _ = (keys, iv, src, dst, len);
        unreachable!("no RoundKeys are made off x86-64");
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    pub fn available_zmm() -> bool {
        is_x86_feature_detected!("aes")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("avx512f")
            && is_x86_feature_detected!("avx512bw")
            && is_x86_feature_detected!("vaes")
    }

    pub fn available_ymm() -> bool {
        is_x86_feature_detected!("aes")
            && is_x86_feature_detected!("avx2")
            && is_x86_feature_detected!("vaes")
    }

    /// `t1` advanced by one round of the key schedule, `assist` being AESKEYGENASSIST's output
    /// whose word `SEL` (0xff: the rotated one, 0xaa: the plain one for AES-256's odd keys) is
    /// XORed into the running prefix XOR of `t1`'s words.
    #[inline(always)]
    unsafe fn schedule<const SEL: i32>(t1: __m128i, assist: __m128i) -> __m128i {
        let w = _mm_shuffle_epi32::<SEL>(assist);
        let mut t = t1;
        let mut s = _mm_slli_si128::<4>(t1);
        t = _mm_xor_si128(t, s);
        s = _mm_slli_si128::<4>(s);
        t = _mm_xor_si128(t, s);
        s = _mm_slli_si128::<4>(s);
        t = _mm_xor_si128(t, s);
        _mm_xor_si128(t, w)
    }

    #[inline(always)]
    unsafe fn put(out: &mut [u8; 16], v: __m128i) {
        _mm_storeu_si128(out.as_mut_ptr().cast(), v);
    }

    /// FIPS 197's key expansion with AES-NI: the round count (10 or 14).
    #[target_feature(enable = "aes")]
    pub unsafe fn expand(key: &[u8], rk: &mut [[u8; 16]; 15]) -> usize {
        let mut t1 = _mm_loadu_si128(key.as_ptr().cast());
        put(&mut rk[0], t1);
        if key.len() == 16 {
            macro_rules! round {
                ($i:expr, $rcon:expr) => {
                    t1 = schedule::<0xff>(t1, _mm_aeskeygenassist_si128::<$rcon>(t1));
                    put(&mut rk[$i], t1);
                };
            }
            round!(1, 0x01);
            round!(2, 0x02);
            round!(3, 0x04);
            round!(4, 0x08);
            round!(5, 0x10);
            round!(6, 0x20);
            round!(7, 0x40);
            round!(8, 0x80);
            round!(9, 0x1b);
            round!(10, 0x36);
            10
        } else {
            let mut t3 = _mm_loadu_si128(key[16..].as_ptr().cast());
            put(&mut rk[1], t3);
            macro_rules! round {
                ($i:expr, $rcon:expr) => {
                    t1 = schedule::<0xff>(t1, _mm_aeskeygenassist_si128::<$rcon>(t3));
                    put(&mut rk[$i], t1);
                    t3 = schedule::<0xaa>(t3, _mm_aeskeygenassist_si128::<0>(t1));
                    put(&mut rk[$i + 1], t3);
                };
            }
            round!(2, 0x01);
            round!(4, 0x02);
            round!(6, 0x04);
            round!(8, 0x08);
            round!(10, 0x10);
            round!(12, 0x20);
            t1 = schedule::<0xff>(t1, _mm_aeskeygenassist_si128::<0x40>(t3));
            put(&mut rk[14], t1);
            14
        }
    }

    /// The keystream from `iv` XORed with `len` bytes from `src` into `dst` (the same address,
    /// or not overlapping), sixteen blocks a step (four registers of four, so the AES units
    /// pipeline), then a register at a time, the last one masked.
    #[target_feature(enable = "avx512f,avx512bw,vaes,aes")]
    pub unsafe fn xor<const ROUNDS: usize>(
        rk: &[[u8; 16]; 15],
        iv: &[u8; 16],
        src: *const u8,
        dst: *mut u8,
        len: usize,
    ) {
        let mut k = [_mm512_setzero_si512(); 15];
        for (k, r) in k.iter_mut().zip(rk).take(ROUNDS + 1) {
            *k = _mm512_broadcast_i32x4(_mm_loadu_si128(r.as_ptr().cast()));
        }
        let encrypt = |mut x: __m512i| -> __m512i {
            x = _mm512_xor_si512(x, k[0]);
            for r in &k[1..ROUNDS] {
                x = _mm512_aesenc_epi128(x, *r);
            }
            _mm512_aesenclast_epi128(x, k[ROUNDS])
        };
        let base = _mm512_broadcast_i32x4(_mm_loadu_si128(iv.as_ptr().cast()));
        // The block number as a plain integer in each 128-bit lane's last word (blocks n..n+3)…
        let mut count = _mm512_set_epi32(3, 0, 0, 0, 2, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0);
        let four = _mm512_set_epi32(4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0, 4, 0, 0, 0);
        // …moved big-endian into the lane's last two bytes (bytes 13, 12 → 14, 15), the rest 0.
        let to_be = _mm512_broadcast_i32x4(_mm_set_epi8(
            12, 13, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128,
            -128,
        ));
        let mut next = || {
            let c = _mm512_or_si512(base, _mm512_shuffle_epi8(count, to_be));
            count = _mm512_add_epi32(count, four);
            c
        };
        let (mut from, mut to) = (src, dst);
        let mut left = len;
        while left >= 256 {
            let (c0, c1, c2, c3) = (next(), next(), next(), next());
            let (s0, s1, s2, s3) = (encrypt(c0), encrypt(c1), encrypt(c2), encrypt(c3));
            for (j, s) in [s0, s1, s2, s3].into_iter().enumerate() {
                let d = _mm512_loadu_si512(from.add(64 * j).cast());
                _mm512_storeu_si512(to.add(64 * j).cast(), _mm512_xor_si512(d, s));
            }
            from = from.add(256);
            to = to.add(256);
            left -= 256;
        }
        while left > 0 {
            let s = encrypt(next());
            if left >= 64 {
                let d = _mm512_loadu_si512(from.cast());
                _mm512_storeu_si512(to.cast(), _mm512_xor_si512(d, s));
                from = from.add(64);
                to = to.add(64);
                left -= 64;
            } else {
                let mask: __mmask64 = (1u64 << left) - 1;
                let d = _mm512_maskz_loadu_epi8(mask, from.cast());
                _mm512_mask_storeu_epi8(to.cast(), mask, _mm512_xor_si512(d, s));
                left = 0;
            }
        }
    }
    /// [`xor`] with 256-bit registers (two blocks an instruction): sixteen blocks a step
    /// (eight registers, so the AES units pipeline: on Zen 3 a VAES round has a latency of
    /// four cycles and two issue a cycle), then a register at a time; AVX2 has no byte-masked
    /// load or store, so the last partial register goes through a block on the stack.
    #[target_feature(enable = "avx2,vaes,aes")]
    pub unsafe fn xor_ymm<const ROUNDS: usize>(
        rk: &[[u8; 16]; 15],
        iv: &[u8; 16],
        src: *const u8,
        dst: *mut u8,
        len: usize,
    ) {
        let mut k = [_mm256_setzero_si256(); 15];
        for (k, r) in k.iter_mut().zip(rk).take(ROUNDS + 1) {
            *k = _mm256_broadcastsi128_si256(_mm_loadu_si128(r.as_ptr().cast()));
        }
        let encrypt = |mut x: __m256i| -> __m256i {
            x = _mm256_xor_si256(x, k[0]);
            for r in &k[1..ROUNDS] {
                x = _mm256_aesenc_epi128(x, *r);
            }
            _mm256_aesenclast_epi128(x, k[ROUNDS])
        };
        let base = _mm256_broadcastsi128_si256(_mm_loadu_si128(iv.as_ptr().cast()));
        // The block number as a plain integer in each 128-bit lane's last word (blocks n, n+1)…
        let mut count = _mm256_set_epi32(1, 0, 0, 0, 0, 0, 0, 0);
        let two = _mm256_set_epi32(2, 0, 0, 0, 2, 0, 0, 0);
        // …moved big-endian into the lane's last two bytes (bytes 13, 12 → 14, 15), the rest 0.
        let to_be = _mm256_broadcastsi128_si256(_mm_set_epi8(
            12, 13, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128, -128,
            -128,
        ));
        let mut next = || {
            let c = _mm256_or_si256(base, _mm256_shuffle_epi8(count, to_be));
            count = _mm256_add_epi32(count, two);
            c
        };
        let (mut from, mut to) = (src, dst);
        let mut left = len;
        while left >= 256 {
            let mut s = [_mm256_setzero_si256(); 8];
            for s in &mut s {
                *s = next();
            }
            for s in &mut s {
                *s = encrypt(*s);
            }
            for (j, s) in s.into_iter().enumerate() {
                let d = _mm256_loadu_si256(from.add(32 * j).cast());
                _mm256_storeu_si256(to.add(32 * j).cast(), _mm256_xor_si256(d, s));
            }
            from = from.add(256);
            to = to.add(256);
            left -= 256;
        }
        while left > 0 {
            let s = encrypt(next());
            if left >= 32 {
                let d = _mm256_loadu_si256(from.cast());
                _mm256_storeu_si256(to.cast(), _mm256_xor_si256(d, s));
                from = from.add(32);
                to = to.add(32);
                left -= 32;
            } else {
                let mut block = [0u8; 32];
                std::ptr::copy_nonoverlapping(from, block.as_mut_ptr(), left);
                let d = _mm256_loadu_si256(block.as_ptr().cast());
                _mm256_storeu_si256(block.as_mut_ptr().cast(), _mm256_xor_si256(d, s));
                std::ptr::copy_nonoverlapping(block.as_ptr(), to, left);
                left = 0;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use aes::cipher::{BlockCipherEncrypt, KeyInit};

    /// The keystream as RFC 3711 defines it, block by block with RustCrypto's `aes`.
    fn reference(key: &[u8], iv: [u8; 16], data: &mut [u8]) {
        for (n, chunk) in data.chunks_mut(16).enumerate() {
            let mut block = iv;
            block[14..].copy_from_slice(&(n as u16).to_be_bytes());
            let mut b = aes::Block::from(block);
            match key.len() {
                16 => aes::Aes128::new_from_slice(key)
                    .unwrap()
                    .encrypt_block(&mut b),
                _ => aes::Aes256::new_from_slice(key)
                    .unwrap()
                    .encrypt_block(&mut b),
            }
            for (d, k) in chunk.iter_mut().zip(b.iter()) {
                *d ^= k;
            }
        }
    }

    fn bytes(seed: u64, n: usize) -> Vec<u8> {
        let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    /// Every width this CPU runs (the 256-bit path is tested on AVX-512 CPUs too).
    fn widths() -> Vec<Width> {
        let w: Vec<Width> = [Width::Zmm, Width::Ymm]
            .into_iter()
            .filter(|&w| RoundKeys::with_width(&[0; 16], w).is_some())
            .collect();
        if w.is_empty() {
            // No VAES here: the engine keeps `aes` (srtp_out's tests cover that path).
            eprintln!("this CPU has no VAES: nothing to compare");
        }
        w
    }

    #[test]
    fn the_keystream_is_rfc_3711s_for_both_key_sizes_and_every_length() {
        for width in widths() {
            for (case, key_len) in [16usize, 32, 16, 32].into_iter().enumerate() {
                let key = bytes(case as u64 + 1, key_len);
                let keys = RoundKeys::with_width(&key, width).expect("VAES is here");
                assert_eq!(keys.width(), width);
                let mut iv: [u8; 16] = bytes(case as u64 + 100, 16).try_into().unwrap();
                iv[14] = 0;
                iv[15] = 0;
                // Every length through several 256-byte steps, the tail at each offset, and
                // packets up to the SFU's 2,048-byte MTU.
                for len in (0..=600).chain([1_199, 1_200, 1_201, 1_536, 1_537, 2_000, 2_048]) {
                    let data = bytes(len as u64 + 7, len);
                    let (mut got, mut want) = (data.clone(), data);
                    xor(&keys, iv, &mut got);
                    reference(&key, iv, &mut want);
                    assert_eq!(got, want, "{width:?}, key {key_len} bytes, {len} bytes");
                }
            }
        }
    }

    #[test]
    fn appending_encrypts_the_source_after_what_the_buffer_holds() {
        let key = bytes(11, 16);
        for width in widths() {
            let keys = RoundKeys::with_width(&key, width).expect("VAES is here");
            let mut iv = [0x3c; 16];
            iv[14..].fill(0);
            for (len, room) in [
                0usize, 1, 31, 32, 33, 63, 64, 65, 255, 256, 257, 1_200, 2_048,
            ]
            .into_iter()
            .flat_map(|l| [(l, true), (l, false)])
            {
                let src = bytes(len as u64 + 5, len);
                // A header already in the buffer, and either spare capacity holding old bytes
                // or none (the buffer grows).
                let mut buf = if room {
                    let mut b = Vec::with_capacity(4_096);
                    b.extend_from_slice(&[0xee; 3_000]);
                    b.truncate(12);
                    b
                } else {
                    let mut b = vec![0xee; 12];
                    b.shrink_to_fit();
                    b
                };
                xor_append(&keys, iv, &src, &mut buf);
                let mut want = src.clone();
                reference(&key, iv, &mut want);
                assert_eq!(buf.len(), 12 + len);
                assert_eq!(&buf[..12], &[0xee; 12], "the bytes before are untouched");
                assert_eq!(
                    &buf[12..],
                    &want[..],
                    "{width:?}, {len} bytes (room: {room})"
                );
            }
        }
    }

    #[test]
    fn nothing_is_written_past_the_data() {
        let key = bytes(13, 16);
        for width in widths() {
            let keys = RoundKeys::with_width(&key, width).expect("VAES is here");
            let mut iv = [0x5c; 16];
            iv[14..].fill(0);
            for len in (0..=300).chain([1_199, 1_200, 2_048]) {
                let src = bytes(len as u64 + 17, len);
                let mut big = vec![0xee; 12 + len + 64];
                // SAFETY: `src` is valid for `len` bytes and `big` for `len` bytes after 12; a
                // separate allocation, so they do not overlap.
                unsafe { xor_raw(&keys, iv, src.as_ptr(), big.as_mut_ptr().add(12), len) };
                let mut want = src.clone();
                reference(&key, iv, &mut want);
                assert!(
                    big[..12].iter().all(|&b| b == 0xee),
                    "{width:?}, {len}: before"
                );
                assert_eq!(&big[12..12 + len], &want[..], "{width:?}, {len} bytes");
                assert!(
                    big[12 + len..].iter().all(|&b| b == 0xee),
                    "{width:?}, {len} bytes: written past the end"
                );
            }
        }
    }

    #[test]
    fn a_block_number_past_255_carries_into_the_higher_byte() {
        let key = bytes(9, 16);
        for width in widths() {
            let keys = RoundKeys::with_width(&key, width).expect("VAES is here");
            // 300 blocks: numbers 256..299 need the counter's high byte.
            let data = bytes(3, 16 * 300);
            let (mut got, mut want) = (data.clone(), data);
            let mut iv = [0xa5; 16];
            iv[14..].fill(0);
            xor(&keys, iv, &mut got);
            reference(&key, iv, &mut want);
            assert_eq!(got, want, "{width:?}");
        }
    }

    #[test]
    fn keys_of_other_lengths_are_refused() {
        for len in [0, 8, 15, 17, 24, 31, 33] {
            assert!(RoundKeys::new(&vec![1; len]).is_none(), "{len} bytes");
            for width in [Width::Zmm, Width::Ymm] {
                assert!(RoundKeys::with_width(&vec![1; len], width).is_none());
            }
        }
    }
}

//! SRTP protection of the media the engine forwards, in the engine's own send buffer.
//!
//! rtc's SRTP context (`RTCPeerConnection::protect_rtp`) returns a new buffer for every packet,
//! looks the SSRC's rollover state up in a SipHash map, and expands the AES key again for every
//! packet of the AES-CM profile: at 1x100 in `cargo xtask load` that was ~15 % of the SFU's CPU
//! beside the cipher itself. [`SrtpOut`] holds one session's outbound keys, derived once from
//! the master key and salt rtc exports after DTLS (`local_srtp_keys`, vendor/rtc patch 4), and
//! protects a packet where it lies; the rollover counter lives beside each subscriber stream
//! ([`Roc`]), which is the only place that numbers it.
//!
//! The ciphers are the AES-CM keystream of [`aes_ctr`] where the CPU has VAES, with AVX-512 or
//! AVX2 (counters, AES and XOR in one pass, round keys expanded once) and RustCrypto's `aes`
//! otherwise (AES-NI when the CPU has it; also the key derivation's PRF), HMAC-SHA1 by
//! [`hmac_x16`] (sixteen tags at once with AVX-512, four with SHA-NI: [`SrtpOut::encrypt`]
//! leaves the tag to be filled in later, so the engine computes a fan-out's tags together),
//! and `ring`'s AES-GCM; this module only lays out RFC 3711 (key derivation, AES-CM counter,
//! HMAC tag over the packet and the rollover counter) and RFC 7714 (the GCM nonce, the header
//! as associated data). Its tests check every profile byte for byte against rtc-srtp's own
//! context.

use aes::cipher::{BlockCipherEncrypt, KeyInit};
use rtc::peer_connection::LocalSrtpKeys;
use rtc::srtp::protection_profile::ProtectionProfile;

use crate::aes_ctr::{self, RoundKeys};
use crate::hmac_x16::{self, HmacKey, Job};

/// Why a session's outbound SRTP could not be set up.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SrtpError {
    #[error("the master key ({key} bytes) or salt ({salt} bytes) does not fit {profile}")]
    KeyLength {
        profile: &'static str,
        key: usize,
        salt: usize,
    },
    #[error("the AES-GCM key was refused by the cipher")]
    GcmKey,
    #[error("the SRTP profile {0} is not one this SFU protects with")]
    Profile(&'static str),
}

/// The labels of RFC 3711 section 4.3.1 this module derives.
const LABEL_SRTP_ENCRYPTION: u8 = 0x00;
const LABEL_SRTP_AUTHENTICATION: u8 = 0x01;
const LABEL_SRTP_SALT: u8 = 0x02;

enum Aes {
    A128(Box<aes::Aes128>),
    A256(Box<aes::Aes256>),
}

impl Aes {
    fn new(key: &[u8]) -> Option<Aes> {
        match key.len() {
            16 => aes::Aes128::new_from_slice(key)
                .ok()
                .map(|c| Aes::A128(Box::new(c))),
            32 => aes::Aes256::new_from_slice(key)
                .ok()
                .map(|c| Aes::A256(Box::new(c))),
            _ => None,
        }
    }

    fn encrypt_blocks(&self, blocks: &mut [aes::Block]) {
        match self {
            Aes::A128(c) => c.encrypt_blocks(blocks),
            Aes::A256(c) => c.encrypt_blocks(blocks),
        }
    }
}

/// The AES-CM PRF of RFC 3711 section 4.3.3 (and RFC 6188 for AES-256): `out.len()` bytes of
/// the session key for `label`, with a key derivation rate of zero (RFC 5764).
fn derive(prf: &Aes, master_salt: &[u8], label: u8, out: &mut [u8]) {
    let mut block = [0u8; 16];
    block[..master_salt.len()].copy_from_slice(master_salt);
    block[7] ^= label;
    for (i, chunk) in out.chunks_mut(16).enumerate() {
        let mut b = block;
        b[14..16].copy_from_slice(&(i as u16).to_be_bytes());
        let mut blocks = [aes::Block::from(b)];
        prf.encrypt_blocks(&mut blocks);
        chunk.copy_from_slice(&blocks[0][..chunk.len()]);
    }
}

enum Protect {
    /// AES counter mode with an HMAC-SHA1 tag of `tag_len` bytes (RFC 3711).
    Cm {
        cipher: Aes,
        /// The same key for [`aes_ctr`] when the CPU has VAES (the keystream in one pass).
        vaes: Option<Box<RoundKeys>>,
        salt: [u8; 14],
        auth: Box<HmacKey>,
        tag_len: usize,
    },
    /// AEAD AES-GCM (RFC 7714), 16-byte tag.
    Gcm {
        key: Box<ring::aead::LessSafeKey>,
        salt: [u8; 12],
    },
}

/// One session's outbound SRTP, for the RTP the engine builds itself.
pub struct SrtpOut {
    protect: Protect,
}

impl SrtpOut {
    /// Derives the session keys from the master key and salt of `keys`.
    pub fn new(keys: &LocalSrtpKeys) -> Result<SrtpOut, SrtpError> {
        let profile = keys.profile;
        let bad = || SrtpError::KeyLength {
            profile: profile_name(profile),
            key: keys.master_key.len(),
            salt: keys.master_salt.len(),
        };
        if keys.master_key.len() != profile.key_len()
            || keys.master_salt.len() != profile.salt_len()
        {
            return Err(bad());
        }
        let prf = Aes::new(&keys.master_key).ok_or_else(bad)?;
        let mut session_key = [0u8; 32];
        let session_key = &mut session_key[..keys.master_key.len()];
        derive(&prf, &keys.master_salt, LABEL_SRTP_ENCRYPTION, session_key);
        let protect = match profile {
            ProtectionProfile::AeadAes128Gcm | ProtectionProfile::AeadAes256Gcm => {
                let alg = if session_key.len() == 16 {
                    &ring::aead::AES_128_GCM
                } else {
                    &ring::aead::AES_256_GCM
                };
                let key =
                    ring::aead::UnboundKey::new(alg, session_key).map_err(|_| SrtpError::GcmKey)?;
                let mut salt = [0u8; 12];
                derive(&prf, &keys.master_salt, LABEL_SRTP_SALT, &mut salt);
                Protect::Gcm {
                    key: Box::new(ring::aead::LessSafeKey::new(key)),
                    salt,
                }
            }
            ProtectionProfile::Aes128CmHmacSha1_80
            | ProtectionProfile::Aes128CmHmacSha1_32
            | ProtectionProfile::Aes256CmHmacSha1_80
            | ProtectionProfile::Aes256CmHmacSha1_32 => {
                let cipher = Aes::new(session_key).ok_or_else(bad)?;
                let vaes = RoundKeys::new(session_key);
                let mut salt = [0u8; 14];
                derive(&prf, &keys.master_salt, LABEL_SRTP_SALT, &mut salt);
                let mut auth_key = [0u8; 20];
                derive(
                    &prf,
                    &keys.master_salt,
                    LABEL_SRTP_AUTHENTICATION,
                    &mut auth_key,
                );
                let auth = HmacKey::new(&auth_key);
                auth_key.fill(0);
                Protect::Cm {
                    cipher,
                    vaes,
                    salt,
                    auth: Box::new(auth),
                    tag_len: profile.rtp_auth_tag_len(),
                }
            }
            other => return Err(SrtpError::Profile(profile_name(other))),
        };
        session_key.fill(0);
        Ok(SrtpOut { protect })
    }

    /// Protects the RTP packet in `buf[start..]` (a `header_len`-byte header, then the payload)
    /// with rollover counter `roc`, in place, and appends its tag.
    pub fn protect(&self, buf: &mut Vec<u8>, start: usize, header_len: usize, roc: u32) {
        if let Some(t) = self.encrypt(buf, start, header_len, roc) {
            self.fill_tags(buf, &[t]);
        }
    }

    /// [`protect`](Self::protect) but for the tag of the AES-CM profiles, which is left as
    /// zeros at the end of `buf` for [`fill_tags`](Self::fill_tags) or [`fill_tags_across`]
    /// to write, so that many packets' tags are computed together. AES-GCM is done whole here
    /// (`None`).
    pub fn encrypt(
        &self,
        buf: &mut Vec<u8>,
        start: usize,
        header_len: usize,
        roc: u32,
    ) -> Option<PendingTag> {
        match &self.protect {
            Protect::Cm {
                cipher,
                vaes,
                salt,
                tag_len,
                ..
            } => {
                let iv = cm_iv(salt, &buf[start..], roc);
                let payload = &mut buf[start + header_len..];
                match vaes {
                    Some(keys) => aes_ctr::xor(keys, iv, payload),
                    None => ctr_xor(cipher, iv, payload),
                }
                Some(PendingTag::room_after(buf, start, *tag_len, roc))
            }
            Protect::Gcm { key, salt } => {
                let ssrc = u32::from_be_bytes([
                    buf[start + 8],
                    buf[start + 9],
                    buf[start + 10],
                    buf[start + 11],
                ]);
                let seq = u16::from_be_bytes([buf[start + 2], buf[start + 3]]);
                let mut iv = [0u8; 12];
                iv[2..6].copy_from_slice(&ssrc.to_be_bytes());
                iv[6..10].copy_from_slice(&roc.to_be_bytes());
                iv[10..12].copy_from_slice(&seq.to_be_bytes());
                for (v, s) in iv.iter_mut().zip(salt) {
                    *v ^= s;
                }
                let (header, payload) = buf[start..].split_at_mut(header_len);
                let tag = key
                    .seal_in_place_separate_tag(
                        ring::aead::Nonce::assume_unique_for_key(iv),
                        ring::aead::Aad::from(&*header),
                        payload,
                    )
                    .expect("a packet is far below GCM's length limit");
                buf.extend_from_slice(tag.as_ref());
                None
            }
        }
    }

    /// [`encrypt`](Self::encrypt) for a packet whose header is the end of `buf` (from `start`)
    /// and whose payload is `payload` changed by `edit`: the payload is appended encrypted.
    /// With the VAES keystream it goes from `payload` into `buf` in one pass, with no plain
    /// copy first, and `edit`'s changes are XORed into the ciphertext after (counter mode:
    /// new ciphertext = old ciphertext ⊕ old plaintext ⊕ new plaintext). `edit` is given the
    /// first [`EDIT_SPAN`] bytes of the payload (all of it if shorter) and may change only
    /// those (a VP8 descriptor's picture numbers: its first six bytes at most).
    pub fn encrypt_append(
        &self,
        buf: &mut Vec<u8>,
        start: usize,
        payload: &[u8],
        edit: Option<Edit<'_>>,
        roc: u32,
    ) -> Option<PendingTag> {
        let header_len = buf.len() - start;
        let n = payload.len().min(EDIT_SPAN);
        if let Protect::Cm {
            vaes: Some(keys),
            salt,
            tag_len,
            ..
        } = &self.protect
        {
            let iv = cm_iv(salt, &buf[start..], roc);
            buf.reserve(payload.len() + tag_len);
            let at = buf.len();
            aes_ctr::xor_append(keys, iv, payload, buf);
            if let Some(edit) = edit {
                let mut plain = [0u8; EDIT_SPAN];
                plain[..n].copy_from_slice(&payload[..n]);
                edit(&mut plain[..n]);
                for ((c, new), old) in buf[at..at + n].iter_mut().zip(&plain).zip(payload) {
                    *c ^= new ^ old;
                }
            }
            return Some(PendingTag::room_after(buf, start, *tag_len, roc));
        }
        let at = buf.len();
        buf.extend_from_slice(payload);
        if let Some(edit) = edit {
            edit(&mut buf[at..at + n]);
        }
        self.encrypt(buf, start, header_len, roc)
    }

    /// Writes the tags [`encrypt`](Self::encrypt) left in `buf` (all of this session's).
    pub fn fill_tags(&self, buf: &mut [u8], pending: &[PendingTag]) {
        let Some(key) = self.hmac_key() else {
            return;
        };
        let mut out = [[0u8; hmac_x16::TAG_LEN]; GROUP];
        for group in pending.chunks(GROUP) {
            let mut jobs = [Job::EMPTY; GROUP];
            for (j, t) in jobs.iter_mut().zip(group) {
                *j = Job {
                    key,
                    data: &buf[t.start..t.end],
                    roc: t.roc,
                };
            }
            hmac_x16::tags(&jobs[..group.len()], &mut out);
            for (t, tag) in group.iter().zip(&out) {
                t.write(buf, tag);
            }
        }
    }

    /// The HMAC-SHA1 key of the AES-CM profiles.
    pub fn hmac_key(&self) -> Option<&HmacKey> {
        match &self.protect {
            Protect::Cm { auth, .. } => Some(auth),
            Protect::Gcm { .. } => None,
        }
    }

    /// The bytes [`protect`](Self::protect) appends.
    pub fn overhead(&self) -> usize {
        match &self.protect {
            Protect::Cm { tag_len, .. } => *tag_len,
            Protect::Gcm { .. } => 16,
        }
    }
}

/// Tags computed together: [`hmac_x16`]'s group.
const GROUP: usize = 16;

/// A packet [`SrtpOut::encrypt`] left without its tag: `buf[start..end]` is what the tag
/// covers (with `roc`), `buf[end..end + tag_len]` where it goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PendingTag {
    pub start: usize,
    pub end: usize,
    pub roc: u32,
    pub tag_len: u8,
}

impl PendingTag {
    /// Leaves `tag_len` zeros at the end of `buf` for the tag of the packet from `start` to
    /// there.
    fn room_after(buf: &mut Vec<u8>, start: usize, tag_len: usize, roc: u32) -> Self {
        let end = buf.len();
        buf.resize(end + tag_len, 0);
        PendingTag {
            start,
            end,
            roc,
            tag_len: tag_len as u8,
        }
    }

    fn write(&self, buf: &mut [u8], tag: &[u8; hmac_x16::TAG_LEN]) {
        let n = self.tag_len as usize;
        buf[self.end..self.end + n].copy_from_slice(&tag[..n]);
    }
}

/// Writes pending tags of many sessions at once, sixteen at a time (the copies of one packet
/// for sixteen subscribers, each under its own key): `at(i)` gives item `i`'s key, buffer and
/// pending tag, `buf_mut(i)` the same buffer to write the tag into.
pub fn fill_tags_across<'s, S: 's>(
    items: usize,
    sessions: &mut S,
    at: impl Fn(&S, usize) -> Option<(&HmacKey, &[u8], PendingTag)>,
    mut buf_mut: impl FnMut(&mut S, usize) -> Option<&mut [u8]>,
) {
    let mut out = [[0u8; hmac_x16::TAG_LEN]; GROUP];
    let mut which = [(
        0usize,
        PendingTag {
            start: 0,
            end: 0,
            roc: 0,
            tag_len: 0,
        },
    ); GROUP];
    let mut i = 0;
    while i < items {
        let mut n = 0;
        {
            let s: &S = sessions;
            let mut jobs = [Job::EMPTY; GROUP];
            while i < items && n < GROUP {
                if let Some((key, buf, t)) = at(s, i) {
                    jobs[n] = Job {
                        key,
                        data: &buf[t.start..t.end],
                        roc: t.roc,
                    };
                    which[n] = (i, t);
                    n += 1;
                }
                i += 1;
            }
            hmac_x16::tags(&jobs[..n], &mut out);
        }
        for (&(item, t), tag) in which[..n].iter().zip(&out) {
            if let Some(buf) = buf_mut(sessions, item) {
                t.write(buf, tag);
            }
        }
    }
}

/// Counter blocks encrypted per call: a whole 1,500-byte packet, so the cipher's AES-NI backend
/// pipelines across them (only CPUs without VAES come here; those with it run `aes_ctr`).
const CTR_BLOCKS: usize = 96;

/// How much of a payload [`SrtpOut::encrypt_append`]'s edit may change.
pub const EDIT_SPAN: usize = 16;

/// A change [`SrtpOut::encrypt_append`] makes to the first [`EDIT_SPAN`] bytes of a plain
/// payload.
pub type Edit<'a> = &'a dyn Fn(&mut [u8]);

/// AES-CM's first counter block for the RTP packet starting `packet`:
/// IV = (k_s * 2^16) XOR (SSRC * 2^64) XOR (i * 2^16), i = 2^16 * roc + seq (RFC 3711 4.1.1).
fn cm_iv(salt: &[u8; 14], packet: &[u8], roc: u32) -> [u8; 16] {
    let mut iv = [0u8; 16];
    iv[4..8].copy_from_slice(&packet[8..12]);
    iv[8..12].copy_from_slice(&roc.to_be_bytes());
    iv[12..14].copy_from_slice(&packet[2..4]);
    for (v, s) in iv.iter_mut().zip(salt) {
        *v ^= s;
    }
    iv
}

/// XORs `data` with the AES-CM keystream from counter block `iv` (RFC 3711 section 4.1.1: the
/// block number is added to the IV, whose last 16 bits are zero, so for the at most 2^16 blocks
/// of a packet it is written into those two bytes): all of a packet's counter blocks encrypted
/// in one call, so AES-NI pipelines across the packet's blocks.
fn ctr_xor(cipher: &Aes, iv: [u8; 16], data: &mut [u8]) {
    debug_assert_eq!(&iv[14..], &[0, 0], "the block counter's bytes");
    debug_assert!(data.len() <= 16 << 16, "at most 2^16 blocks");
    let mut n: u16 = 0;
    // Not zeroed first: only the blocks a packet needs are written (zeroing all 1.5 kB was
    // as much work as the counter mode itself).
    let mut blocks = [const { std::mem::MaybeUninit::<aes::Block>::uninit() }; CTR_BLOCKS];
    for chunk in data.chunks_mut(16 * CTR_BLOCKS) {
        let blocks_needed = chunk.len().div_ceil(16);
        for b in blocks.iter_mut().take(blocks_needed) {
            let mut block = iv;
            block[14..].copy_from_slice(&n.to_be_bytes());
            b.write(aes::Block::from(block));
            n = n.wrapping_add(1);
        }
        let ptr = blocks[..blocks_needed].as_mut_ptr().cast::<aes::Block>();
        // SAFETY: the first `blocks_needed` elements were written just above, and
        // `MaybeUninit<T>` has `T`'s layout.
        let blocks = unsafe { std::slice::from_raw_parts_mut(ptr, blocks_needed) };
        cipher.encrypt_blocks(blocks);
        for (d, k) in chunk.chunks_mut(16).zip(blocks.iter()) {
            if d.len() == 16 {
                let x = u128::from_ne_bytes(d[..].try_into().expect("16 bytes"))
                    ^ u128::from_ne_bytes(k[..].try_into().expect("16 bytes"));
                d.copy_from_slice(&x.to_ne_bytes());
            } else {
                for (d, k) in d.iter_mut().zip(k.iter()) {
                    *d ^= k;
                }
            }
        }
    }
}

fn profile_name(p: ProtectionProfile) -> &'static str {
    match p {
        ProtectionProfile::Aes128CmHmacSha1_80 => "AES128_CM_HMAC_SHA1_80",
        ProtectionProfile::Aes128CmHmacSha1_32 => "AES128_CM_HMAC_SHA1_32",
        ProtectionProfile::Aes256CmHmacSha1_80 => "AES256_CM_HMAC_SHA1_80",
        ProtectionProfile::Aes256CmHmacSha1_32 => "AES256_CM_HMAC_SHA1_32",
        ProtectionProfile::AeadAes128Gcm => "AEAD_AES_128_GCM",
        ProtectionProfile::AeadAes256Gcm => "AEAD_AES_256_GCM",
        _ => "this SRTP profile",
    }
}

/// The rollover counter of one outbound SSRC (RFC 3711 section 3.3.1): how many times its
/// sequence number wrapped. A retransmission of a packet from before the last wrap gets the
/// counter it was first sent with.
#[derive(Debug, Default, Clone, Copy)]
pub struct Roc {
    /// The highest packet index sent (2^16 * roc + seq), once one was sent.
    highest: Option<u64>,
}

impl Roc {
    /// The rollover counter for sending `seq` now.
    pub fn for_seq(&mut self, seq: u16) -> u32 {
        let Some(highest) = self.highest else {
            self.highest = Some(seq as u64);
            return 0;
        };
        let delta = seq.wrapping_sub(highest as u16) as i16 as i64;
        let index = highest as i64 + delta;
        if index < 0 {
            // Behind the very first packet across a wrap: nothing was sent with a negative
            // counter, so it is a sequence number of the first cycle.
            return 0;
        }
        if delta > 0 {
            self.highest = Some(index as u64);
        }
        (index >> 16) as u32
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::srtp::context::Context;

    const PROFILES: [ProtectionProfile; 6] = [
        ProtectionProfile::Aes128CmHmacSha1_80,
        ProtectionProfile::Aes128CmHmacSha1_32,
        ProtectionProfile::Aes256CmHmacSha1_80,
        ProtectionProfile::Aes256CmHmacSha1_32,
        ProtectionProfile::AeadAes128Gcm,
        ProtectionProfile::AeadAes256Gcm,
    ];

    fn keys(profile: ProtectionProfile) -> LocalSrtpKeys {
        LocalSrtpKeys {
            profile,
            master_key: (0..profile.key_len() as u8).map(|i| i * 7 + 3).collect(),
            master_salt: (0..profile.salt_len() as u8).map(|i| i * 13 + 1).collect(),
        }
    }

    fn packet(seq: u16, ssrc: u32, len: usize) -> Vec<u8> {
        let mut p = vec![0x80, 96];
        p.extend_from_slice(&seq.to_be_bytes());
        p.extend_from_slice(&(seq as u32 * 3000).to_be_bytes());
        p.extend_from_slice(&ssrc.to_be_bytes());
        p.extend((0..len).map(|i| (i * 31 + seq as usize) as u8));
        p
    }

    /// Every profile, packets of several sizes (partial last blocks included) and sequence
    /// numbers across a wrap: the same bytes as rtc-srtp's context, which the browser decrypts.
    #[test]
    fn every_profile_protects_as_rtc_srtp_does_across_a_rollover() {
        // Twice: the keystream with VAES where this CPU has it, and with RustCrypto's `aes`
        // (what a CPU without VAES runs).
        for (profile, vaes) in PROFILES.into_iter().flat_map(|p| [(p, true), (p, false)]) {
            let k = keys(profile);
            let mut reference = Context::new(
                &k.master_key,
                &k.master_salt,
                profile,
                None,
                None,
                rtc::crypto::default_provider().unwrap().crypto(),
            )
            .unwrap();
            let mut out = SrtpOut::new(&k).unwrap();
            if !vaes {
                if let Protect::Cm { vaes, .. } = &mut out.protect {
                    *vaes = None;
                }
            }
            let mut roc = Roc::default();
            let mut seqs: Vec<u16> = (65_530..=65_535).collect();
            seqs.extend(0..6);
            for (i, seq) in seqs.into_iter().enumerate() {
                let plain = packet(
                    seq,
                    0x1234_5678,
                    [1, 15, 16, 17, 160, 1188, 1537, 2000][i % 8],
                );
                let expected = reference.encrypt_rtp(&plain).unwrap();
                let mut buf = vec![0xee; 5];
                buf.extend_from_slice(&plain);
                out.protect(&mut buf, 5, 12, roc.for_seq(seq));
                assert_eq!(
                    &buf[..5],
                    &[0xee; 5],
                    "{profile:?}: bytes before the packet"
                );
                assert_eq!(
                    &buf[5..],
                    &expected[..],
                    "{profile:?} seq {seq} (VAES: {vaes})"
                );
                assert_eq!(buf.len() - 5 - plain.len(), out.overhead());
            }
        }
    }

    /// The payload appended encrypted, with an edit of its first bytes (a VP8 descriptor's
    /// picture numbers): the same bytes as copying, editing and protecting in place, for every
    /// profile with and without VAES and payloads shorter and longer than the edit's span.
    #[test]
    fn a_payload_appended_encrypted_with_an_edit_is_the_edited_packet_protected() {
        for (profile, vaes) in PROFILES.into_iter().flat_map(|p| [(p, true), (p, false)]) {
            let mut out = SrtpOut::new(&keys(profile)).unwrap();
            if !vaes {
                if let Protect::Cm { vaes, .. } = &mut out.protect {
                    *vaes = None;
                }
            }
            for (i, len) in [0usize, 1, 5, 16, 17, 100, 1_188].into_iter().enumerate() {
                let plain = packet(700 + i as u16, 0x0bad_cafe, len);
                let (header, payload) = plain.split_at(12);
                let change = |d: &mut [u8]| {
                    assert!(d.len() <= EDIT_SPAN);
                    for (j, b) in d.iter_mut().enumerate().skip(1).step_by(2) {
                        *b ^= 0x5a ^ j as u8;
                    }
                };
                for edited in [false, true] {
                    let mut want = vec![0xee; 3];
                    want.extend_from_slice(&plain);
                    if edited {
                        let n = len.min(EDIT_SPAN);
                        change(&mut want[3 + 12..3 + 12 + n]);
                    }
                    out.protect(&mut want, 3, 12, 1);
                    let mut got = vec![0xee; 3];
                    got.extend_from_slice(header);
                    let edit = edited.then_some(&change as Edit<'_>);
                    if let Some(t) = out.encrypt_append(&mut got, 3, payload, edit, 1) {
                        out.fill_tags(&mut got, &[t]);
                    }
                    assert_eq!(
                        got, want,
                        "{profile:?} VAES {vaes}, {len} bytes, edit {edited}"
                    );
                }
            }
        }
    }

    #[test]
    fn tags_filled_later_across_sessions_are_the_ones_protect_writes() {
        // 40 sessions (the 80- and 32-bit tag profiles and GCM mixed), each with a few packets
        // queued one after another in its own buffer, tags left pending and then written
        // together as the engine does at the end of a turn: every byte as `protect` makes it.
        let profiles = [
            ProtectionProfile::Aes128CmHmacSha1_80,
            ProtectionProfile::Aes256CmHmacSha1_32,
            ProtectionProfile::AeadAes128Gcm,
            ProtectionProfile::Aes128CmHmacSha1_32,
        ];
        struct S {
            out: SrtpOut,
            buf: Vec<u8>,
            tags: Vec<PendingTag>,
            expected: Vec<u8>,
        }
        let mut sessions: Vec<S> = (0..40u8)
            .map(|i| {
                let mut k = keys(profiles[i as usize % 4]);
                k.master_key[0] = i;
                S {
                    out: SrtpOut::new(&k).unwrap(),
                    buf: Vec::new(),
                    tags: Vec::new(),
                    expected: Vec::new(),
                }
            })
            .collect();
        for (i, s) in sessions.iter_mut().enumerate() {
            for j in 0..(1 + i % 3) {
                let plain = packet((i * 10 + j) as u16, 0x1000 + i as u32, [1188, 60, 0][j % 3]);
                let roc = (i * j) as u32;
                let start = s.buf.len();
                s.buf.extend_from_slice(&plain);
                if let Some(t) = s.out.encrypt(&mut s.buf, start, 12, roc) {
                    s.tags.push(t);
                }
                let start = s.expected.len();
                s.expected.extend_from_slice(&plain);
                s.out.protect(&mut s.expected, start, 12, roc);
            }
        }
        let refs: Vec<(usize, usize)> = sessions
            .iter()
            .enumerate()
            .flat_map(|(i, s)| (0..s.tags.len()).map(move |k| (i, k)))
            .collect();
        assert!(refs.len() > 16, "more than one group");
        fill_tags_across(
            refs.len(),
            &mut sessions,
            |ss, i| {
                let (n, k) = refs[i];
                let s = &ss[n];
                Some((s.out.hmac_key()?, &s.buf[..], s.tags[k]))
            },
            |ss, i| Some(&mut ss[refs[i].0].buf[..]),
        );
        for (i, s) in sessions.iter().enumerate() {
            assert_eq!(s.buf, s.expected, "session {i}");
        }
        // One session's own tags (sent before the end of the turn).
        let s = &mut sessions[0];
        let mut buf = Vec::new();
        let mut tags = Vec::new();
        for j in 0..20u16 {
            let start = buf.len();
            buf.extend_from_slice(&packet(j, 9, 300 + j as usize));
            tags.extend(s.out.encrypt(&mut buf, start, 12, 0));
        }
        let mut expected = Vec::new();
        for j in 0..20u16 {
            let start = expected.len();
            expected.extend_from_slice(&packet(j, 9, 300 + j as usize));
            s.out.protect(&mut expected, start, 12, 0);
        }
        assert_ne!(buf, expected, "tags pending");
        s.out.fill_tags(&mut buf, &tags);
        assert_eq!(buf, expected);
    }

    #[test]
    fn the_rollover_counter_follows_wraps_and_late_retransmissions() {
        let mut roc = Roc::default();
        assert_eq!(roc.for_seq(65_000), 0);
        assert_eq!(roc.for_seq(65_535), 0);
        assert_eq!(roc.for_seq(3), 1, "wrapped");
        assert_eq!(
            roc.for_seq(65_534),
            0,
            "a retransmission from before the wrap"
        );
        assert_eq!(roc.for_seq(4), 1, "the retransmission did not move it back");
        for s in (5..=65_535u16).step_by(1000) {
            assert_eq!(roc.for_seq(s), 1);
        }
        assert_eq!(roc.for_seq(65_535), 1);
        assert_eq!(roc.for_seq(0), 2);

        let mut first = Roc::default();
        assert_eq!(first.for_seq(2), 0);
        assert_eq!(
            first.for_seq(65_534),
            0,
            "behind the first packet, not a wrap back"
        );
        assert_eq!(first.for_seq(3), 0);
    }

    #[test]
    fn keys_that_do_not_fit_the_profile_are_refused() {
        let mut k = keys(ProtectionProfile::Aes128CmHmacSha1_80);
        k.master_key.pop();
        assert!(matches!(
            SrtpOut::new(&k),
            Err(SrtpError::KeyLength { key: 15, .. })
        ));
        let mut k = keys(ProtectionProfile::AeadAes128Gcm);
        k.master_salt.push(0);
        assert!(SrtpOut::new(&k).is_err());
    }
}

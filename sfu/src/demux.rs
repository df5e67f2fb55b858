//! Pure: which session a datagram on a worker's one UDP socket is for (the sans-IO engine serves
//! all of a worker's sessions from one port). A STUN binding request names its session by its
//! USERNAME — the recipient's ICE ufrag (ours), a colon, the sender's (RFC 8445 7.2.2); once its
//! MESSAGE-INTEGRITY proves it was made with that session's ICE password (which only the two
//! ends of the session know), its sender's address is mapped to the session, again on every
//! check: an address that changes hands, or a session whose ICE moves to another pair, follows
//! at once. A check that fails integrity goes nowhere (a forged one can neither take someone's
//! address nor push theirs out). Everything else (DTLS, SRTP, SRTCP, answers to our own checks)
//! goes by the sender's address.
//!
//! An address our session sends a check to is learnt too (the answer names no ufrag), but only
//! if no other session has it: a peer listing someone else's address as its candidate cannot
//! take their datagrams. A session keeps at most [`ADDRS_PER_SESSION`] addresses (a browser's
//! candidates, a relay's); the one least recently confirmed by a check goes first.

use std::collections::HashMap;
use std::net::SocketAddr;

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Remote addresses one session may have mapped at once.
pub const ADDRS_PER_SESSION: usize = 16;

/// STUN's USERNAME attribute (RFC 5389 15.3).
const ATTR_USERNAME: u16 = 0x0006;
/// STUN's MESSAGE-INTEGRITY attribute (RFC 5389 15.4): an HMAC-SHA1, 20 bytes.
const ATTR_MESSAGE_INTEGRITY: u16 = 0x0008;

#[derive(Default, Debug)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, usize>,
    /// Our ufrag → the session and our ICE password (what its checks are signed with).
    by_ufrag: HashMap<String, (usize, Vec<u8>)>,
    /// Each session's addresses, oldest first.
    addrs: HashMap<usize, Vec<SocketAddr>>,
}

impl Demux {
    /// Registers the session in `slot` under our ufrag and ICE password. `false` (nothing
    /// changed) if another session has that ufrag.
    pub fn add(&mut self, slot: usize, ufrag: &str, pwd: &str) -> bool {
        if ufrag.is_empty() || pwd.is_empty() || self.by_ufrag.contains_key(ufrag) {
            return false;
        }
        self.by_ufrag
            .insert(ufrag.to_string(), (slot, pwd.as_bytes().to_vec()));
        self.addrs.entry(slot).or_default();
        true
    }

    /// Whether `ufrag` is taken.
    pub fn has_ufrag(&self, ufrag: &str) -> bool {
        self.by_ufrag.contains_key(ufrag)
    }

    /// Forgets the session in `slot`: its ufrag and every address mapped to it.
    pub fn remove(&mut self, slot: usize) {
        self.by_ufrag.retain(|_, (s, _)| *s != slot);
        for a in self.addrs.remove(&slot).unwrap_or_default() {
            if self.by_addr.get(&a) == Some(&slot) {
                self.by_addr.remove(&a);
            }
        }
    }

    /// The session `datagram` from `from` is for (`None`: nobody here, dropped).
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<usize> {
        if let Some(ufrag) = stun_check_ufrag(datagram) {
            if let Some((slot, pwd)) = self.by_ufrag.get(ufrag) {
                let slot = *slot;
                if !stun_integrity_ok(datagram, pwd) {
                    return None; // forged, or for a session long gone
                }
                self.map(from, slot, true);
                return Some(slot);
            }
        }
        self.by_addr.get(&from).copied()
    }

    /// Our session in `slot` sent to `to`: datagrams from there are for it, unless they are
    /// another session's already.
    pub fn sent_to(&mut self, to: SocketAddr, slot: usize) {
        if !self.by_addr.contains_key(&to) {
            self.map(to, slot, false);
        }
    }

    /// Maps `addr` to `slot`, replacing another session's mapping only if `replace`.
    fn map(&mut self, addr: SocketAddr, slot: usize, replace: bool) {
        if !self.addrs.contains_key(&slot) {
            return; // not a session (any more)
        }
        match self.by_addr.get(&addr).copied() {
            Some(s) if s == slot => {
                if replace {
                    // Confirmed by a check: the last to be forgotten.
                    if let Some(list) = self.addrs.get_mut(&slot) {
                        if let Some(i) = list.iter().position(|a| *a == addr) {
                            list.remove(i);
                            list.push(addr);
                        }
                    }
                }
                return;
            }
            Some(_) if !replace => return,
            Some(other) => {
                if let Some(list) = self.addrs.get_mut(&other) {
                    list.retain(|a| *a != addr);
                }
            }
            None => {}
        }
        let list = self.addrs.entry(slot).or_default();
        if list.len() >= ADDRS_PER_SESSION {
            let old = list.remove(0);
            self.by_addr.remove(&old);
        }
        list.push(addr);
        self.by_addr.insert(addr, slot);
    }

    /// How many addresses are mapped (for tests and the curious).
    pub fn addresses(&self) -> usize {
        self.by_addr.len()
    }

    /// Whether the table agrees with itself (for tests and the fuzzer): every mapped address
    /// belongs to a registered session and is in its list, no list is longer than
    /// [`ADDRS_PER_SESSION`] or names an address mapped elsewhere, every ufrag's session is
    /// registered.
    pub fn consistent(&self) -> bool {
        self.by_addr
            .iter()
            .all(|(a, s)| self.addrs.get(s).is_some_and(|l| l.contains(a)))
            && self.addrs.iter().all(|(s, l)| {
                l.len() <= ADDRS_PER_SESSION && l.iter().all(|a| self.by_addr.get(a) == Some(s))
            })
            && self
                .by_ufrag
                .values()
                .all(|(s, _)| self.addrs.contains_key(s))
    }

    /// Whether `slot` is a registered session.
    pub fn has(&self, slot: usize) -> bool {
        self.addrs.contains_key(&slot)
    }
}

/// The recipient's ufrag (ours) in a STUN binding request's USERNAME (`ours:theirs`); `None` for
/// anything else (media, DTLS, STUN answers and indications, a malformed message).
pub fn stun_check_ufrag(d: &[u8]) -> Option<&str> {
    // A STUN message: the two top bits zero, the magic cookie; a binding request (RFC 5389 6).
    if d.len() < 20 || d[4..8] != [0x21, 0x12, 0xa4, 0x42] {
        return None;
    }
    if u16::from_be_bytes([d[0], d[1]]) != 0x0001 {
        return None;
    }
    let len = u16::from_be_bytes([d[2], d[3]]) as usize;
    let body = d.get(20..20 + len)?;
    let mut at = 0;
    while at + 4 <= body.len() {
        let t = u16::from_be_bytes([body[at], body[at + 1]]);
        let l = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let v = body.get(at + 4..at + 4 + l)?;
        if t == ATTR_USERNAME {
            let user = std::str::from_utf8(v).ok()?;
            return user.split(':').next().filter(|u| !u.is_empty());
        }
        at += 4 + l.div_ceil(4) * 4;
    }
    None
}

/// Whether the STUN message `d` carries a MESSAGE-INTEGRITY made with `key` (short-term
/// credentials: the recipient's ICE password): HMAC-SHA1 over the message up to that attribute,
/// with the header's length counting up to its end (attributes after it — FINGERPRINT — left
/// out; RFC 5389 15.4). Constant-time comparison; no allocation.
pub fn stun_integrity_ok(d: &[u8], key: &[u8]) -> bool {
    if d.len() < 20 {
        return false;
    }
    let len = u16::from_be_bytes([d[2], d[3]]) as usize;
    let Some(body) = d.get(20..20 + len) else {
        return false;
    };
    let mut at = 0;
    while at + 4 <= body.len() {
        let t = u16::from_be_bytes([body[at], body[at + 1]]);
        let l = u16::from_be_bytes([body[at + 2], body[at + 3]]) as usize;
        let Some(v) = body.get(at + 4..at + 4 + l) else {
            return false;
        };
        if t == ATTR_MESSAGE_INTEGRITY {
            if l != 20 {
                return false;
            }
            let mut header = [0u8; 20];
            header.copy_from_slice(&d[..20]);
            header[2..4].copy_from_slice(&((at + 4 + 20) as u16).to_be_bytes());
            let Ok(mut mac) = <Hmac<Sha1> as Mac>::new_from_slice(key) else {
                return false;
            };
            mac.update(&header);
            mac.update(&body[..at]);
            return mac.verify_slice(v).is_ok();
        }
        at += 4 + l.div_ceil(4) * 4;
    }
    false
}

/// Our ICE ufrag in an SDP we made (`a=ice-ufrag:`).
pub fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp_attr(sdp, "a=ice-ufrag:")
}

/// Our ICE password in an SDP we made (`a=ice-pwd:`).
pub fn sdp_pwd(sdp: &str) -> Option<&str> {
    sdp_attr(sdp, "a=ice-pwd:")
}

fn sdp_attr<'a>(sdp: &'a str, prefix: &str) -> Option<&'a str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix(prefix))
        .map(str::trim)
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::fingerprint::FINGERPRINT;
    use rtc::stun::integrity::MessageIntegrity;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
    use rtc::stun::textattrs::TextAttribute;

    /// A binding request as a browser sends it: USERNAME, MESSAGE-INTEGRITY with `pwd`,
    /// FINGERPRINT — built by webrtc-rs's STUN code, not ours.
    fn check_signed(ours: &str, theirs: &str, pwd: &str) -> Vec<u8> {
        let provider = rtc::crypto::default_provider().unwrap();
        let mut m = Message::new();
        let user = TextAttribute::new(
            rtc::stun::attributes::ATTR_USERNAME,
            format!("{ours}:{theirs}"),
        );
        let setters: Vec<Box<dyn Setter + '_>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(user),
            Box::new(MessageIntegrity::new_short_term_integrity_with_provider(
                pwd.to_string(),
                provider.crypto(),
            )),
            Box::new(FINGERPRINT),
        ];
        m.build(&setters).unwrap();
        m.raw
    }

    /// A check signed with the session's password (`pw-` and its ufrag, in these tests).
    fn check(ours: &str, theirs: &str) -> Vec<u8> {
        check_signed(ours, theirs, &format!("pw-{ours}"))
    }

    fn add(d: &mut Demux, slot: usize, ufrag: &str) -> bool {
        d.add(slot, ufrag, &format!("pw-{ufrag}"))
    }

    fn answer() -> Vec<u8> {
        let mut m = Message::new();
        let setters: Vec<Box<dyn Setter>> =
            vec![Box::new(BINDING_SUCCESS), Box::new(TransactionId::new())];
        m.build(&setters).unwrap();
        m.raw
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([192, 0, 2, 1], port))
    }

    #[test]
    fn a_check_names_its_session_by_our_ufrag() {
        assert_eq!(stun_check_ufrag(&check("sfuA", "browserB")), Some("sfuA"));
        // Answers, media and junk name nobody.
        assert_eq!(stun_check_ufrag(&answer()), None);
        assert_eq!(
            stun_check_ufrag(&[0x80, 0x60, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]),
            None
        );
        assert_eq!(stun_check_ufrag(&[22, 254, 253, 0, 0]), None); // DTLS
        let mut cut = check("sfuA", "browserB");
        cut.truncate(26); // the length says more than is there
        assert_eq!(stun_check_ufrag(&cut), None);
        assert_eq!(stun_check_ufrag(&[]), None);
    }

    #[test]
    fn a_checks_integrity_is_the_passwords() {
        let c = check_signed("sfuA", "browserB", "secret");
        assert!(stun_integrity_ok(&c, b"secret"));
        assert!(!stun_integrity_ok(&c, b"other"));
        // One bit changed anywhere before the tag breaks it.
        let mut bent = c.clone();
        bent[25] ^= 1;
        assert!(!stun_integrity_ok(&bent, b"secret"));
        assert!(
            !stun_integrity_ok(&answer(), b"secret"),
            "no integrity at all"
        );
        for n in 0..c.len() {
            let _ = stun_integrity_ok(&c[..n], b"secret"); // never panics
        }
    }

    #[test]
    fn datagrams_follow_checks_and_addresses() {
        let mut d = Demux::default();
        assert!(add(&mut d, 1, "one"));
        assert!(add(&mut d, 2, "two"));
        assert!(!add(&mut d, 3, "one"), "a ufrag is one session's");
        // Media from an address nobody checked from goes nowhere.
        assert_eq!(d.route(addr(5000), b"\x80media"), None);
        // A check maps its sender; media from there follows.
        assert_eq!(d.route(addr(5000), &check("one", "x")), Some(1));
        assert_eq!(d.route(addr(5000), b"\x80media"), Some(1));
        assert_eq!(d.route(addr(6000), &check("two", "y")), Some(2));
        assert_eq!(d.route(addr(6000), b"\x80media"), Some(2));
        // A check for nobody changes nothing.
        assert_eq!(d.route(addr(5000), &check("gone", "x")), Some(1));
        // The address changes hands: the newest check wins.
        assert_eq!(d.route(addr(5000), &check("two", "y")), Some(2));
        assert_eq!(d.route(addr(5000), b"\x80media"), Some(2));
        // Session 1 is closed: its ufrag and addresses go, session 2's stay.
        d.remove(1);
        assert_eq!(d.route(addr(7000), &check("one", "x")), None);
        assert_eq!(d.route(addr(6000), b"\x80media"), Some(2));
        d.remove(2);
        assert_eq!(d.route(addr(5000), b"\x80media"), None);
        assert_eq!(d.addresses(), 0);
        // A freed slot taken by a new session starts clean.
        assert!(add(&mut d, 1, "three"));
        assert_eq!(d.route(addr(5000), b"\x80media"), None);
        assert!(d.consistent());
    }

    #[test]
    fn a_forged_check_takes_nobodys_address() {
        let mut d = Demux::default();
        add(&mut d, 1, "victim");
        add(&mut d, 2, "attacker");
        d.route(addr(5000), &check("victim", "v"));
        // Signed with the attacker's own password but naming the victim's ufrag, or naming the
        // attacker's session "from" the victim's address without its password: neither moves
        // the victim's address.
        assert_eq!(
            d.route(addr(5000), &check_signed("victim", "a", "pw-attacker")),
            None
        );
        assert_eq!(
            d.route(addr(5000), &check_signed("attacker", "a", "guess")),
            None
        );
        assert_eq!(d.route(addr(5000), b"\x80media"), Some(1));
        // Forged checks from many ports push none of the victim's addresses out.
        for p in 0..40 {
            assert_eq!(
                d.route(addr(9000 + p), &check_signed("victim", "a", "guess")),
                None
            );
        }
        assert_eq!(d.route(addr(5000), b"\x80media"), Some(1));
        assert_eq!(d.addresses(), 1);
        assert!(d.consistent());
    }

    #[test]
    fn an_address_we_send_to_is_learnt_unless_it_is_someone_elses() {
        let mut d = Demux::default();
        add(&mut d, 1, "one");
        add(&mut d, 2, "two");
        d.route(addr(5000), &check("one", "x"));
        // Session 2 checks a candidate at session 1's address: it does not get 1's datagrams.
        d.sent_to(addr(5000), 2);
        assert_eq!(d.route(addr(5000), b"\x80media"), Some(1));
        // A new address it checks: the answer from there is for it.
        d.sent_to(addr(6000), 2);
        assert_eq!(d.route(addr(6000), &answer()), Some(2));
        // Nothing is learnt for a session that is not there.
        d.sent_to(addr(8000), 9);
        assert_eq!(d.route(addr(8000), b"\x80media"), None);
    }

    #[test]
    fn a_session_keeps_a_bounded_number_of_addresses_and_forgets_the_stalest() {
        let mut d = Demux::default();
        add(&mut d, 1, "one");
        let used = addr(10_000);
        d.route(used, &check("one", "x"));
        for p in 1..(ADDRS_PER_SESSION as u16 + 10) {
            d.route(addr(10_000 + p), &check("one", "x"));
            // The pair in use is checked again now and then (consent): it stays.
            if p % 8 == 0 {
                d.route(used, &check("one", "x"));
            }
        }
        assert_eq!(d.addresses(), ADDRS_PER_SESSION);
        assert_eq!(d.route(used, b"\x80media"), Some(1));
        // The stalest went, the newest stay.
        assert_eq!(d.route(addr(10_001), b"\x80media"), None);
        assert_eq!(
            d.route(addr(10_000 + ADDRS_PER_SESSION as u16 + 9), b"\x80media"),
            Some(1)
        );
    }

    #[test]
    fn our_ufrag_and_password_are_read_from_our_answer() {
        let sdp = "v=0\r\na=ice-ufrag:AbCd\r\na=ice-pwd:secret\r\n";
        assert_eq!(sdp_ufrag(sdp), Some("AbCd"));
        assert_eq!(sdp_pwd(sdp), Some("secret"));
        assert_eq!(sdp_ufrag("v=0\r\na=ice-ufrag:\r\n"), None);
        assert_eq!(sdp_pwd("v=0\r\n"), None);
    }
}

//! Pure: which session a datagram on a worker's one UDP socket is for (the sans-IO engine serves
//! all of a worker's sessions from one port). A STUN binding request names its session by its
//! USERNAME — the recipient's ICE ufrag (ours), a colon, the sender's (RFC 8445 7.2.2) — and
//! maps its sender's address to that session, again on every check: an address that changes
//! hands, or a session whose ICE moves to another pair, follows at once. Everything else (DTLS,
//! SRTP, SRTCP, answers to our own checks) goes by the sender's address.
//!
//! An address our session sends a check to is learnt too (the answer names no ufrag), but only
//! if no other session has it: a peer listing someone else's address as its candidate cannot
//! take their datagrams. A session keeps at most [`ADDRS_PER_SESSION`] addresses (a browser's
//! candidates, a relay's); the oldest goes first.

use std::collections::HashMap;
use std::net::SocketAddr;

/// Remote addresses one session may have mapped at once.
pub const ADDRS_PER_SESSION: usize = 16;

/// STUN's USERNAME attribute (RFC 5389 15.3).
const ATTR_USERNAME: u16 = 0x0006;

#[derive(Default, Debug)]
pub struct Demux {
    by_addr: HashMap<SocketAddr, usize>,
    by_ufrag: HashMap<String, usize>,
    /// Each session's addresses, oldest first.
    addrs: HashMap<usize, Vec<SocketAddr>>,
}

impl Demux {
    /// Registers the session in `slot` under our ufrag. `false` (nothing changed) if another
    /// session has that ufrag.
    pub fn add(&mut self, slot: usize, ufrag: &str) -> bool {
        if ufrag.is_empty() || self.by_ufrag.contains_key(ufrag) {
            return false;
        }
        self.by_ufrag.insert(ufrag.to_string(), slot);
        self.addrs.entry(slot).or_default();
        true
    }

    /// Whether `ufrag` is taken.
    pub fn has_ufrag(&self, ufrag: &str) -> bool {
        self.by_ufrag.contains_key(ufrag)
    }

    /// Forgets the session in `slot`: its ufrag and every address mapped to it.
    pub fn remove(&mut self, slot: usize) {
        self.by_ufrag.retain(|_, s| *s != slot);
        for a in self.addrs.remove(&slot).unwrap_or_default() {
            if self.by_addr.get(&a) == Some(&slot) {
                self.by_addr.remove(&a);
            }
        }
    }

    /// The session `datagram` from `from` is for (`None`: nobody here, dropped).
    pub fn route(&mut self, from: SocketAddr, datagram: &[u8]) -> Option<usize> {
        if let Some(ufrag) = stun_check_ufrag(datagram) {
            if let Some(&slot) = self.by_ufrag.get(ufrag) {
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
            Some(s) if s == slot => return,
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

/// Our ICE ufrag in an SDP we made (`a=ice-ufrag:`).
pub fn sdp_ufrag(sdp: &str) -> Option<&str> {
    sdp.lines()
        .find_map(|l| l.trim().strip_prefix("a=ice-ufrag:"))
        .map(str::trim)
        .filter(|u| !u.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtc::stun::message::{Message, Setter, TransactionId, BINDING_REQUEST, BINDING_SUCCESS};
    use rtc::stun::textattrs::TextAttribute;

    /// A binding request as a browser sends it (built by webrtc-rs's STUN code, not ours).
    fn check(ours: &str, theirs: &str) -> Vec<u8> {
        let mut m = Message::new();
        let user = TextAttribute::new(
            rtc::stun::attributes::ATTR_USERNAME,
            format!("{ours}:{theirs}"),
        );
        let setters: Vec<Box<dyn Setter>> = vec![
            Box::new(BINDING_REQUEST),
            Box::new(TransactionId::new()),
            Box::new(user),
        ];
        m.build(&setters).unwrap();
        m.raw
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
    fn datagrams_follow_checks_and_addresses() {
        let mut d = Demux::default();
        assert!(d.add(1, "one"));
        assert!(d.add(2, "two"));
        assert!(!d.add(3, "one"), "a ufrag is one session's");
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
        assert!(d.add(1, "three"));
        assert_eq!(d.route(addr(5000), b"\x80media"), None);
    }

    #[test]
    fn an_address_we_send_to_is_learnt_unless_it_is_someone_elses() {
        let mut d = Demux::default();
        d.add(1, "one");
        d.add(2, "two");
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
    fn a_session_keeps_a_bounded_number_of_addresses() {
        let mut d = Demux::default();
        d.add(1, "one");
        for p in 0..(ADDRS_PER_SESSION as u16 + 10) {
            d.route(addr(10_000 + p), &check("one", "x"));
        }
        assert_eq!(d.addresses(), ADDRS_PER_SESSION);
        // The oldest went, the newest stay.
        assert_eq!(d.route(addr(10_000), b"\x80media"), None);
        assert_eq!(
            d.route(addr(10_000 + ADDRS_PER_SESSION as u16 + 9), b"\x80media"),
            Some(1)
        );
    }

    #[test]
    fn our_ufrag_is_read_from_our_answer() {
        let sdp = "v=0\r\na=ice-ufrag:AbCd\r\na=ice-pwd:secret\r\n";
        assert_eq!(sdp_ufrag(sdp), Some("AbCd"));
        assert_eq!(sdp_ufrag("v=0\r\na=ice-ufrag:\r\n"), None);
        assert_eq!(sdp_ufrag("v=0\r\n"), None);
    }
}

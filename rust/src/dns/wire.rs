//! The DNS wire format, as much as the answerer needs (RFC 1035 4.1): a
//! query's header and its one question read by hand, and the few replies it
//! writes (A records, no data, SERVFAIL). Anything that is not a plain
//! standard query with one well-formed question is refused (`None`): the
//! server drops it without a reply, as a stub resolver would time out on it
//! anyway.

use std::net::Ipv4Addr;

/// Fixed header length.
pub const HEADER: usize = 12;
/// What a DNS message over UDP may hold without EDNS (RFC 1035 4.2.1):
/// local answers are cut to fit, with TC set.
pub const MAX_UDP: usize = 512;
/// The longest name on the wire, length bytes included (RFC 1035 2.3.4).
const MAX_NAME: usize = 255;

pub const TYPE_A: u16 = 1;
#[cfg(test)]
pub const TYPE_AAAA: u16 = 28;
pub const CLASS_IN: u16 = 1;

pub const RCODE_NOERROR: u8 = 0;
pub const RCODE_SERVFAIL: u8 = 2;

/// A standard query with its one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Query<'a> {
    pub id: u16,
    /// Recursion desired: echoed in the reply.
    pub rd: bool,
    /// The name, lower-cased, labels joined by dots, no trailing dot ("" is the root).
    pub name: String,
    pub qtype: u16,
    pub qclass: u16,
    /// The question as it came (name, type, class): echoed in replies.
    pub question: &'a [u8],
}

/// Reads a query; `None` for anything else (a response, another opcode,
/// not exactly one question, a bad or compressed name, a short packet).
/// Records after the question (an EDNS OPT, say) are ignored.
pub fn parse_query(packet: &[u8]) -> Option<Query<'_>> {
    let header = packet.get(..HEADER)?;
    let id = u16::from_be_bytes([header[0], header[1]]);
    let flags = header[2];
    let is_response = flags & 0x80 != 0;
    let opcode = (flags >> 3) & 0x0f;
    let qdcount = u16::from_be_bytes([header[4], header[5]]);
    if is_response || opcode != 0 || qdcount != 1 {
        return None;
    }
    let mut name = String::new();
    let mut at = HEADER;
    loop {
        let len = usize::from(*packet.get(at)?);
        at += 1;
        if len == 0 {
            break;
        }
        // 0xC0 is a compression pointer, 0x40/0x80 reserved label types:
        // none belongs in a query's only question.
        if len > 63 {
            return None;
        }
        let label = packet.get(at..at + len)?;
        at += len;
        if at - HEADER > MAX_NAME {
            return None;
        }
        if !name.is_empty() {
            name.push('.');
        }
        // Names are compared as ASCII; other bytes cannot be a record's name
        // (the config holds text), so they are kept as a stand-in that
        // matches nothing but still forwards.
        name.extend(label.iter().map(|&b| match b {
            b'.' => '\u{fffd}',
            b if b.is_ascii() => char::from(b.to_ascii_lowercase()),
            _ => '\u{fffd}',
        }));
    }
    let tail = packet.get(at..at + 4)?;
    let qtype = u16::from_be_bytes([tail[0], tail[1]]);
    let qclass = u16::from_be_bytes([tail[2], tail[3]]);
    Some(Query {
        id,
        rd: flags & 0x01 != 0,
        name,
        qtype,
        qclass,
        question: &packet[HEADER..at + 4],
    })
}

/// A reply to `query`: `rcode`, and one A record per address with `ttl`
/// (as many as fit in 512 bytes; TC set when some did not).
pub fn reply(query: &Query<'_>, rcode: u8, addresses: &[Ipv4Addr], ttl: u32) -> Vec<u8> {
    const RECORD: usize = 16; // pointer 2, type 2, class 2, ttl 4, length 2, address 4
    let room = MAX_UDP.saturating_sub(HEADER + query.question.len()) / RECORD;
    let answers = &addresses[..addresses.len().min(room)];
    let truncated = answers.len() < addresses.len();
    let mut out = Vec::with_capacity(HEADER + query.question.len() + answers.len() * RECORD);
    out.extend_from_slice(&query.id.to_be_bytes());
    // QR, opcode 0, AA (the names are ours), TC when cut, RD echoed.
    out.push(0x80 | 0x04 | (u8::from(truncated) << 1) | u8::from(query.rd));
    // RA: other names are forwarded, so recursion is available.
    out.push(0x80 | (rcode & 0x0f));
    out.extend_from_slice(&1u16.to_be_bytes());
    out.extend_from_slice(&(answers.len() as u16).to_be_bytes());
    out.extend_from_slice(&[0, 0, 0, 0]);
    out.extend_from_slice(query.question);
    for a in answers {
        // The name is the question's, at offset 12: a compression pointer.
        out.extend_from_slice(&[0xc0, HEADER as u8]);
        out.extend_from_slice(&TYPE_A.to_be_bytes());
        out.extend_from_slice(&CLASS_IN.to_be_bytes());
        out.extend_from_slice(&ttl.to_be_bytes());
        out.extend_from_slice(&4u16.to_be_bytes());
        out.extend_from_slice(&a.octets());
    }
    out
}

/// The query id of a message, if it has a header.
pub fn id(packet: &[u8]) -> Option<u16> {
    Some(u16::from_be_bytes([*packet.first()?, *packet.get(1)?]))
}

/// Writes `id` over a message's id (a header is assumed present).
pub fn set_id(packet: &mut [u8], id: u16) {
    if let Some(head) = packet.get_mut(..2) {
        head.copy_from_slice(&id.to_be_bytes());
    }
}

/// Whether `packet` is a response (QR set) with a full header.
pub fn is_response(packet: &[u8]) -> bool {
    packet.len() >= HEADER && packet[2] & 0x80 != 0
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A query as `dig` sends it: RD set, an EDNS OPT record after the question.
    pub fn query(id: u16, name: &str, qtype: u16) -> Vec<u8> {
        let mut p = id.to_be_bytes().to_vec();
        p.extend_from_slice(&[0x01, 0x20, 0, 1, 0, 0, 0, 0, 0, 1]);
        for label in name.split('.').filter(|l| !l.is_empty()) {
            p.push(label.len() as u8);
            p.extend_from_slice(label.as_bytes());
        }
        p.push(0);
        p.extend_from_slice(&qtype.to_be_bytes());
        p.extend_from_slice(&CLASS_IN.to_be_bytes());
        // OPT: root name, type 41, payload 1232, no flags, no data.
        p.extend_from_slice(&[0, 0, 41, 0x04, 0xd0, 0, 0, 0, 0, 0, 0]);
        p
    }

    #[test]
    fn parses_a_query_lower_cased() {
        let p = query(0xbeef, "Pricing.Default.", TYPE_A);
        let q = parse_query(&p).expect("a query");
        assert_eq!(q.id, 0xbeef);
        assert!(q.rd);
        assert_eq!(q.name, "pricing.default");
        assert_eq!((q.qtype, q.qclass), (TYPE_A, CLASS_IN));
        assert_eq!(q.question.len(), "Pricing.Default".len() + 2 + 4);
    }

    #[test]
    fn refuses_what_is_not_one_plain_question() {
        let good = query(1, "a.b", TYPE_A);
        assert!(parse_query(&good).is_some());
        let mut response = good.clone();
        response[2] |= 0x80;
        let mut notify = good.clone();
        notify[2] |= 4 << 3;
        let mut two = good.clone();
        two[5] = 2;
        let mut pointer = good[..HEADER].to_vec();
        pointer.extend_from_slice(&[0xc0, 0x0c, 0, 1, 0, 1]);
        let mut long = good[..HEADER].to_vec();
        for _ in 0..5 {
            long.push(63);
            long.extend_from_slice(&[b'x'; 63]);
        }
        long.extend_from_slice(&[0, 0, 1, 0, 1]);
        for (what, p) in [
            ("empty", vec![]),
            ("short header", good[..11].to_vec()),
            ("no type", good[..HEADER + 5].to_vec()),
            ("cut label", good[..HEADER + 2].to_vec()),
            ("response", response),
            ("opcode", notify),
            ("two questions", two),
            ("pointer", pointer),
            ("over 255", long),
        ] {
            assert_eq!(parse_query(&p), None, "{what}");
        }
    }

    #[test]
    fn replies_with_a_records_after_the_question() {
        let p = query(7, "api.example.com", TYPE_A);
        let q = parse_query(&p).unwrap();
        let addrs = [Ipv4Addr::new(240, 240, 0, 7), Ipv4Addr::new(10, 0, 0, 1)];
        let r = reply(&q, RCODE_NOERROR, &addrs, 30);
        assert_eq!(&r[..2], &[0, 7]);
        assert_eq!(r[2], 0x85, "QR AA RD");
        assert_eq!(r[3], 0x80, "RA, NOERROR");
        assert_eq!(&r[4..12], &[0, 1, 0, 2, 0, 0, 0, 0]);
        let at = HEADER + q.question.len();
        assert_eq!(&r[HEADER..at], q.question);
        assert_eq!(
            &r[at..at + 16],
            &[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4, 240, 240, 0, 7]
        );
        assert_eq!(r.len(), at + 32);
        assert!(is_response(&r));
    }

    #[test]
    fn cuts_answers_to_512_bytes_with_tc() {
        let p = query(7, "many", TYPE_A);
        let q = parse_query(&p).unwrap();
        let addrs: Vec<Ipv4Addr> = (0..100).map(|i| Ipv4Addr::new(10, 0, 0, i)).collect();
        let r = reply(&q, RCODE_NOERROR, &addrs, 5);
        assert!(r.len() <= MAX_UDP);
        assert_eq!(r[2] & 0x02, 0x02, "TC");
        let n = u16::from_be_bytes([r[6], r[7]]) as usize;
        assert_eq!(r.len(), HEADER + q.question.len() + 16 * n);
    }

    #[test]
    fn servfail_and_ids() {
        let p = query(9, "x", TYPE_AAAA);
        let q = parse_query(&p).unwrap();
        let mut r = reply(&q, RCODE_SERVFAIL, &[], 0);
        assert_eq!(r[3] & 0x0f, RCODE_SERVFAIL);
        assert_eq!(&r[6..8], &[0, 0]);
        set_id(&mut r, 0x1234);
        assert_eq!(id(&r), Some(0x1234));
        assert_eq!(id(&[1]), None);
        set_id(&mut [0u8], 1); // too short: left alone, no panic
    }
}

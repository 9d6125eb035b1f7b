//! The DNS answerer's query parser on any datagram: never panics; an
//! accepted query's reply fits in 512 bytes, carries its id, echoes its
//! question, and read back as a query (QR cleared) is the same question.

#![no_main]

use std::net::Ipv4Addr;

use _core::fuzzing::{dns_query, dns_reply};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some(query) = dns_query(data) else {
        return;
    };
    assert!(query.name.chars().count() <= 255);
    // Addresses from the input itself, up to more than fit.
    let addrs: Vec<Ipv4Addr> = data
        .chunks_exact(4)
        .take(64)
        .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]))
        .collect();
    let reply = dns_reply(&query, 0, &addrs, 30);
    assert!(reply.len() <= 512, "{}", reply.len());
    assert_eq!(&reply[..2], &query.id.to_be_bytes());
    assert_eq!(&reply[12..12 + query.question.len()], query.question);
    let mut back = reply.clone();
    back[2] &= 0x7f;
    let again = dns_query(&back).expect("the reply's question parses");
    assert_eq!(
        (again.id, &again.name, again.qtype),
        (query.id, &query.name, query.qtype)
    );
});

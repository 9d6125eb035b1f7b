//! Certificate parsing as the data plane does it: the SPIFFE ID and validity
//! of a DER certificate, and a PEM identity (chain, key, roots) loaded and
//! checked. Never a panic; an accepted identity is consistent with its leaf.

#![no_main]

use _core::fuzzing::{certificates, certified_key, validity, Identity, SpiffeId};
use libfuzzer_sys::fuzz_target;

/// Separates the chain, the key and the roots in a PEM input (seeds use it).
const SEPARATOR: &[u8] = b"\n====\n";

fn split(data: &[u8]) -> Vec<&[u8]> {
    let mut parts = Vec::new();
    let mut rest = data;
    while let Some(at) = rest.windows(SEPARATOR.len()).position(|w| w == SEPARATOR) {
        parts.push(&rest[..at]);
        rest = &rest[at + SEPARATOR.len()..];
    }
    parts.push(rest);
    parts
}

fuzz_target!(|data: &[u8]| {
    // As DER: what the TLS verifiers read from a peer's certificate.
    if let (Ok(id), Ok(_)) = (SpiffeId::from_cert(data), validity(data)) {
        assert_eq!(SpiffeId::parse(id.as_str()), Some(id));
    }
    // As PEM: what the identity section of a config holds.
    let parts = split(data);
    if let Ok(certs) = certificates(parts[0], "cert_chain") {
        assert!(!certs.is_empty());
    }
    if let [chain, key, roots, ..] = parts[..] {
        let _ = certified_key(chain, key);
        // Checked in the middle of the leaf's validity (not the clock), so
        // that runs repeat and the seeds never expire.
        let leaf = certificates(chain, "cert_chain").ok().map(|c| c[0].clone());
        let now = leaf
            .as_ref()
            .and_then(|der| validity(der).ok())
            .map_or(0, |(from, to)| from / 2 + to / 2);
        if let Ok(identity) = Identity::from_pem(chain, key, roots, now) {
            let leaf = leaf.expect("an identity has a leaf");
            assert_eq!(SpiffeId::from_cert(&leaf).ok(), Some(identity.id.clone()));
            assert!(identity.not_before <= now && now < identity.not_after);
        }
    }
});

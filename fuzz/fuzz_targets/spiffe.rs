//! SPIFFE ID parsing: never panics, and an accepted ID splits into a trust
//! domain and a path that put together give it back, parses again the same,
//! and yields a namespace and service only for `/ns/<ns>/sa/<svc>`.

#![no_main]

use _core::fuzzing::SpiffeId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let Some(id) = SpiffeId::parse(text) else {
        return;
    };
    assert_eq!(id.as_str(), text);
    assert_eq!(format!("spiffe://{}{}", id.trust_domain(), id.path()), text);
    assert!(!id.trust_domain().is_empty());
    assert!(id.path().starts_with('/') && !id.path().ends_with('/'));
    assert_eq!(SpiffeId::parse(id.as_str()), Some(id.clone()));
    let workload = format!(
        "/ns/{}/sa/{}",
        id.namespace().unwrap_or("?"),
        id.service().unwrap_or("?")
    );
    assert_eq!(id.namespace().is_some(), id.path() == workload);
    assert_eq!(id.namespace().is_some(), id.service().is_some());
});

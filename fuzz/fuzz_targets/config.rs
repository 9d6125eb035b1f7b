//! The data-plane config decoder on YAML or JSON text: it never panics, and
//! a document it accepts is accepted again (from its own value and as JSON
//! text), compiles into routes, and its effective form (defaults written out,
//! as `/config` shows it) is accepted too.

#![no_main]

use _core::fuzzing::http_routes;
use _core::Config;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `*_file` keys make the decoder read files: the fuzzer must not wander the disk.
    if text.contains("_file") {
        return;
    }
    let Ok(config) = Config::parse(text) else {
        return;
    };
    let again = Config::from_value(config.document.clone()).expect("re-validates");
    assert_eq!(
        format!("{again:?}"),
        format!("{config:?}"),
        "decoding is a function"
    );
    // JSON is a subset of YAML: what Python hands over as JSON decodes the same.
    let json = serde_json::to_string(&config.document).expect("a JSON document");
    let from_json = Config::parse(&json).expect("its JSON text re-validates");
    assert_eq!(from_json.document, config.document);
    http_routes(&config).expect("accepted routes compile");
    // `/config` shows the effective form: applying it again must work.
    Config::from_value(config.effective()).expect("the effective form re-validates");
});

#![no_main]
//! The request-path decoder the router and the ACL share: never panics, and
//! whatever it accepts is a list of non-empty segments without `/` and
//! without `.`/`..` — so the path the ACL checks is the path routed.
use libfuzzer_sys::fuzz_target;
use lockbox_core::acl::request_segments;

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(segs) = request_segments(s) {
        for seg in &segs {
            assert!(!seg.is_empty());
            assert!(!seg.contains('/'));
            assert!(seg != "." && seg != "..");
        }
        // Decoding is done once: the joined result decodes to itself only
        // when it holds no '%' (a literal '%' stays one segment's text).
        let joined = segs.join("/");
        if !joined.contains('%') {
            assert_eq!(request_segments(&joined).ok(), Some(segs));
        }
    }
});

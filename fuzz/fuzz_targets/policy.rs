#![no_main]
//! The ACL policy parser (HCL and JSON): never panics; a policy it accepts
//! round-trips through its HCL form, and answers any path.
use libfuzzer_sys::fuzz_target;
use lockbox_core::acl::{parse_policy, to_hcl, Acl};

fuzz_target!(|data: &[u8]| {
    let Ok(s) = std::str::from_utf8(data) else { return };
    if let Ok(rules) = parse_policy(s) {
        let again = parse_policy(&to_hcl(&rules)).expect("the HCL form of a policy parses");
        assert_eq!(again, rules);
        let acl = Acl::new([rules.as_slice()]);
        let _ = acl.capabilities("transit/encrypt/app-1");
        let _ = acl.capabilities(s);
    }
});

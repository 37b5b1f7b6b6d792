use lockbox_core::{Algorithm, Keyset};

#[test]
fn round_trip_all_algorithms() {
    for alg in Algorithm::ALL {
        let ks = Keyset::generate("t", alg).unwrap();
        let ct = ks.encrypt(b"hello", b"ctx").unwrap();
        assert!(ct.starts_with("lbx1:"));
        assert_eq!(ks.decrypt(&ct, b"ctx").unwrap(), b"hello");
        assert!(ks.decrypt(&ct, b"other").is_err());
    }
}

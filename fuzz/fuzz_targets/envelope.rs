//! Envelope parsing (`Envelope::decode` of the `x-amz-meta-s3crypt` value) of arbitrary
//! text, then what a GET does with it: unwrap the data key, open the envelope.
//!
//! - no panic;
//! - what decodes encodes to text that decodes to the same envelope, and encoding is
//!   stable (the encoding of that is the same text);
//! - an envelope that opens (only the seeds' and their unchanged fields do) opens the same
//!   after the round trip, with the same sealed digests.
#![no_main]
use libfuzzer_sys::fuzz_target;
use s3crypt_core::crypto::unwrap_dek;
use s3crypt_core::format::Envelope;
use s3crypt_fuzz::KEK;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let Ok(mut env) = Envelope::decode(&text) else {
        return;
    };
    let enc = env.encode();
    let again = Envelope::decode(&enc).unwrap_or_else(|e| panic!("{enc:?} does not decode: {e:?}"));
    assert_eq!(again, env);
    assert_eq!(again.encode(), enc);

    let Ok(dek) = unwrap_dek(&KEK, &env.wrapped_dek) else {
        return;
    };
    if env.open(&dek).is_ok() {
        let mut again = Envelope::decode(&env.encode()).unwrap();
        again
            .open(&dek)
            .expect("the re-encoded envelope does not open");
        assert_eq!((again.md5, again.checksum), (env.md5, env.checksum));
    }
});

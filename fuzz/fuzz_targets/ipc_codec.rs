//! Fuzz the ipc decoder (what a worker or the primary reads from its peer).
//! Checks: no panic; a decoded message re-encodes to bytes that decode the same.
#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use rsio_ipc::{decode, encode};

fuzz_target!(|data: &[u8]| {
    if let Ok(message) = decode(Bytes::copy_from_slice(data)) {
        let mut again = BytesMut::new();
        encode(&message, &mut again);
        assert_eq!(decode(again.freeze()).as_ref().ok(), Some(&message));
    }
});

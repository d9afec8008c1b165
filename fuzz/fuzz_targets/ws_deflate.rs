//! Fuzz the permessage-deflate reader: arbitrary client bytes (frame headers,
//! RSV1, fragments, deflate data). Checks: no panic, no hang, and every frame it
//! hands on stays within the size limit (inflated messages included).
#![no_main]

use libfuzzer_sys::fuzz_target;
use rsio::engine::deflate::fuzz_read;

const MAX: usize = 64 * 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(out) = fuzz_read(data, MAX) else {
        return;
    };
    let mut rest = &out[..];
    while rest.len() >= 2 {
        let (len, mut size) = match rest[1] & 0x7f {
            126 if rest.len() >= 4 => (u16::from_be_bytes([rest[2], rest[3]]) as u64, 4),
            127 if rest.len() >= 10 => (u64::from_be_bytes(rest[2..10].try_into().unwrap()), 10),
            126 | 127 => break,
            n => (n as u64, 2),
        };
        if rest[1] & 0x80 != 0 {
            size += 4;
        }
        assert!(len <= MAX as u64, "a frame of {len} bytes handed on");
        let end = size + len as usize;
        if end > rest.len() {
            break; // the input ended inside this (passed-through) frame
        }
        rest = &rest[end..];
    }
});

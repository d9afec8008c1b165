//! Tests of the packet codec (unit tests of single files live next to them).

mod decode;
mod encode;
mod prop;

use bytes::Bytes;

use super::{Decoder, Packet, ParseError};

/// Decode one text message plus its attachments with a fresh decoder.
fn decode_with(text: &str, binaries: &[&[u8]]) -> Result<Packet, ParseError> {
    let mut d = Decoder::new(10);
    let mut out = d.decode_text(Bytes::copy_from_slice(text.as_bytes()))?;
    for b in binaries {
        assert!(out.is_none(), "packet completed before all attachments");
        out = d.decode_binary(Bytes::copy_from_slice(b))?;
    }
    assert!(!d.is_waiting());
    Ok(out.expect("packet incomplete"))
}

fn decode(text: &str) -> Result<Packet, ParseError> {
    decode_with(text, &[])
}

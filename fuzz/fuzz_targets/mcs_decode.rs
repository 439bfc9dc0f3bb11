//! Arbitrary bytes, fed to a client-role decoder in arbitrary chunks: no panic, and the
//! buffer never holds more than one maximal frame plus the last chunk.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mcs_codec::McsCodec;
use tokio_util::codec::Decoder;

const MAX: usize = 4096;

fuzz_target!(|data: &[u8]| {
    let Some((&seed, mut rest)) = data.split_first() else {
        return;
    };
    let mut codec = McsCodec::builder().max_frame_length(MAX).new_codec();
    let mut buf = BytesMut::new();
    let mut step = usize::from(seed) + 1;
    while !rest.is_empty() {
        let take = step.min(rest.len());
        let (chunk, tail) = rest.split_at(take);
        rest = tail;
        buf.extend_from_slice(chunk);
        loop {
            match codec.decode(&mut buf) {
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(_) => return,
            }
        }
        assert!(buf.len() <= MAX + 6 + chunk.len());
        assert!(buf.capacity() <= 2 * (MAX + 6) + 2 * 256 + chunk.len() * 2 + 64);
        step = (step * 7 + 3) % 257 + 1;
    }
    let _ = codec.decode_eof(&mut buf);
});

//! Every message decoded from arbitrary bytes encodes and decodes back to itself.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use mcs_codec::McsCodec;
use tokio_util::codec::{Decoder, Encoder};

fuzz_target!(|data: &[u8]| {
    let mut reader = McsCodec::builder()
        .version_exchange(false)
        .max_frame_length(64 * 1024)
        .new_codec();
    let mut buf = BytesMut::from(data);
    while let Ok(Some(message)) = reader.decode(&mut buf) {
        let mut codec = McsCodec::builder()
            .version_exchange(false)
            .max_frame_length(1 << 20)
            .new_codec();
        let mut wire = BytesMut::new();
        codec.encode(&message, &mut wire).expect("a decoded message re-encodes");
        let again = codec.decode(&mut wire).expect("re-encoded bytes decode");
        assert_eq!(again.as_ref(), Some(&message));
        assert!(wire.is_empty());
    }
});

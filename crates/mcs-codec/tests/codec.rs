//! The MCS codec against the protocol: golden bytes, round trips, chunking, bad input.
#![allow(clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use mcs_codec::proto::{
    AppData, Close, DataMessageStanza, Extension, HeartbeatAck, HeartbeatConfig, HeartbeatPing,
    IqStanza, LoginRequest, LoginResponse, Setting, StreamErrorStanza, iq_stanza::IqType,
    login_request::AuthService,
};
use mcs_codec::{McsCodec, McsError, McsMessage, Role};
use proptest::prelude::*;
use tokio_util::codec::{Decoder, Encoder};

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s.replace(' ', "")).unwrap()
}

/// A codec that frames bare messages, without the version handshake.
fn bare() -> McsCodec {
    McsCodec::builder().version_exchange(false).new_codec()
}

fn encode_bare(message: &McsMessage) -> Vec<u8> {
    let mut out = BytesMut::new();
    bare().encode(message, &mut out).unwrap();
    out.to_vec()
}

fn decode_all(codec: &mut McsCodec, bytes: &[u8]) -> Vec<McsMessage> {
    let mut buf = BytesMut::from(bytes);
    let mut out = Vec::new();
    while let Some(message) = codec.decode_eof(&mut buf).unwrap() {
        out.push(message);
    }
    out
}

/// Each message type with its wire bytes, encoded by hand from docs/protocol.md §4.
fn golden() -> Vec<(McsMessage, &'static str)> {
    vec![
        (
            HeartbeatPing {
                stream_id: Some(3),
                last_stream_id_received: Some(7),
                status: None,
            }
            .into(),
            "00 04 0803 1007",
        ),
        (
            HeartbeatAck {
                last_stream_id_received: Some(300),
                ..Default::default()
            }
            .into(),
            "01 03 10ac02",
        ),
        (
            LoginRequest {
                id: "a".into(),
                domain: "mcs.android.com".into(),
                user: "1".into(),
                resource: "1".into(),
                auth_token: "2".into(),
                setting: vec![Setting {
                    name: "new_vc".into(),
                    value: "1".into(),
                }],
                received_persistent_id: vec!["x".into()],
                use_rmq2: Some(true),
                auth_service: Some(AuthService::AndroidId as i32),
                ..Default::default()
            }
            .into(),
            "02 32 0a0161 120f6d63732e616e64726f69642e636f6d 1a0131 220131 2a0132 \
             420b 0a066e65775f7663 120131 520178 7001 800102",
        ),
        (
            LoginResponse {
                id: "x".into(),
                stream_id: Some(1),
                last_stream_id_received: Some(1),
                heartbeat_config: Some(HeartbeatConfig {
                    interval_ms: Some(60_000),
                    ..Default::default()
                }),
                ..Default::default()
            }
            .into(),
            "03 0d 0a0178 2801 3001 3a04 18e0d403",
        ),
        (Close {}.into(), "04 00"),
        (
            IqStanza {
                r#type: IqType::Set as i32,
                id: String::new(),
                extension: Some(Extension {
                    id: 13,
                    data: Bytes::new(),
                }),
                last_stream_id_received: Some(5),
                ..Default::default()
            }
            .into(),
            "07 0c 1001 1a00 3a04 080d 1200 5005",
        ),
        (
            DataMessageStanza {
                id: Some("m1".into()),
                from: "123".into(),
                category: "c".into(),
                app_data: vec![AppData {
                    key: "k".into(),
                    value: "v".into(),
                }],
                persistent_id: Some("p".into()),
                raw_data: Some(Bytes::from_static(b"hi")),
                immediate_ack: Some(true),
                ..Default::default()
            }
            .into(),
            "08 1f 12026d31 1a03313233 2a0163 3a06 0a016b 120176 4a0170 aa01026869 c00101",
        ),
        (
            StreamErrorStanza {
                r#type: "x".into(),
                text: Some("y".into()),
            }
            .into(),
            "0a 06 0a0178 120179",
        ),
        (
            McsMessage::Unknown {
                tag: 9,
                bytes: Bytes::from_static(&[1, 2, 3]),
            },
            "09 03 010203",
        ),
    ]
}

#[test]
fn golden_bytes_encode_and_decode() {
    for (message, hex) in golden() {
        let wire = unhex(hex);
        assert_eq!(encode_bare(&message), wire, "encoding {message:?}");
        assert_eq!(
            decode_all(&mut bare(), &wire),
            vec![message.clone()],
            "decoding {hex}"
        );
        assert_eq!(message.tag(), wire[0]);
    }
}

#[test]
fn client_writes_version_once_before_its_first_frame() {
    let mut client = McsCodec::client();
    let mut out = BytesMut::new();
    client.encode(McsMessage::from(Close {}), &mut out).unwrap();
    client.encode(McsMessage::from(Close {}), &mut out).unwrap();
    assert_eq!(&out[..], &[41, 4, 0, 4, 0]);
}

#[test]
fn server_mirrors_the_client() {
    let mut server = McsCodec::server();
    assert_eq!(server.role(), Role::Server);
    let mut out = BytesMut::new();
    server
        .encode(McsMessage::from(HeartbeatPing::default()), &mut out)
        .unwrap();
    assert_eq!(&out[..], &[41, 0, 0]);
    // The server expects the client's version first.
    assert_eq!(
        decode_all(&mut McsCodec::server(), &[41, 4, 0]),
        vec![Close {}.into()]
    );
}

#[test]
fn accepted_and_rejected_versions() {
    for version in [38u8, 41, 42, 255] {
        let mut client = McsCodec::client();
        assert_eq!(
            decode_all(&mut client, &[version, 4, 0]),
            vec![Close {}.into()]
        );
        assert_eq!(client.peer_version(), Some(version));
    }
    for version in [0u8, 37, 39, 40] {
        let mut buf = BytesMut::from(&[version, 4, 0][..]);
        let err = McsCodec::client().decode(&mut buf).unwrap_err();
        assert!(
            matches!(err, McsError::UnsupportedVersion { version: v } if v == version),
            "{err}"
        );
    }
}

#[test]
fn unknown_tags_are_surfaced_raw() {
    for tag in [5u8, 6, 9, 11, 12, 13, 14, 15, 16, 200, 255] {
        let wire = [tag, 2, 0xde, 0xad];
        assert_eq!(
            decode_all(&mut bare(), &wire),
            vec![McsMessage::Unknown {
                tag,
                bytes: Bytes::from_static(&[0xde, 0xad])
            }]
        );
    }
}

#[test]
fn oversize_frame_is_refused_before_buffering() {
    let mut codec = McsCodec::builder()
        .version_exchange(false)
        .max_frame_length(1024)
        .new_codec();
    // Header announcing 1025 bytes, no body yet.
    let mut buf = BytesMut::from(&[8u8, 0x81, 0x08][..]);
    let capacity = buf.capacity();
    let err = codec.decode(&mut buf).unwrap_err();
    assert!(
        matches!(
            err,
            McsError::FrameTooLarge {
                size: 1025,
                max: 1024
            }
        ),
        "{err}"
    );
    assert_eq!(buf.capacity(), capacity, "nothing was reserved");

    // Exactly at the limit is fine, and the decoder reserves only what the frame needs.
    let mut buf = BytesMut::from(&[9u8, 0x80, 0x08][..]);
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    assert!(buf.capacity() >= 1024 + 3);
    assert!(buf.capacity() < 4 * 1024);

    // A frame above the limit is refused on the sending side too.
    let big = McsMessage::Unknown {
        tag: 9,
        bytes: Bytes::from(vec![0; 1025]),
    };
    let err = codec.encode(&big, &mut BytesMut::new()).unwrap_err();
    assert!(matches!(err, McsError::FrameTooLarge { .. }), "{err}");
}

#[test]
fn size_varint_longer_than_five_bytes_is_an_error() {
    for wire in [
        &[8u8, 0x80, 0x80, 0x80, 0x80, 0x80, 0x00][..],
        &[8u8, 0xff, 0xff, 0xff, 0xff, 0x10][..],
        // Five continuation bytes: an error even before a sixth byte arrives.
        &[8u8, 0x80, 0x80, 0x80, 0x80, 0x80][..],
    ] {
        let mut buf = BytesMut::from(wire);
        let err = bare().decode(&mut buf).unwrap_err();
        assert!(matches!(err, McsError::SizeOverflow), "{wire:?}: {err}");
    }
    // Four continuation bytes are only "need more data".
    let mut buf = BytesMut::from(&[8u8, 0x80, 0x80, 0x80, 0x80][..]);
    assert_eq!(bare().decode(&mut buf).unwrap(), None);
}

#[test]
fn truncated_body_is_an_error_at_end_of_stream() {
    let wire = unhex("08 1f 12026d31 1a03");
    let mut buf = BytesMut::from(&wire[..]);
    let mut codec = bare();
    assert_eq!(codec.decode(&mut buf).unwrap(), None);
    let err = codec.decode_eof(&mut buf).unwrap_err();
    assert!(matches!(err, McsError::Truncated { buffered: 8 }), "{err}");
    // A clean end between frames is no error.
    let mut empty = BytesMut::new();
    assert_eq!(bare().decode_eof(&mut empty).unwrap(), None);
}

#[test]
fn bad_protobuf_names_the_tag() {
    // Field 2 announced as a 255-byte string in a 2-byte body.
    let mut buf = BytesMut::from(&[8u8, 2, 0x12, 0xff][..]);
    let err = bare().decode(&mut buf).unwrap_err();
    assert!(matches!(err, McsError::Decode { tag: 8, .. }), "{err}");
    assert!(err.to_string().contains("tag 8"));
    // A wire type that does not exist.
    let mut buf = BytesMut::from(&[7u8, 1, 0x0f][..]);
    let err = bare().decode(&mut buf).unwrap_err();
    assert!(matches!(err, McsError::Decode { tag: 7, .. }), "{err}");
}

#[test]
fn accessors_for_last_stream_id_received() {
    let mut ping = McsMessage::from(HeartbeatPing::default());
    assert_eq!(ping.last_stream_id_received(), None);
    assert!(ping.set_last_stream_id_received(9));
    assert_eq!(ping.last_stream_id_received(), Some(9));
    let mut close = McsMessage::from(Close {});
    assert!(!close.set_last_stream_id_received(9));
    assert_eq!(close.last_stream_id_received(), None);
}

// ---- property tests ----

fn text() -> impl Strategy<Value = String> {
    "[ -~]{0,24}"
}

fn opt_text() -> impl Strategy<Value = Option<String>> {
    proptest::option::of(text())
}

fn blob() -> impl Strategy<Value = Bytes> {
    proptest::collection::vec(any::<u8>(), 0..600).prop_map(Bytes::from)
}

fn data_message() -> impl Strategy<Value = DataMessageStanza> {
    (
        (opt_text(), text(), opt_text(), text(), opt_text()),
        proptest::collection::vec((text(), text()), 0..6),
        (
            proptest::option::of(any::<bool>()),
            opt_text(),
            proptest::option::of(any::<i32>()),
            proptest::option::of(any::<i32>()),
        ),
        (
            proptest::option::of(any::<i64>()),
            proptest::option::of(any::<i32>()),
            proptest::option::of(blob()),
            proptest::option::of(any::<bool>()),
        ),
    )
        .prop_map(
            |(
                (id, from, to, category, token),
                app_data,
                (from_trusted_server, persistent_id, stream_id, last),
                (sent, ttl, raw_data, immediate_ack),
            )| DataMessageStanza {
                id,
                from,
                to,
                category,
                token,
                app_data: app_data
                    .into_iter()
                    .map(|(key, value)| AppData { key, value })
                    .collect(),
                from_trusted_server,
                persistent_id,
                stream_id,
                last_stream_id_received: last,
                sent,
                ttl,
                raw_data,
                immediate_ack,
                ..Default::default()
            },
        )
}

fn message() -> impl Strategy<Value = McsMessage> {
    let opt_i32 = || proptest::option::of(any::<i32>());
    prop_oneof![
        (opt_i32(), opt_i32(), proptest::option::of(any::<i64>())).prop_map(|(a, b, c)| {
            McsMessage::from(HeartbeatPing {
                stream_id: a,
                last_stream_id_received: b,
                status: c,
            })
        }),
        (opt_i32(), opt_i32()).prop_map(|(a, b)| McsMessage::from(HeartbeatAck {
            stream_id: a,
            last_stream_id_received: b,
            status: None,
        })),
        (
            (text(), text(), text(), text()),
            proptest::collection::vec(text(), 0..20),
            proptest::option::of(any::<bool>())
        )
            .prop_map(|((id, user, token, device), ids, rmq2)| {
                McsMessage::from(LoginRequest {
                    id,
                    domain: "mcs.android.com".into(),
                    resource: user.clone(),
                    user,
                    auth_token: token,
                    device_id: Some(device),
                    received_persistent_id: ids,
                    use_rmq2: rmq2,
                    ..Default::default()
                })
            }),
        (text(), opt_i32(), proptest::option::of(any::<i64>())).prop_map(|(id, s, ts)| {
            McsMessage::from(LoginResponse {
                id,
                stream_id: s,
                server_timestamp: ts,
                ..Default::default()
            })
        }),
        Just(McsMessage::from(Close {})),
        (
            0..4i32,
            text(),
            proptest::option::of((any::<i32>(), blob())),
            opt_i32()
        )
            .prop_map(|(kind, id, ext, last)| McsMessage::from(IqStanza {
                r#type: kind,
                id,
                extension: ext.map(|(id, data)| Extension { id, data }),
                last_stream_id_received: last,
                ..Default::default()
            })),
        data_message().prop_map(McsMessage::from),
        (text(), opt_text())
            .prop_map(|(kind, text)| McsMessage::from(StreamErrorStanza { r#type: kind, text })),
        (prop_oneof![Just(5u8), Just(6), Just(9), 11u8..=255], blob())
            .prop_map(|(tag, bytes)| McsMessage::Unknown { tag, bytes }),
    ]
}

/// Splits `bytes` at the given cut points (taken modulo the length).
fn chunked(bytes: &[u8], cuts: &[usize]) -> Vec<Vec<u8>> {
    let mut points: Vec<usize> = cuts.iter().map(|c| c % (bytes.len() + 1)).collect();
    points.push(0);
    points.push(bytes.len());
    points.sort_unstable();
    points.dedup();
    points
        .windows(2)
        .map(|w| bytes[w[0]..w[1]].to_vec())
        .collect()
}

fn decode_chunks(chunks: &[Vec<u8>]) -> Vec<McsMessage> {
    let mut codec = McsCodec::client();
    let mut buf = BytesMut::new();
    let mut out = Vec::new();
    for chunk in chunks {
        buf.extend_from_slice(chunk);
        while let Some(message) = codec.decode(&mut buf).unwrap() {
            out.push(message);
        }
    }
    while let Some(message) = codec.decode_eof(&mut buf).unwrap() {
        out.push(message);
    }
    out
}

proptest! {
    #[test]
    fn roundtrip(message in message()) {
        let mut wire = BytesMut::new();
        McsCodec::server().encode(&message, &mut wire).unwrap();
        let decoded = decode_all(&mut McsCodec::client(), &wire);
        prop_assert_eq!(decoded, vec![message]);
    }

    #[test]
    fn any_chunking_gives_the_same_messages(
        messages in proptest::collection::vec(message(), 1..12),
        cuts in proptest::collection::vec(any::<usize>(), 0..40),
    ) {
        let mut server = McsCodec::server();
        let mut wire = BytesMut::new();
        for message in &messages {
            server.encode(message, &mut wire).unwrap();
        }
        let whole = decode_chunks(&[wire.to_vec()]);
        let byte_by_byte: Vec<Vec<u8>> = wire.iter().map(|b| vec![*b]).collect();
        prop_assert_eq!(&whole, &messages);
        prop_assert_eq!(&decode_chunks(&byte_by_byte), &messages);
        prop_assert_eq!(&decode_chunks(&chunked(&wire, &cuts)), &messages);
    }

    #[test]
    fn arbitrary_bytes_never_panic_and_stay_bounded(
        bytes in proptest::collection::vec(any::<u8>(), 0..2048),
        cuts in proptest::collection::vec(any::<usize>(), 0..16),
    ) {
        let max = 512;
        let mut codec = McsCodec::builder().max_frame_length(max).new_codec();
        let mut buf = BytesMut::new();
        'feed: for chunk in chunked(&bytes, &cuts) {
            buf.extend_from_slice(&chunk);
            loop {
                match codec.decode(&mut buf) {
                    Ok(Some(_)) => {}
                    Ok(None) => break,
                    Err(_) => break 'feed,
                }
            }
            // What is buffered never exceeds one maximal frame plus what was fed.
            prop_assert!(buf.len() <= max + 6 + chunk.len());
        }
    }
}

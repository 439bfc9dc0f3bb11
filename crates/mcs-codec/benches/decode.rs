//! Decoding a realistic MCS stream in 4 KiB chunks, beside the bare cost of
//! `prost::Message::decode` on the same protobuf bodies.
//!
//! `cargo bench -p mcs-codec --bench decode`
#![allow(missing_docs, clippy::unwrap_used)]

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use mcs_codec::McsCodec;
use mcs_codec::McsMessage;
use mcs_codec::proto::{
    AppData, DataMessageStanza, Extension, HeartbeatPing, IqStanza, iq_stanza::IqType,
};
use prost::Message;
use std::hint::black_box;
use tokio_util::codec::{Decoder, Encoder};

const FRAMES: usize = 2_000;
const CHUNK: usize = 4096;

/// A web-push data message as FCM sends it: crypto app_data and a 300–600 byte payload.
fn data_message(i: usize) -> DataMessageStanza {
    let payload_len = 300 + (i * 37) % 300;
    DataMessageStanza {
        id: Some(format!("0:17001234{i:05}%7031b2e6f9fd7ecd")),
        from: "BDOU99-h67HcA6JeFXHbSNMu7e2yNNu3RzoMj8TM4W88jITfq7ZmPvIM1Iv-4_l2LxQcYwhqby2xGpWwzjfAnG4"[..12].into(),
        category: "org.chromium.linux".into(),
        app_data: vec![
            AppData { key: "crypto-key".into(), value: "dh=BNoRDbb84JGm8g5Z5CFxurSqsXWJ11ItfXEWYVLE85Y7CYkDjXsIEc4aqxYaQ1G8BqkXCJ6DPpDrWtdWj_mugHU".into() },
            AppData { key: "encryption".into(), value: "salt=lngarbyKfMoi9Z75xYXmkg".into() },
            AppData { key: "subtype".into(), value: "wp:receiver.push.com#a2c3e3f8-ff17-4d34-bf06-5a8e3c4b1f2d".into() },
        ],
        persistent_id: Some(format!("0:17001234{i:05}%7031b2e6f9fd7ecd")),
        sent: Some(1_700_123_456_789),
        ttl: Some(2_419_200),
        raw_data: Some(Bytes::from(vec![0xa5; payload_len])),
        ..Default::default()
    }
}

/// 90 % data messages, 5 % heartbeat pings, 5 % IQ stanzas.
fn stream_messages(only_data: bool) -> Vec<McsMessage> {
    (0..FRAMES)
        .map(|i| match i % 20 {
            0 if !only_data => HeartbeatPing {
                last_stream_id_received: Some(i as i32),
                ..Default::default()
            }
            .into(),
            1 if !only_data => IqStanza {
                r#type: IqType::Set as i32,
                id: String::new(),
                extension: Some(Extension {
                    id: 13,
                    data: Bytes::new(),
                }),
                last_stream_id_received: Some(i as i32),
                ..Default::default()
            }
            .into(),
            _ => data_message(i).into(),
        })
        .collect()
}

fn encode(messages: &[McsMessage]) -> (Vec<u8>, Vec<(u8, Bytes)>) {
    let mut codec = McsCodec::server();
    let mut wire = BytesMut::new();
    let mut bodies = Vec::new();
    for message in messages {
        codec.encode(message, &mut wire).unwrap();
        let mut only = Vec::with_capacity(message.encoded_len());
        match message {
            McsMessage::DataMessageStanza(m) => m.encode(&mut only).unwrap(),
            McsMessage::HeartbeatPing(m) => m.encode(&mut only).unwrap(),
            McsMessage::IqStanza(m) => m.encode(&mut only).unwrap(),
            _ => unreachable!(),
        }
        bodies.push((message.tag(), Bytes::from(only)));
    }
    (wire.to_vec(), bodies)
}

fn codec_in_chunks(wire: &[u8]) -> usize {
    let mut codec = McsCodec::client();
    let mut buf = BytesMut::with_capacity(2 * CHUNK);
    let mut frames = 0;
    for chunk in wire.chunks(CHUNK) {
        buf.extend_from_slice(chunk);
        while let Some(message) = codec.decode(&mut buf).unwrap() {
            black_box(&message);
            frames += 1;
        }
    }
    frames
}

fn bare_prost(bodies: &[(u8, Bytes)]) -> usize {
    let mut frames = 0;
    for (tag, body) in bodies {
        match tag {
            8 => {
                black_box(DataMessageStanza::decode(body.clone()).unwrap());
            }
            0 => {
                black_box(HeartbeatPing::decode(body.clone()).unwrap());
            }
            _ => {
                black_box(IqStanza::decode(body.clone()).unwrap());
            }
        }
        frames += 1;
    }
    frames
}

fn bench(c: &mut Criterion) {
    for (name, only_data) in [("mixed", false), ("data_only", true)] {
        let messages = stream_messages(only_data);
        let (wire, bodies) = encode(&messages);
        assert_eq!(codec_in_chunks(&wire), FRAMES);
        let mut group = c.benchmark_group(format!("mcs_decode_{name}"));
        group.throughput(Throughput::Elements(FRAMES as u64));
        group.bench_with_input(
            BenchmarkId::new("codec_4k_chunks", FRAMES),
            &wire,
            |b, wire| b.iter(|| codec_in_chunks(wire)),
        );
        group.bench_with_input(
            BenchmarkId::new("bare_prost", FRAMES),
            &bodies,
            |b, bodies| b.iter(|| bare_prost(bodies)),
        );
        group.finish();
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_secs(1))
        .measurement_time(std::time::Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);

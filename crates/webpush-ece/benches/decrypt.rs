//! Decrypting a 4 KiB single-record Web Push message in both encodings: this crate, beside
//! Mozilla's `ece` (OpenSSL) on the same input, beside the bare floor of the work (parse the
//! sender key, one P-256 ECDH, the HKDF calls, one AES-128-GCM open of the record), and the
//! P-256 ECDH alone (`ecdh_p256`).
//!
//! `webpush-ece` and `floor` use the ECDH implementation of the build: `p256` by default,
//! aws-lc-rs with the `aws-lc` feature, which adds the `p256` lines beside them
//! (`webpush-ece (p256)`, `floor (p256)`) and `ecdh_p256/aws-lc`.
//!
//! `cargo bench -p webpush-ece --bench decrypt`
//! `cargo bench -p webpush-ece --bench decrypt --features aws-lc`
#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::time::Duration;

use aes_gcm::aead::AeadInPlace;
use aes_gcm::{Aes128Gcm, KeyInit};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use ece::EcKeyComponents;
use ece::legacy::AesGcmEncryptedBlock;
use hkdf::Hkdf;
use p256::{PublicKey, SecretKey};
use sha2::Sha256;
#[cfg(feature = "aws-lc")]
use webpush_ece::backend::Backend;
use webpush_ece::{AesGcmParams, EncryptOptions, ReceiverKeys, SenderKeys, aes128gcm, aesgcm};

/// 4000 bytes of plaintext: one record of about 4 KiB in either encoding at rs = 4096.
const PLAINTEXT_LEN: usize = 4000;

/// An ECDH implementation for the floor.
#[derive(Clone, Copy)]
enum Ecdh {
    P256,
    #[cfg(feature = "aws-lc")]
    AwsLc,
}

/// The implementation the crate uses in this build.
#[cfg(not(feature = "aws-lc"))]
const ACTIVE: Ecdh = Ecdh::P256;
#[cfg(feature = "aws-lc")]
const ACTIVE: Ecdh = Ecdh::AwsLc;

struct Setup {
    keys: ReceiverKeys,
    secret: SecretKey,
    #[cfg(feature = "aws-lc")]
    aws_lc: aws_lc_rs::agreement::PrivateKey,
    components: EcKeyComponents,
    aes128gcm_body: Vec<u8>,
    aesgcm_params: AesGcmParams,
    aesgcm_headers: (String, String),
    aesgcm_block: AesGcmEncryptedBlock,
    aesgcm_ciphertext: Vec<u8>,
}

fn setup() -> Setup {
    let keys = ReceiverKeys::generate();
    let secret = SecretKey::from_slice(&keys.private_key_raw()[..]).unwrap();
    let components =
        EcKeyComponents::new(keys.private_key_raw().to_vec(), keys.public_key().to_vec());
    let plaintext: Vec<u8> = (0..PLAINTEXT_LEN).map(|i| (i * 7) as u8).collect();
    let sub = keys.subscription_keys();
    let sender = SenderKeys::generate();
    let aes128gcm_body =
        aes128gcm::encrypt_with(&sub, &plaintext, &EncryptOptions::new(), &sender, &[3; 16])
            .unwrap();
    let msg = aesgcm::encrypt(&sub, &plaintext, &EncryptOptions::new()).unwrap();
    let aesgcm_block = AesGcmEncryptedBlock::new(
        &msg.sender_public_key,
        &msg.salt,
        msg.rs,
        msg.ciphertext.clone(),
    )
    .unwrap();
    // Both implementations agree on the inputs before anything is timed.
    assert_eq!(
        ece::decrypt(&components, keys.auth_secret(), &aes128gcm_body).unwrap(),
        plaintext
    );
    assert_eq!(
        ece::legacy::decrypt_aesgcm(&components, keys.auth_secret(), &aesgcm_block).unwrap(),
        plaintext
    );
    Setup {
        secret,
        #[cfg(feature = "aws-lc")]
        aws_lc: aws_lc_rs::agreement::PrivateKey::from_private_key(
            &aws_lc_rs::agreement::ECDH_P256,
            &keys.private_key_raw()[..],
        )
        .unwrap(),
        components,
        aes128gcm_body,
        aesgcm_params: msg.params(),
        aesgcm_headers: (msg.crypto_key_header(), msg.encryption_header()),
        aesgcm_block,
        aesgcm_ciphertext: msg.ciphertext.clone(),
        keys,
    }
}

fn hkdf(salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) {
    Hkdf::<Sha256>::new(Some(salt), ikm)
        .expand_multi_info(info, out)
        .unwrap();
}

/// Parses the sender key and computes the ECDH secret, straight on the primitives.
fn ecdh(s: &Setup, with: Ecdh, sender: &[u8]) -> [u8; 32] {
    match with {
        Ecdh::P256 => {
            let public = PublicKey::from_sec1_bytes(sender).unwrap();
            let shared =
                p256::ecdh::diffie_hellman(s.secret.to_nonzero_scalar(), public.as_affine());
            (*shared.raw_secret_bytes()).into()
        }
        #[cfg(feature = "aws-lc")]
        Ecdh::AwsLc => {
            use aws_lc_rs::agreement::{ECDH_P256, UnparsedPublicKey, agree};
            agree(
                &s.aws_lc,
                UnparsedPublicKey::new(&ECDH_P256, sender),
                (),
                |shared| Ok(shared.try_into().unwrap()),
            )
            .unwrap()
        }
    }
}

/// The irreducible work of one message, straight on the primitives.
fn floor(
    s: &Setup,
    with: Ecdh,
    aes128gcm: bool,
    sender: &[u8],
    salt: &[u8],
    record: &[u8],
) -> Vec<u8> {
    let ecdh = &ecdh(s, with, sender)[..];
    let recv = &s.keys.public_key()[..];
    let auth = &s.keys.auth_secret()[..];
    let (mut ikm, mut cek, mut nonce) = ([0u8; 32], [0u8; 16], [0u8; 12]);
    if aes128gcm {
        hkdf(auth, ecdh, &[b"WebPush: info\0", recv, sender], &mut ikm);
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        prk.expand(b"Content-Encoding: aes128gcm\0", &mut cek)
            .unwrap();
        prk.expand(b"Content-Encoding: nonce\0", &mut nonce)
            .unwrap();
    } else {
        hkdf(auth, ecdh, &[b"Content-Encoding: auth\0"], &mut ikm);
        let ctx: [&[u8]; 5] = [b"P-256\0", &[0, 65], recv, &[0, 65], sender];
        let prk = Hkdf::<Sha256>::new(Some(salt), &ikm);
        let [a, b, c, d, e] = ctx;
        prk.expand_multi_info(&[b"Content-Encoding: aesgcm\0", a, b, c, d, e], &mut cek)
            .unwrap();
        prk.expand_multi_info(&[b"Content-Encoding: nonce\0", a, b, c, d, e], &mut nonce)
            .unwrap();
    }
    let mut buf = record.to_vec();
    let (data, tag) = buf.split_at_mut(record.len() - 16);
    let tag = aes_gcm::Tag::clone_from_slice(tag);
    Aes128Gcm::new(&cek.into())
        .decrypt_in_place_detached(&nonce.into(), b"", data, &tag)
        .unwrap();
    buf
}

fn bench(c: &mut Criterion) {
    let s = setup();

    let mut group = c.benchmark_group("ecdh_p256");
    let sender = *SenderKeys::generate().public_key();
    group.bench_function("p256", |b| {
        b.iter(|| ecdh(&s, Ecdh::P256, black_box(&sender)))
    });
    #[cfg(feature = "aws-lc")]
    group.bench_function("aws-lc", |b| {
        b.iter(|| ecdh(&s, Ecdh::AwsLc, black_box(&sender)))
    });
    group.finish();

    let mut group = c.benchmark_group("decrypt_4KiB/aes128gcm");
    group.throughput(Throughput::Bytes(PLAINTEXT_LEN as u64));
    group.bench_function("webpush-ece", |b| {
        b.iter(|| aes128gcm::decrypt(&s.keys, black_box(&s.aes128gcm_body)).unwrap())
    });
    #[cfg(feature = "aws-lc")]
    group.bench_function("webpush-ece (p256)", |b| {
        b.iter(|| {
            Backend::P256
                .aes128gcm_decrypt(&s.keys, black_box(&s.aes128gcm_body))
                .unwrap()
        })
    });
    group.bench_function("ece-openssl", |b| {
        b.iter(|| {
            ece::decrypt(
                &s.components,
                s.keys.auth_secret(),
                black_box(&s.aes128gcm_body),
            )
            .unwrap()
        })
    });
    let (header, record) = s.aes128gcm_body.split_at(aes128gcm::HEADER_LEN + 65);
    let (salt, sender) = (&header[..16], &header[aes128gcm::HEADER_LEN..]);
    group.bench_function("floor", |b| {
        b.iter(|| floor(&s, ACTIVE, true, black_box(sender), salt, black_box(record)))
    });
    #[cfg(feature = "aws-lc")]
    group.bench_function("floor (p256)", |b| {
        b.iter(|| {
            floor(
                &s,
                Ecdh::P256,
                true,
                black_box(sender),
                salt,
                black_box(record),
            )
        })
    });
    group.finish();

    let mut group = c.benchmark_group("decrypt_4KiB/aesgcm");
    group.throughput(Throughput::Bytes(PLAINTEXT_LEN as u64));
    let (ck, enc) = &s.aesgcm_headers;
    let ciphertext = &s.aesgcm_ciphertext[..];
    group.bench_function("webpush-ece (headers parsed)", |b| {
        b.iter(|| {
            aesgcm::decrypt_headers(&s.keys, black_box(ck), enc, black_box(ciphertext)).unwrap()
        })
    });
    #[cfg(feature = "aws-lc")]
    group.bench_function("webpush-ece (p256, headers parsed)", |b| {
        b.iter(|| {
            let params = AesGcmParams::parse(black_box(ck), enc).unwrap();
            Backend::P256
                .aesgcm_decrypt(&s.keys, &params, black_box(ciphertext))
                .unwrap()
        })
    });
    group.bench_function("ece-openssl", |b| {
        b.iter(|| {
            ece::legacy::decrypt_aesgcm(
                &s.components,
                s.keys.auth_secret(),
                black_box(&s.aesgcm_block),
            )
            .unwrap()
        })
    });
    group.bench_function("floor", |b| {
        b.iter(|| {
            floor(
                &s,
                ACTIVE,
                false,
                black_box(s.aesgcm_params.dh()),
                s.aesgcm_params.salt(),
                black_box(ciphertext),
            )
        })
    });
    #[cfg(feature = "aws-lc")]
    group.bench_function("floor (p256)", |b| {
        b.iter(|| {
            floor(
                &s,
                Ecdh::P256,
                false,
                black_box(s.aesgcm_params.dh()),
                s.aesgcm_params.salt(),
                black_box(ciphertext),
            )
        })
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(700))
        .measurement_time(Duration::from_secs(3));
    targets = bench
}
criterion_main!(benches);

//! The deliberate leniency of `aes128gcm`: a body that is only a header, with no record
//! (what Python's `http_ece` writes for an empty plaintext), is an empty payload.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use webpush_ece::{
    ContentEncoding, EncryptOptions, Error, Payload, ReceiverKeys, SenderKeys, aes128gcm,
    decrypt_message,
};

/// The header `http_ece` writes: salt, record size 4096, the sender's key as key id.
fn header_only(sender: &SenderKeys) -> Vec<u8> {
    let mut body = vec![7u8; 16];
    body.extend_from_slice(&4096u32.to_be_bytes());
    body.push(65);
    body.extend_from_slice(sender.public_key());
    body
}

#[test]
fn a_header_with_no_record_decrypts_to_an_empty_payload() {
    let receiver = ReceiverKeys::generate();
    let sender = SenderKeys::generate();
    let body = header_only(&sender);
    assert_eq!(aes128gcm::decrypt(&receiver, &body), Ok(Vec::new()));
    let app_data = [("content-encoding", "aes128gcm")];
    match decrypt_message(&receiver, app_data, &body).unwrap() {
        Payload::Decrypted {
            encoding,
            plaintext,
        } => {
            assert_eq!(encoding, ContentEncoding::Aes128Gcm);
            assert!(plaintext.is_empty());
        }
        other => panic!("{other:?}"),
    }
    // Plain RFC 8188 keyed by an IKM: the same.
    assert_eq!(aes128gcm::decrypt_with_ikm(&[1; 16], &body), Ok(Vec::new()));
}

#[test]
fn the_header_alone_is_still_checked() {
    let receiver = ReceiverKeys::generate();
    let sender = SenderKeys::generate();
    let body = header_only(&sender);
    // A key id that is no public key.
    let mut bad_key = body.clone();
    let last = bad_key.len() - 1;
    bad_key[21] = 5;
    bad_key[last] ^= 1;
    assert_eq!(
        aes128gcm::decrypt(&receiver, &bad_key),
        Err(Error::InvalidPublicKey)
    );
    // A key id cut short.
    assert_eq!(
        aes128gcm::decrypt(&receiver, &body[..body.len() - 1]),
        Err(Error::ShortHeader)
    );
    // A record size below the minimum.
    let mut small_rs = body.clone();
    small_rs[16..20].copy_from_slice(&17u32.to_be_bytes());
    assert_eq!(
        aes128gcm::decrypt(&receiver, &small_rs),
        Err(Error::InvalidRecordSize)
    );
}

#[test]
fn any_byte_after_the_header_is_a_record_and_must_authenticate() {
    let receiver = ReceiverKeys::generate();
    let sender = SenderKeys::generate();
    let mut body = header_only(&sender);
    body.push(0);
    assert_eq!(aes128gcm::decrypt(&receiver, &body), Err(Error::BadTag));
    // The RFC form of an empty plaintext (one record with the delimiter) decrypts as well.
    let rfc =
        aes128gcm::encrypt(&receiver.subscription_keys(), b"", &EncryptOptions::new()).unwrap();
    assert!(rfc.len() > aes128gcm::HEADER_LEN + 65, "one record follows");
    assert_eq!(aes128gcm::decrypt(&receiver, &rfc), Ok(Vec::new()));
}

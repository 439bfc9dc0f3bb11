//! Set-ups against a running [`Emulator`]: an HTTP client and TLS configuration that
//! trust its generated CA (and nothing else), its endpoints, and the MCS address its
//! certificate is valid for.

use std::sync::Arc;

use fcm_emulator::Emulator;
use fcm_http::{Client, ClientBuilder, Endpoints};

/// A client builder trusting only the emulator's CA.
pub fn client_builder(emulator: &Emulator) -> ClientBuilder {
    Client::builder()
        .webpki_roots(false)
        .add_root_certificates_pem(emulator.ca_cert_pem().as_bytes())
        .expect("the emulator's CA is a valid PEM certificate")
}

/// The rustls configuration of an MCS connection to the emulator.
pub fn tls(emulator: &Emulator) -> Arc<rustls::ClientConfig> {
    client_builder(emulator)
        .build_tls_config()
        .expect("a TLS configuration with the emulator's CA")
}

/// The emulator's HTTP endpoints.
pub fn endpoints(emulator: &Emulator) -> Endpoints {
    Endpoints::at(emulator.base_url().as_str()).expect("the emulator's base URL is valid")
}

/// The emulator's MCS server as `localhost:PORT`: the name its certificate carries.
pub fn mcs_addr(emulator: &Emulator) -> String {
    format!("localhost:{}", emulator.mcs_addr().port())
}

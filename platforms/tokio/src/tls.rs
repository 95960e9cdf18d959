//! TLS (feature `tls`): rustls with the ring provider (aws-lc-rs, rustls' default, needs
//! cmake and builds slowly).
//!
//! Verification is on unless the platform was made with [`Verification::Off`] (the board's
//! `--insecure`). Then the server's
//! certificate chain and name are *not* checked (the handshake signatures still are, so the
//! session is at least bound to the key the server presented); every connection logs a
//! warning saying so, because a quiet insecure mode is how test settings reach production.

use std::sync::Arc;

use mqtt_host::TlsParams;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, WebPkiSupportedAlgorithms};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};

use crate::Verification;

/// The rustls client config for one connection's TLS parameters.
pub fn client_config(p: &TlsParams, verification: Verification) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone()).with_safe_default_protocol_versions().map_err(|e| e.to_string())?;
    let builder = match verification {
        Verification::On => builder.with_root_certificates(roots(p)?),
        Verification::Off => {
            tracing::warn!("TLS certificate verification is OFF (--insecure): the broker at {:?} is not authenticated", p.server_name);
            builder.dangerous().with_custom_certificate_verifier(Arc::new(AnyCertificate { algorithms: provider.signature_verification_algorithms }))
        }
    };
    let mut config = match (&p.client_cert_file, &p.client_key_file) {
        (Some(cert), Some(key)) => {
            let chain =
                CertificateDer::pem_file_iter(cert).map_err(|e| format!("{cert}: {e}"))?.collect::<Result<Vec<_>, _>>().map_err(|e| format!("{cert}: {e}"))?;
            if chain.is_empty() {
                return Err(format!("{cert}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)"));
            }
            let key = PrivateKeyDer::from_pem_file(key).map_err(|e| format!("{key}: {e}"))?;
            builder.with_client_auth_cert(chain, key).map_err(|e| e.to_string())?
        }
        (None, None) => builder.with_no_client_auth(),
        _ => return Err("a client certificate needs both a certificate and a key file".into()),
    };
    config.alpn_protocols = p.alpn.iter().map(|proto| proto.as_bytes().to_vec()).collect();
    Ok(config)
}

/// The CA file's certificates, or the system's.
fn roots(p: &TlsParams) -> Result<rustls::RootCertStore, String> {
    let mut roots = rustls::RootCertStore::empty();
    match &p.ca_file {
        Some(path) => {
            for cert in CertificateDer::pem_file_iter(path).map_err(|e| format!("CA file {path}: {e}"))? {
                roots.add(cert.map_err(|e| format!("CA file {path}: {e}"))?).map_err(|e| format!("CA file {path}: {e}"))?;
            }
            // Without this, a file with no certificate in it (a key, DER, the wrong file)
            // trusted nothing, and every handshake failed with "unknown issuer".
            if roots.is_empty() {
                return Err(format!("CA file {path}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)"));
            }
        }
        None => {
            for cert in rustls_native_certs::load_native_certs().certs {
                // A system store commonly holds a few certificates webpki rejects; skipping
                // them is what every rustls user does.
                let _ = roots.add(cert);
            }
            if roots.is_empty() {
                return Err("no system CA certificates found; give a CA file".into());
            }
        }
    }
    Ok(roots)
}

/// `--insecure`: any chain, any name; handshake signatures still verified.
#[derive(Debug)]
struct AnyCertificate {
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for AnyCertificate {
    fn verify_server_cert(
        &self,
        _: &CertificateDer<'_>,
        _: &[CertificateDer<'_>],
        _: &ServerName<'_>,
        _: &[u8],
        _: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }
    fn verify_tls12_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(message, cert, dss, &self.algorithms)
    }
    fn verify_tls13_signature(&self, message: &[u8], cert: &CertificateDer<'_>, dss: &DigitallySignedStruct) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(message, cert, dss, &self.algorithms)
    }
    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn params(alpn: &[&str]) -> TlsParams {
        TlsParams {
            server_name: "broker".into(),
            ca_file: None,
            client_cert_file: None,
            client_key_file: None,
            alpn: alpn.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// A file that holds no certificate is refused, naming it, for the CA and for the
    /// client's chain; before, an empty CA list failed every handshake as "unknown issuer".
    #[test]
    fn a_certificate_file_without_a_certificate_is_refused_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let empty = dir.path().join("not-a-cert.pem");
        std::fs::write(&empty, "garbage, not PEM\n").unwrap();
        let empty = empty.to_str().unwrap().to_string();
        let ca = TlsParams { ca_file: Some(empty.clone()), ..params(&[]) };
        let e = client_config(&ca, Verification::On).unwrap_err();
        assert_eq!(e, format!("CA file {empty}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)"));
        let client = TlsParams { client_cert_file: Some(empty.clone()), client_key_file: Some(empty.clone()), ..params(&[]) };
        let e = client_config(&client, Verification::Off).unwrap_err();
        assert_eq!(e, format!("{empty}: no PEM certificate in it (-----BEGIN CERTIFICATE-----)"));
    }

    #[test]
    fn the_handshake_offers_the_alpn_protocols_asked_for_in_order() {
        let c = client_config(&params(&["x-amzn-mqtt-ca", "mqtt"]), Verification::Off).unwrap();
        assert_eq!(c.alpn_protocols, vec![b"x-amzn-mqtt-ca".to_vec(), b"mqtt".to_vec()]);
        let c = client_config(&params(&[]), Verification::Off).unwrap();
        assert!(c.alpn_protocols.is_empty(), "none asked for, none offered");
    }
}

//! What a workload makes itself to get an SVID: a fresh EC P-256 key and a
//! certificate signing request naming only its SPIFFE ID; and what it reads
//! back from the certificate. Here rather than in Python's `cryptography`,
//! which would be a second TLS library in every sidecar's memory (~16 MB).

use rcgen::string::Ia5String;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};

use super::identity::{certificates, validity};
use super::spiffe::SpiffeId;

/// A private key (PKCS#8 PEM) and its signing request (PEM).
pub struct KeyAndRequest {
    pub key_pem: String,
    pub csr_pem: String,
}

/// A new key and a CSR with an empty subject and one URI SAN, `spiffe_id`.
pub fn key_and_request(spiffe_id: &str) -> Result<KeyAndRequest, String> {
    if SpiffeId::parse(spiffe_id).is_none() {
        return Err(format!("{spiffe_id:?} is not a SPIFFE ID"));
    }
    let uri = Ia5String::try_from(spiffe_id).map_err(|e| e.to_string())?;
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|e| e.to_string())?;
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = vec![SanType::URI(uri)];
    let csr = params.serialize_request(&key).map_err(|e| e.to_string())?;
    Ok(KeyAndRequest {
        key_pem: key.serialize_pem(),
        csr_pem: csr.pem().map_err(|e| e.to_string())?,
    })
}

/// The first certificate of a PEM chain: its SPIFFE ID (None when it names
/// none), validity window (Unix seconds) and serial number (hex).
pub struct Leaf {
    pub spiffe_id: Option<String>,
    pub not_before: i64,
    pub not_after: i64,
    pub serial: String,
}

pub fn leaf(chain_pem: &str) -> Result<Leaf, String> {
    let certs = certificates_der(chain_pem)?;
    let der = &certs[0];
    let (not_before, not_after) = validity(der)?;
    let (_, cert) = x509_parser::parse_x509_certificate(der).map_err(|e| e.to_string())?;
    let spiffe_id = SpiffeId::from_cert(der)
        .ok()
        .map(|id| id.as_str().to_string());
    Ok(Leaf {
        spiffe_id,
        not_before,
        not_after,
        serial: cert.serial.to_str_radix(16),
    })
}

/// The DER of every certificate in a PEM text (an error when there is none).
pub fn certificates_der(pem: &str) -> Result<Vec<Vec<u8>>, String> {
    let certs = certificates(pem.as_bytes(), "certificates").map_err(|e| e.message)?;
    Ok(certs.iter().map(|c| c.as_ref().to_vec()).collect())
}

/// A DER certificate's SubjectPublicKeyInfo, as DER (what a CA pin hashes).
pub fn public_key_info(der: &[u8]) -> Result<Vec<u8>, String> {
    let (_, cert) = x509_parser::parse_x509_certificate(der)
        .map_err(|e| format!("not an X.509 certificate: {e}"))?;
    Ok(cert.public_key().raw.to_vec())
}

#[cfg(test)]
mod tests {
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::ParsedExtension;
    use x509_parser::prelude::FromDer;

    use super::*;

    const ID: &str = "spiffe://cluster.local/ns/default/sa/web";

    #[test]
    fn the_request_names_only_the_spiffe_id_and_is_signed_by_the_key() {
        let made = key_and_request(ID).unwrap();
        assert!(made.key_pem.starts_with("-----BEGIN PRIVATE KEY-----"));
        let (_, pem) = x509_parser::pem::parse_x509_pem(made.csr_pem.as_bytes()).unwrap();
        let (_, csr) = X509CertificationRequest::from_der(&pem.contents).unwrap();
        csr.verify_signature().unwrap();
        assert_eq!(csr.certification_request_info.subject.iter().count(), 0);
        let sans: Vec<String> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                ParsedExtension::SubjectAlternativeName(san) => Some(
                    san.general_names
                        .iter()
                        .map(|n| format!("{n}"))
                        .collect::<Vec<_>>(),
                ),
                _ => None,
            })
            .flatten()
            .collect();
        assert_eq!(sans, vec![format!("URI({ID})")]);
        // Two requests, two keys.
        assert_ne!(key_and_request(ID).unwrap().key_pem, made.key_pem);
    }

    #[test]
    fn reads_back_a_certificate() {
        let made = key_and_request(ID).unwrap();
        let key = KeyPair::from_pem(&made.key_pem).unwrap();
        let mut params = CertificateParams::default();
        params.subject_alt_names = vec![SanType::URI(Ia5String::try_from(ID).unwrap())];
        params.serial_number = Some(rcgen::SerialNumber::from_slice(&[0x01, 0xab]));
        let cert = params.self_signed(&key).unwrap();
        let chain = format!("{}{}", cert.pem(), cert.pem());
        let read = leaf(&chain).unwrap();
        assert_eq!(read.spiffe_id.as_deref(), Some(ID));
        assert_eq!(read.serial, "1ab");
        assert!(read.not_before < read.not_after);
        assert_eq!(certificates_der(&chain).unwrap().len(), 2);
        let spki = public_key_info(cert.der()).unwrap();
        assert_eq!(spki, rcgen::PublicKeyData::subject_public_key_info(&key));
    }

    #[test]
    fn refuses_what_is_not_a_spiffe_id() {
        assert!(key_and_request("https://example.com/x").is_err());
        assert!(leaf("not a certificate").is_err());
    }
}

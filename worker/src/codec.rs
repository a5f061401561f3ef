//! Personal data never rests in clear in Temporal. Every payload a client or
//! worker of baedal sends (the order request with its phone number, address and
//! payment token; every snapshot; every answer) is sealed with AES-256-GCM
//! (`aes-gcm`) under the key in `PAYLOAD_KEY_FILE`, and opened again on the way
//! back. A payload that is not sealed (histories recorded before the codec)
//! passes as it is, so those orders still replay and finish. Operators read
//! orders in the Web UI through the gateway's codec endpoint (`/api/codec`).

use aes_gcm::aead::{Aead, AeadCore, OsRng};
use aes_gcm::{Aes256Gcm, Key, KeyInit, Nonce};
use baedal_activities::keyfile;
use futures::FutureExt;
use futures::future::BoxFuture;
use prost::Message;
use std::sync::Arc;
use temporalio_common::data_converters::{
    PayloadCodec, PayloadConversionError, SerializationContextData,
};
use temporalio_common::protos::temporal::api::common::v1::Payload;

/// The `encoding` of a sealed payload; its data is the nonce, then the sealed
/// bytes of the original payload (metadata included).
pub const SEALED: &[u8] = b"binary/encrypted";
/// Which key sealed it (a check value of the key, never the key).
pub const KEY_ID: &str = "encryption-key-id";

/// Seals and opens payloads with one key.
pub struct PayloadCipher {
    cipher: Aes256Gcm,
    key_id: String,
}

impl PayloadCipher {
    /// The key in `path` (64 hex digits), made (random, 0600) when missing.
    pub fn from_file(path: &str) -> anyhow::Result<Self> {
        let hex = keyfile::load_or_create(path, "payload key", 64, || keyfile::random_hex(32))?;
        let hex = std::str::from_utf8(&hex)?;
        anyhow::ensure!(
            hex.len() == 64,
            "the payload key in {path} is not 64 hex digits"
        );
        let bytes = (0..32)
            .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(|_| anyhow::anyhow!("the payload key in {path} is not 64 hex digits"))?;
        Ok(Self::new(&bytes))
    }

    pub fn new(key: &[u8]) -> Self {
        let cipher = Aes256Gcm::new(Key::<Aes256Gcm>::from_slice(key));
        // A key check value: the first bytes of zeros sealed under a zero nonce.
        let check = cipher
            .encrypt(Nonce::from_slice(&[0u8; 12]), [0u8; 16].as_slice())
            .expect("sealing a block");
        let key_id = check[..6].iter().map(|b| format!("{b:02x}")).collect();
        PayloadCipher { cipher, key_id }
    }

    pub fn seal(&self, p: &Payload) -> Result<Payload, PayloadConversionError> {
        let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
        let sealed = self
            .cipher
            .encrypt(&nonce, p.encode_to_vec().as_slice())
            .map_err(|_| error("sealing a payload failed"))?;
        let mut data = nonce.to_vec();
        data.extend_from_slice(&sealed);
        Ok(Payload {
            metadata: [
                ("encoding".to_string(), SEALED.to_vec()),
                (KEY_ID.to_string(), self.key_id.clone().into_bytes()),
            ]
            .into_iter()
            .collect(),
            data,
            ..Default::default()
        })
    }

    /// The original of a sealed payload; any other payload as it is.
    pub fn open(&self, p: Payload) -> Result<Payload, PayloadConversionError> {
        if p.metadata.get("encoding").map(Vec::as_slice) != Some(SEALED) {
            return Ok(p);
        }
        if p.data.len() < 12 {
            return Err(error("a sealed payload too short to open"));
        }
        let (nonce, sealed) = p.data.split_at(12);
        let plain = self
            .cipher
            .decrypt(Nonce::from_slice(nonce), sealed)
            .map_err(|_| error("a sealed payload does not open with this key"))?;
        Payload::decode(plain.as_slice()).map_err(|e| error(&format!("a sealed payload: {e}")))
    }
}

fn error(msg: &str) -> PayloadConversionError {
    PayloadConversionError::EncodingError(msg.to_string().into())
}

/// The codec the clients and workers use.
#[derive(Clone)]
pub struct SealingCodec(pub Arc<PayloadCipher>);

impl PayloadCodec for SealingCodec {
    fn encode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let c = self.0.clone();
        async move { payloads.iter().map(|p| c.seal(p)).collect() }.boxed()
    }

    fn decode(
        &self,
        _: &SerializationContextData,
        payloads: Vec<Payload>,
    ) -> BoxFuture<'static, Result<Vec<Payload>, PayloadConversionError>> {
        let c = self.0.clone();
        async move { payloads.into_iter().map(|p| c.open(p)).collect() }.boxed()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn payload(text: &str) -> Payload {
        Payload {
            metadata: [("encoding".to_string(), b"json/plain".to_vec())]
                .into_iter()
                .collect(),
            data: text.as_bytes().to_vec(),
            ..Default::default()
        }
    }

    #[test]
    fn sealed_hides_the_data_and_opens_to_the_original() {
        let c = PayloadCipher::new(&[7u8; 32]);
        let p = payload(r#"{"phone":"010-1234-5678"}"#);
        let sealed = c.seal(&p).unwrap();
        assert_eq!(sealed.metadata["encoding"], SEALED);
        assert!(!String::from_utf8_lossy(&sealed.data).contains("010-1234"));
        assert_ne!(
            c.seal(&p).unwrap().data,
            sealed.data,
            "a fresh nonce each time"
        );
        assert_eq!(c.open(sealed.clone()).unwrap(), p);
        // Not sealed: passes as it is; sealed under another key: refused.
        assert_eq!(c.open(p.clone()).unwrap(), p);
        assert!(PayloadCipher::new(&[8u8; 32]).open(sealed).is_err());
    }
}

//! JSON Web Tokens and keys with openssl: JWS compact serialisation signed
//! RS256/RS384/RS512 or ES256/ES384 (RFC 7515, 7518), JWK public keys
//! (RFC 7517) and our own signing. Nothing here reads the clock or decides
//! whether claims are acceptable: that is `auth::verify`.

use openssl::bn::{BigNum, BigNumContext};
use openssl::ec::{EcGroup, EcKey};
use openssl::ecdsa::EcdsaSig;
use openssl::hash::MessageDigest;
use openssl::nid::Nid;
use openssl::pkey::{HasPublic, PKey, PKeyRef, Private, Public};
use openssl::rsa::Rsa;
use openssl::sign::{Signer, Verifier};
use serde_json::{Map, Value};

use crate::base64::{decode, encode, Alphabet};

/// Largest token accepted, in bytes (headers are bounded by the server too).
pub const MAX_TOKEN_BYTES: usize = 16 * 1024;

/// The signature algorithms accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    RS256,
    RS384,
    RS512,
    ES256,
    ES384,
}

impl Alg {
    pub fn parse(s: &str) -> Option<Alg> {
        Some(match s {
            "RS256" => Alg::RS256,
            "RS384" => Alg::RS384,
            "RS512" => Alg::RS512,
            "ES256" => Alg::ES256,
            "ES384" => Alg::ES384,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Alg::RS256 => "RS256",
            Alg::RS384 => "RS384",
            Alg::RS512 => "RS512",
            Alg::ES256 => "ES256",
            Alg::ES384 => "ES384",
        }
    }

    pub const ALL: [Alg; 5] = [Alg::RS256, Alg::RS384, Alg::RS512, Alg::ES256, Alg::ES384];

    fn digest(self) -> MessageDigest {
        match self {
            Alg::RS256 | Alg::ES256 => MessageDigest::sha256(),
            Alg::RS384 | Alg::ES384 => MessageDigest::sha384(),
            Alg::RS512 => MessageDigest::sha512(),
        }
    }

    fn is_ec(self) -> bool {
        matches!(self, Alg::ES256 | Alg::ES384)
    }

    /// Bytes of each of r and s in a JOSE ECDSA signature.
    fn ec_len(self) -> usize {
        match self {
            Alg::ES256 => 32,
            _ => 48,
        }
    }

    fn curve(self) -> Option<Nid> {
        match self {
            Alg::ES256 => Some(Nid::X9_62_PRIME256V1),
            Alg::ES384 => Some(Nid::SECP384R1),
            _ => None,
        }
    }
}

/// Why a token or key was refused (a bounded label: metrics and logs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JwtError {
    Malformed,
    /// `alg` missing, `none`, HS*, or not one we accept.
    Algorithm,
    /// No key in the issuer's JWKS for the token's `kid` (and `alg`).
    UnknownKey,
    Signature,
}

impl JwtError {
    pub fn reason(self) -> &'static str {
        match self {
            JwtError::Malformed => "malformed",
            JwtError::Algorithm => "algorithm",
            JwtError::UnknownKey => "unknown_key",
            JwtError::Signature => "signature",
        }
    }
}

/// A token split and decoded but not yet verified.
#[derive(Debug)]
pub struct Unverified<'t> {
    pub alg: Alg,
    pub kid: Option<String>,
    pub header: Map<String, Value>,
    pub claims: Map<String, Value>,
    signing_input: &'t str,
    signature: Vec<u8>,
}

/// Splits and decodes a compact JWS. Refuses anything but three base64url
/// parts with JSON object header and claims, and `alg` other than ours.
pub fn decode_token(token: &str) -> Result<Unverified<'_>, JwtError> {
    if token.len() > MAX_TOKEN_BYTES || token.is_empty() {
        return Err(JwtError::Malformed);
    }
    let mut parts = token.split('.');
    let (Some(h), Some(c), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(JwtError::Malformed);
    };
    let header = json_part(h)?;
    let claims = json_part(c)?;
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .ok_or(JwtError::Algorithm)?;
    let alg = Alg::parse(alg).ok_or(JwtError::Algorithm)?;
    if header.get("crit").is_some() {
        // No extension is understood, so none may be critical.
        return Err(JwtError::Malformed);
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(k)) => Some(k.clone()),
        Some(_) => return Err(JwtError::Malformed),
    };
    let signature = decode(s, Alphabet::UrlSafe).ok_or(JwtError::Malformed)?;
    if signature.is_empty() {
        return Err(JwtError::Signature);
    }
    Ok(Unverified {
        alg,
        kid,
        header,
        claims,
        signing_input: &token[..h.len() + 1 + c.len()],
        signature,
    })
}

fn json_part(part: &str) -> Result<Map<String, Value>, JwtError> {
    let bytes = decode(part, Alphabet::UrlSafe).ok_or(JwtError::Malformed)?;
    match serde_json::from_slice::<Value>(&bytes) {
        Ok(Value::Object(m)) => Ok(m),
        _ => Err(JwtError::Malformed),
    }
}

impl Unverified<'_> {
    /// Checks the signature with `key` (which must suit the token's `alg`).
    pub fn verify(&self, key: &Jwk) -> Result<(), JwtError> {
        if !key.suits(self.alg) {
            return Err(JwtError::UnknownKey);
        }
        let der;
        let sig: &[u8] = if self.alg.is_ec() {
            let n = self.alg.ec_len();
            if self.signature.len() != 2 * n {
                return Err(JwtError::Signature);
            }
            let r = BigNum::from_slice(&self.signature[..n]).map_err(|_| JwtError::Signature)?;
            let s = BigNum::from_slice(&self.signature[n..]).map_err(|_| JwtError::Signature)?;
            der = EcdsaSig::from_private_components(r, s)
                .and_then(|sig| sig.to_der())
                .map_err(|_| JwtError::Signature)?;
            &der
        } else {
            &self.signature
        };
        let mut v = Verifier::new(self.alg.digest(), &key.key).map_err(|_| JwtError::Signature)?;
        v.update(self.signing_input.as_bytes())
            .map_err(|_| JwtError::Signature)?;
        match v.verify(sig) {
            Ok(true) => Ok(()),
            _ => Err(JwtError::Signature),
        }
    }
}

/// A public key from a JWKS.
#[derive(Clone)]
pub struct Jwk {
    pub kid: Option<String>,
    /// The key's declared `alg`, if any (then only that alg may use it).
    pub alg: Option<Alg>,
    key: PKey<Public>,
    /// `Some(curve)` for EC keys, `None` for RSA.
    curve: Option<Nid>,
}

impl std::fmt::Debug for Jwk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Jwk")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl Jwk {
    fn suits(&self, alg: Alg) -> bool {
        if self.alg.is_some_and(|a| a != alg) {
            return false;
        }
        match (alg.curve(), self.curve) {
            (None, None) => true,
            (Some(want), Some(have)) => want == have,
            _ => false,
        }
    }

    /// One JWK object (`kty` RSA with `n`/`e`, or EC P-256/P-384 with
    /// `x`/`y`). Keys whose `use` is not `sig` or that carry private parts
    /// are refused.
    pub fn from_json(v: &Value) -> Result<Jwk, String> {
        let o = v.as_object().ok_or("a JWK must be an object")?;
        let s = |k: &str| o.get(k).and_then(Value::as_str);
        if s("use").is_some_and(|u| u != "sig") {
            return Err("key use is not sig".into());
        }
        if o.contains_key("d") {
            return Err("a JWKS must not contain private keys".into());
        }
        let b = |k: &str| -> Result<BigNum, String> {
            let text = s(k).ok_or_else(|| format!("missing {k}"))?;
            let bytes = decode(text, Alphabet::UrlSafe).ok_or_else(|| format!("bad {k}"))?;
            BigNum::from_slice(&bytes).map_err(|_| format!("bad {k}"))
        };
        let alg = match s("alg") {
            None => None,
            Some(a) => Some(Alg::parse(a).ok_or_else(|| format!("alg {a} is not accepted"))?),
        };
        let (key, curve) = match s("kty") {
            Some("RSA") => {
                let rsa = Rsa::from_public_components(b("n")?, b("e")?)
                    .map_err(|_| "bad RSA key".to_string())?;
                if rsa.size() < 256 {
                    return Err("RSA keys must have at least 2048 bits".into());
                }
                (PKey::from_rsa(rsa).map_err(|e| e.to_string())?, None)
            }
            Some("EC") => {
                let nid = match s("crv") {
                    Some("P-256") => Nid::X9_62_PRIME256V1,
                    Some("P-384") => Nid::SECP384R1,
                    _ => return Err("EC keys must be P-256 or P-384".into()),
                };
                let group = EcGroup::from_curve_name(nid).map_err(|e| e.to_string())?;
                let (x, y) = (b("x")?, b("y")?);
                let ec = EcKey::from_public_key_affine_coordinates(&group, &x, &y)
                    .map_err(|_| "bad EC key".to_string())?;
                ec.check_key().map_err(|_| "bad EC key".to_string())?;
                (PKey::from_ec_key(ec).map_err(|e| e.to_string())?, Some(nid))
            }
            _ => return Err("kty must be RSA or EC".into()),
        };
        Ok(Jwk {
            kid: s("kid").map(str::to_owned),
            alg,
            key,
            curve,
        })
    }
}

/// A set of public keys (a JWKS document).
#[derive(Debug, Clone, Default)]
pub struct JwkSet {
    pub keys: Vec<Jwk>,
}

impl JwkSet {
    /// Parses `{"keys": [...]}`; keys that are not usable for signatures
    /// with our algorithms are skipped, a document that is not a JWKS fails.
    pub fn parse(bytes: &[u8]) -> Result<JwkSet, String> {
        let v: Value = serde_json::from_slice(bytes).map_err(|_| "not JSON".to_string())?;
        let keys = v
            .get("keys")
            .and_then(Value::as_array)
            .ok_or("not a JWKS (no keys array)")?;
        let keys: Vec<Jwk> = keys.iter().filter_map(|k| Jwk::from_json(k).ok()).collect();
        Ok(JwkSet { keys })
    }

    /// The key for a token: by `kid` when the token names one, else the only
    /// key that suits `alg`.
    pub fn find(&self, kid: Option<&str>, alg: Alg) -> Option<&Jwk> {
        match kid {
            Some(kid) => self
                .keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid) && k.suits(alg)),
            None => {
                let mut suitable = self.keys.iter().filter(|k| k.suits(alg));
                match (suitable.next(), suitable.next()) {
                    (Some(k), None) => Some(k),
                    _ => None,
                }
            }
        }
    }
}

/// A private signing key of ours.
#[derive(Clone)]
pub struct SigningKey {
    pub kid: String,
    pub alg: Alg,
    key: PKey<Private>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// A new P-384 key (ES384).
    pub fn generate_es384() -> Result<SigningKey, openssl::error::ErrorStack> {
        let group = EcGroup::from_curve_name(Nid::SECP384R1)?;
        let ec = EcKey::generate(&group)?;
        SigningKey::from_pkey(PKey::from_ec_key(ec)?)
    }

    /// A new 2048-bit RSA key for `alg` (RS256/384/512).
    pub fn generate_rsa(alg: Alg) -> Result<SigningKey, openssl::error::ErrorStack> {
        let mut k = SigningKey::from_pkey(PKey::from_rsa(Rsa::generate(2048)?)?)?;
        k.alg = alg;
        Ok(k)
    }

    /// From a PEM private key (PKCS#8 or traditional), RSA (RS384) or EC
    /// P-256/P-384 (ES256/ES384).
    pub fn from_pem(pem: &[u8]) -> Result<SigningKey, String> {
        let key = PKey::private_key_from_pem(pem).map_err(|_| "not a PEM private key")?;
        SigningKey::from_pkey(key).map_err(|e| e.to_string())
    }

    fn from_pkey(key: PKey<Private>) -> Result<SigningKey, openssl::error::ErrorStack> {
        let alg = alg_of(&key);
        let kid = thumbprint_of(&key, alg)?;
        Ok(SigningKey { kid, alg, key })
    }

    pub fn to_pem(&self) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        self.key.private_key_to_pem_pkcs8()
    }

    /// The public JWK (with `kid`, `alg`, `use`).
    pub fn public_jwk(&self) -> Result<Value, openssl::error::ErrorStack> {
        public_jwk_of(&self.key, self.alg, &self.kid)
    }

    /// The public key as PEM (SubjectPublicKeyInfo), for
    /// [`public_jwk_from_pem`].
    pub fn public_pem(&self) -> Result<Vec<u8>, openssl::error::ErrorStack> {
        self.key.public_key_to_pem()
    }

    /// The RFC 7638 thumbprint (SHA-256, base64url): a stable `kid`.
    pub fn thumbprint(&self) -> Result<String, openssl::error::ErrorStack> {
        thumbprint_of(&self.key, self.alg)
    }

    /// Signs `claims` as a compact JWS with `typ` (e.g. `JWT`).
    pub fn sign(&self, claims: &Value, typ: &str) -> Result<String, openssl::error::ErrorStack> {
        let header = serde_json::json!({"alg": self.alg.as_str(), "kid": self.kid, "typ": typ});
        let input = format!(
            "{}.{}",
            encode(header.to_string().as_bytes(), Alphabet::UrlSafe),
            encode(claims.to_string().as_bytes(), Alphabet::UrlSafe)
        );
        let mut signer = Signer::new(self.alg.digest(), &self.key)?;
        signer.update(input.as_bytes())?;
        let der = signer.sign_to_vec()?;
        let sig = if self.alg.is_ec() {
            let n = self.alg.ec_len();
            let sig = EcdsaSig::from_der(&der)?;
            let mut raw = sig.r().to_vec_padded(n as i32)?;
            raw.extend(sig.s().to_vec_padded(n as i32)?);
            raw
        } else {
            der
        };
        Ok(format!("{input}.{}", encode(&sig, Alphabet::UrlSafe)))
    }
}

/// The public JWK (with `kid`, `alg`, `use`) of a PEM public key of ours
/// (a previous signing key): the same JWK, `kid` included, as
/// [`SigningKey::public_jwk`] gave while it was the signing key.
pub fn public_jwk_from_pem(pem: &[u8]) -> Result<Value, String> {
    let key = PKey::public_key_from_pem(pem).map_err(|_| "not a PEM public key".to_string())?;
    let alg = alg_of(&key);
    let kid = thumbprint_of(&key, alg).map_err(|e| e.to_string())?;
    public_jwk_of(&key, alg, &kid).map_err(|e| e.to_string())
}

/// The algorithm our keys of this kind sign with: ES256 for P-256, ES384
/// for other EC keys, RS384 for RSA.
fn alg_of<T: HasPublic>(key: &PKeyRef<T>) -> Alg {
    match key.ec_key() {
        Ok(ec) => match ec.group().curve_name() {
            Some(Nid::X9_62_PRIME256V1) => Alg::ES256,
            _ => Alg::ES384,
        },
        Err(_) => Alg::RS384,
    }
}

fn public_jwk_of<T: HasPublic>(
    key: &PKeyRef<T>,
    alg: Alg,
    kid: &str,
) -> Result<Value, openssl::error::ErrorStack> {
    let mut o = public_members(key, alg)?;
    o.insert("kid".into(), Value::String(kid.to_owned()));
    o.insert("alg".into(), Value::String(alg.as_str().into()));
    o.insert("use".into(), Value::String("sig".into()));
    Ok(Value::Object(o))
}

/// The required members in lexicographic order (RFC 7638).
fn public_members<T: HasPublic>(
    key: &PKeyRef<T>,
    alg: Alg,
) -> Result<Map<String, Value>, openssl::error::ErrorStack> {
    let u = |b: &[u8]| Value::String(encode(b, Alphabet::UrlSafe));
    let mut o = Map::new();
    if let Ok(ec) = key.ec_key() {
        let mut ctx = BigNumContext::new()?;
        let (mut x, mut y) = (BigNum::new()?, BigNum::new()?);
        ec.public_key()
            .affine_coordinates(ec.group(), &mut x, &mut y, &mut ctx)?;
        let (crv, n) = match alg {
            Alg::ES256 => ("P-256", 32),
            _ => ("P-384", 48),
        };
        o.insert("crv".into(), Value::String(crv.into()));
        o.insert("kty".into(), Value::String("EC".into()));
        o.insert("x".into(), u(&x.to_vec_padded(n)?));
        o.insert("y".into(), u(&y.to_vec_padded(n)?));
    } else {
        let rsa = key.rsa()?;
        o.insert("e".into(), u(&rsa.e().to_vec()));
        o.insert("kty".into(), Value::String("RSA".into()));
        o.insert("n".into(), u(&rsa.n().to_vec()));
    }
    Ok(o)
}

/// The RFC 7638 thumbprint (SHA-256, base64url).
fn thumbprint_of<T: HasPublic>(
    key: &PKeyRef<T>,
    alg: Alg,
) -> Result<String, openssl::error::ErrorStack> {
    let members = public_members(key, alg)?;
    let json = serde_json::to_vec(&Value::Object(members)).unwrap_or_default();
    let digest = openssl::hash::hash(MessageDigest::sha256(), &json)?;
    Ok(encode(&digest, Alphabet::UrlSafe))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn set_of(k: &SigningKey) -> JwkSet {
        JwkSet::parse(
            json!({"keys": [k.public_jwk().unwrap()]})
                .to_string()
                .as_bytes(),
        )
        .unwrap()
    }

    #[test]
    fn every_algorithm_round_trips_and_tampering_fails() {
        let keys = [
            SigningKey::generate_rsa(Alg::RS256).unwrap(),
            SigningKey::generate_rsa(Alg::RS384).unwrap(),
            SigningKey::generate_rsa(Alg::RS512).unwrap(),
            SigningKey::from_pkey(
                PKey::from_ec_key(
                    EcKey::generate(&EcGroup::from_curve_name(Nid::X9_62_PRIME256V1).unwrap())
                        .unwrap(),
                )
                .unwrap(),
            )
            .unwrap(),
            SigningKey::generate_es384().unwrap(),
        ];
        for k in &keys {
            let token = k.sign(&json!({"sub": "x"}), "JWT").unwrap();
            let set = set_of(k);
            let u = decode_token(&token).unwrap();
            assert_eq!(u.alg, k.alg);
            let jwk = set.find(u.kid.as_deref(), u.alg).unwrap();
            u.verify(jwk).unwrap();
            // Another claim set under the same signature fails.
            let mut parts: Vec<&str> = token.split('.').collect();
            let forged = encode(br#"{"sub":"y"}"#, Alphabet::UrlSafe);
            parts[1] = &forged;
            let forged = parts.join(".");
            let u = decode_token(&forged).unwrap();
            assert_eq!(u.verify(jwk), Err(JwtError::Signature));
        }
        // A key of another kind never verifies.
        let t = keys[4].sign(&json!({}), "JWT").unwrap();
        let u = decode_token(&t).unwrap();
        assert!(set_of(&keys[0]).find(None, u.alg).is_none());
    }

    #[test]
    fn none_and_hmac_are_refused() {
        for alg in ["none", "HS256", "", "PS256"] {
            let h = encode(
                json!({"alg": alg}).to_string().as_bytes(),
                Alphabet::UrlSafe,
            );
            let c = encode(b"{}", Alphabet::UrlSafe);
            let t = format!("{h}.{c}.AAAA");
            assert_eq!(decode_token(&t).err(), Some(JwtError::Algorithm), "{alg}");
        }
        for bad in ["", "a", "a.b", "a.b.c.d", "!!.!!.!!", "e30.e30."] {
            assert!(decode_token(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn thumbprint_is_stable_across_pem() {
        let k = SigningKey::generate_es384().unwrap();
        let again = SigningKey::from_pem(&k.to_pem().unwrap()).unwrap();
        assert_eq!(k.kid, again.kid);
        // The public half alone gives the same JWK (a previous key).
        let public = public_jwk_from_pem(&k.public_pem().unwrap()).unwrap();
        assert_eq!(public, k.public_jwk().unwrap());
        assert!(public_jwk_from_pem(&k.to_pem().unwrap()).is_err());
    }
}

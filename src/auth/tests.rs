//! The verifier against tokens minted here: valid ones of each algorithm, and every way a token is refused.

use jsonwebtoken::{encode, EncodingKey, Header};
use serde_json::{json, Value};

use super::*;

/// A secret long enough for HS256.
pub(crate) const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const RSA_PRIVATE: &str = include_str!("../../tests/keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../../tests/keys/rsa_public.pem");
const OTHER_RSA_PRIVATE: &str = include_str!("../../tests/keys/other_rsa_private.pem");
const EC_PRIVATE: &str = include_str!("../../tests/keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../../tests/keys/ec_public.pem");

/// A fixed "now": 2026-01-01T00:00:00Z.
const NOW_S: u64 = 1_767_225_600;
const NOW_MS: u64 = NOW_S * 1000;

/// An HS256 token with `claims`, signed with `secret`.
pub(crate) fn hs256(secret: &[u8], claims: &Value) -> String {
    encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .expect("encode")
}

fn rs256(private_pem: &str, claims: &Value) -> String {
    let key = EncodingKey::from_rsa_pem(private_pem.as_bytes()).expect("rsa key");
    encode(&Header::new(Algorithm::RS256), claims, &key).expect("encode")
}

fn es256(claims: &Value) -> String {
    let key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("ec key");
    encode(&Header::new(Algorithm::ES256), claims, &key).expect("encode")
}

/// Claims for `sub` valid for an hour from `NOW_S`.
fn claims(sub: &str) -> Value {
    json!({"sub": sub, "exp": NOW_S + 3600})
}

fn hs_verifier() -> Verifier {
    Verifier::hs256(SECRET).expect("secret")
}

fn rs_verifier() -> Verifier {
    Verifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).expect("rsa public key")
}

fn es_verifier() -> Verifier {
    Verifier::from_public_key_pem(EC_PUBLIC.as_bytes()).expect("ec public key")
}

/// base64url without padding, for hand-made tokens.
fn b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[test]
fn a_valid_hs256_token_gives_its_identity() {
    let token = hs256(
        SECRET,
        &json!({"sub": "ann", "exp": NOW_S + 60, "rooms": ["lobby", "ops"], "dm": false}),
    );
    let identity = hs_verifier().verify(&token, NOW_MS).expect("valid");
    assert_eq!(
        identity,
        Identity {
            user: "ann".into(),
            rooms: Some(vec!["lobby".into(), "ops".into()]),
            may_dm: false,
            expires_unix_ms: (NOW_S + 60) * 1000 + 5000,
        }
    );
    assert!(identity.may_join("ops"));
    assert!(!identity.may_join("Ops"), "room names are compared exactly");
}

#[test]
fn absent_rooms_and_dm_allow_every_room_and_dms() {
    let identity = hs_verifier()
        .verify(&hs256(SECRET, &claims("ann")), NOW_MS)
        .expect("valid");
    assert_eq!(identity.rooms, None);
    assert!(identity.may_join("anything"));
    assert!(identity.may_dm);
}

#[test]
fn a_valid_rs256_token_is_accepted_by_the_rsa_key() {
    let verifier = rs_verifier();
    assert_eq!(verifier.algorithm(), "RS256");
    let identity = verifier
        .verify(&rs256(RSA_PRIVATE, &claims("bob")), NOW_MS)
        .expect("valid");
    assert_eq!(identity.user, "bob");
}

#[test]
fn a_valid_es256_token_is_accepted_by_the_ec_key() {
    let verifier = es_verifier();
    assert_eq!(verifier.algorithm(), "ES256");
    let identity = verifier
        .verify(&es256(&claims("cyd")), NOW_MS)
        .expect("valid");
    assert_eq!(identity.user, "cyd");
}

#[test]
fn an_expired_token_is_refused_as_expired_once_past_the_leeway() {
    let token = hs256(SECRET, &json!({"sub": "ann", "exp": NOW_S}));
    let verifier = hs_verifier();
    assert!(
        verifier.verify(&token, NOW_MS + 4_999).is_ok(),
        "within the leeway"
    );
    assert_eq!(
        verifier.verify(&token, NOW_MS + 5_000),
        Err(TokenError::Expired)
    );
    let strict = hs_verifier().with_leeway(Duration::ZERO);
    assert_eq!(strict.verify(&token, NOW_MS), Err(TokenError::Expired));
    assert!(strict.verify(&token, NOW_MS - 1).is_ok());
}

#[test]
fn a_token_not_yet_valid_is_refused_until_its_nbf_within_the_leeway() {
    let token = hs256(
        SECRET,
        &json!({"sub": "ann", "exp": NOW_S + 3600, "nbf": NOW_S + 60}),
    );
    let verifier = hs_verifier();
    assert_eq!(
        verifier.verify(&token, NOW_MS),
        Err(TokenError::NotYetValid)
    );
    assert!(verifier.verify(&token, NOW_MS + 55_000).is_ok(), "leeway");
}

#[test]
fn a_token_signed_with_another_secret_is_refused() {
    let token = hs256(b"another secret, just as long as the real", &claims("ann"));
    assert_eq!(
        hs_verifier().verify(&token, NOW_MS),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn a_token_signed_with_another_rsa_key_is_refused() {
    let token = rs256(OTHER_RSA_PRIVATE, &claims("ann"));
    assert_eq!(
        rs_verifier().verify(&token, NOW_MS),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn an_hs256_token_against_an_rsa_key_is_refused_even_when_keyed_with_the_public_key() {
    // The classic confusion: HMAC keyed with the public key's bytes, which an attacker knows.
    let token = hs256(RSA_PUBLIC.as_bytes(), &claims("ann"));
    assert_eq!(
        rs_verifier().verify(&token, NOW_MS),
        Err(TokenError::WrongAlgorithm)
    );
    assert_eq!(
        es_verifier().verify(&hs256(EC_PUBLIC.as_bytes(), &claims("ann")), NOW_MS),
        Err(TokenError::WrongAlgorithm)
    );
}

#[test]
fn an_rs256_or_es256_token_against_an_hs256_secret_is_refused() {
    assert_eq!(
        hs_verifier().verify(&rs256(RSA_PRIVATE, &claims("ann")), NOW_MS),
        Err(TokenError::WrongAlgorithm)
    );
    assert_eq!(
        hs_verifier().verify(&es256(&claims("ann")), NOW_MS),
        Err(TokenError::WrongAlgorithm)
    );
}

#[test]
fn an_es256_token_against_an_rsa_key_and_the_reverse_are_refused() {
    assert_eq!(
        rs_verifier().verify(&es256(&claims("ann")), NOW_MS),
        Err(TokenError::WrongAlgorithm)
    );
    assert_eq!(
        es_verifier().verify(&rs256(RSA_PRIVATE, &claims("ann")), NOW_MS),
        Err(TokenError::WrongAlgorithm)
    );
}

#[test]
fn an_unsigned_token_with_alg_none_is_refused() {
    let header = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(claims("ann").to_string().as_bytes());
    for token in [
        format!("{header}.{payload}."),
        format!("{header}.{payload}"),
    ] {
        for verifier in [hs_verifier(), rs_verifier(), es_verifier()] {
            assert_eq!(
                verifier.verify(&token, NOW_MS),
                Err(TokenError::Malformed),
                "{token}"
            );
        }
    }
}

#[test]
fn a_truncated_token_is_refused() {
    let token = hs256(SECRET, &claims("ann"));
    let verifier = hs_verifier();
    let (without_signature, _) = token.rsplit_once('.').expect("three parts");
    for cut in [
        &token[..token.len() - 3],
        &token[..token.len() / 2],
        without_signature,
        "",
        "not.a.jwt",
    ] {
        assert!(
            matches!(
                verifier.verify(cut, NOW_MS),
                Err(TokenError::Malformed | TokenError::BadSignature)
            ),
            "{cut:?}"
        );
    }
}

#[test]
fn a_token_with_a_changed_payload_is_refused() {
    let token = hs256(SECRET, &claims("ann"));
    let parts: Vec<&str> = token.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64(claims("admin").to_string().as_bytes()),
        parts[2]
    );
    assert_eq!(
        hs_verifier().verify(&forged, NOW_MS),
        Err(TokenError::BadSignature)
    );
}

#[test]
fn a_token_without_exp_or_sub_or_with_claims_of_the_wrong_type_is_malformed() {
    let verifier = hs_verifier();
    for claims in [
        json!({"sub": "ann"}),
        json!({"exp": NOW_S + 60}),
        json!({"sub": "ann", "exp": "tomorrow"}),
        json!({"sub": 7, "exp": NOW_S + 60}),
        json!({"sub": "ann", "exp": NOW_S + 60, "rooms": "lobby"}),
        json!({"sub": "ann", "exp": NOW_S + 60, "rooms": [1]}),
        json!({"sub": "ann", "exp": NOW_S + 60, "dm": "no"}),
        json!({"sub": "ann", "exp": NOW_S + 60, "aud": "another-service"}),
    ] {
        assert_eq!(
            verifier.verify(&hs256(SECRET, &claims), NOW_MS),
            Err(TokenError::Malformed),
            "{claims}"
        );
    }
}

#[test]
fn numeric_dates_may_have_a_fraction() {
    let token = hs256(SECRET, &json!({"sub": "ann", "exp": NOW_S as f64 + 0.5}));
    let identity = hs_verifier()
        .with_leeway(Duration::ZERO)
        .verify(&token, NOW_MS)
        .expect("valid");
    assert_eq!(identity.expires_unix_ms, NOW_MS + 500);
}

#[test]
fn a_short_secret_a_private_key_or_a_file_without_a_public_key_is_refused() {
    assert_eq!(
        Verifier::hs256(b"short").map(|_| ()),
        Err(KeyError::SecretTooShort { len: 5 })
    );
    assert!(Verifier::hs256(&[b'x'; MIN_SECRET_BYTES]).is_ok());
    for pem in [
        "not a key",
        "",
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ] {
        assert_eq!(
            Verifier::from_public_key_pem(pem.as_bytes()).map(|_| ()),
            Err(KeyError::UnreadablePublicKey),
            "{pem}"
        );
    }
    for pem in [RSA_PRIVATE, EC_PRIVATE] {
        assert_eq!(
            Verifier::from_public_key_pem(pem.as_bytes()).map(|_| ()),
            Err(KeyError::PrivateKey)
        );
    }
}

#[test]
fn debug_output_names_the_algorithm_but_not_the_key() {
    let text = format!("{:?}", hs_verifier());
    assert!(text.contains("HS256"), "{text}");
    assert!(!text.contains("0123456789"), "{text}");
}

#[test]
fn check_signature_then_identity_at_is_verify() {
    let token = hs256(
        SECRET,
        &json!({"sub": "ann", "exp": NOW_S + 60, "nbf": NOW_S - 1, "rooms": ["lobby"]}),
    );
    let verifier = hs_verifier();
    let signed = verifier.check_signature(&token).expect("signed");
    for now in [NOW_MS, NOW_MS + 64_999, NOW_MS + 65_000, NOW_MS - 10_000] {
        assert_eq!(
            verifier.identity_at(&signed, now),
            verifier.verify(&token, now)
        );
    }
    assert_eq!(signed.exp_unix_ms(), (NOW_S + 60) * 1000);
}

#[test]
fn an_expired_token_with_a_negative_nbf_is_refused_as_expired() {
    let token = hs256(SECRET, &json!({"sub": "ann", "exp": NOW_S - 60, "nbf": -1}));
    assert_eq!(
        hs_verifier().verify(&token, NOW_MS),
        Err(TokenError::Expired)
    );
    let fresh = hs256(SECRET, &json!({"sub": "ann", "exp": NOW_S + 60, "nbf": -1}));
    assert_eq!(
        hs_verifier().verify(&fresh, NOW_MS),
        Err(TokenError::Malformed)
    );
}

#[test]
fn only_rs256_and_es256_are_asymmetric() {
    assert!(!hs_verifier().is_asymmetric());
    assert!(rs_verifier().is_asymmetric());
    assert!(es_verifier().is_asymmetric());
}

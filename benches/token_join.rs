//! What a connection token adds to a join: `auth::Verifier::verify` alone, and the chat's whole join path with a
//! token next to the same join in open mode, for HS256, ES256 and RS256.
//!
//! A plain `harness = false` bench: `cargo bench --bench token_join`. Tokens are minted before timing (the
//! application's work, not the server's), each for its own `sub`, with `rooms` and an hour to live. The join path
//! is `Chat::connect` then `Chat::handle_text` of a v2 `join` carrying the token, for `JOINS` new connections with
//! different names spread over 20 rooms of a fresh chat; in open mode the same joins without a token and without
//! `connect` (which does nothing there). Each figure is the median of `RUNS` runs, in microseconds per join.

use std::hint::black_box;
use std::time::Instant;

use jsonwebtoken::{encode, Algorithm, EncodingKey, Header};
use roomcast::auth::Verifier;
use roomcast::chat::{Chat, ChatConfig, Now};
use serde_json::json;

const RUNS: usize = 11;
const JOINS: usize = 2_000;
const NOW_S: u64 = 1_767_225_600;
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef-bench";
const EC_PRIVATE: &str = include_str!("../tests/keys/ec_private.pem");
const EC_PUBLIC: &str = include_str!("../tests/keys/ec_public.pem");
const RSA_PRIVATE: &str = include_str!("../tests/keys/rsa_private.pem");
const RSA_PUBLIC: &str = include_str!("../tests/keys/rsa_public.pem");

/// The clock every join sees.
fn now() -> Now {
    Now {
        unix_ms: NOW_S * 1000,
        mono_ms: 1,
    }
}

/// The `i`-th joiner's name and room.
fn who(i: usize) -> (String, String) {
    (format!("user{i}"), format!("room{}", i % 20))
}

/// One token per joiner, signed with `key` by `algorithm`.
fn tokens(algorithm: Algorithm, key: &EncodingKey) -> Vec<String> {
    (0..JOINS)
        .map(|i| {
            let (user, room) = who(i);
            let claims = json!({"sub": user, "exp": NOW_S + 3600, "rooms": [room]});
            encode(&Header::new(algorithm), &claims, key).expect("signing works")
        })
        .collect()
}

/// The `join` frames, with the tokens when given.
fn joins(tokens: Option<&[String]>) -> Vec<String> {
    (0..JOINS)
        .map(|i| {
            let (user, room) = who(i);
            match tokens {
                Some(tokens) => {
                    json!({"type": "join", "userId": user, "room": room, "v": 2, "token": tokens[i]})
                }
                None => json!({"type": "join", "userId": user, "room": room, "v": 2}),
            }
            .to_string()
        })
        .collect()
}

/// The median of `RUNS` runs of `run`, each returning the microseconds per operation.
fn median(mut run: impl FnMut() -> f64) -> f64 {
    let mut figures: Vec<f64> = (0..RUNS).map(|_| run()).collect();
    figures.sort_by(f64::total_cmp);
    figures[RUNS / 2]
}

/// Microseconds per `verify` of each token.
fn verify_us(verifier: &Verifier, tokens: &[String]) -> f64 {
    median(|| {
        let start = Instant::now();
        for token in tokens {
            black_box(
                verifier
                    .verify(black_box(token), NOW_S * 1000)
                    .expect("valid"),
            );
        }
        start.elapsed().as_secs_f64() * 1e6 / tokens.len() as f64
    })
}

/// Microseconds per join of a fresh chat, requiring tokens from `verifier` when given.
fn join_us(verifier: Option<&Verifier>, frames: &[String]) -> f64 {
    median(|| {
        let mut chat = Chat::new(ChatConfig::default(), [7; 32]);
        if let Some(verifier) = verifier {
            chat.require_tokens(verifier.clone(), 10_000);
        }
        let mut out = Vec::new();
        let start = Instant::now();
        for (client, frame) in frames.iter().enumerate() {
            if verifier.is_some() {
                chat.connect(client, None, now(), &mut out);
            }
            chat.handle_text(client, frame, now(), &mut out);
            out.clear();
        }
        let us = start.elapsed().as_secs_f64() * 1e6 / frames.len() as f64;
        assert_eq!(chat.member_count(), frames.len(), "every join was admitted");
        us
    })
}

fn main() {
    let hs_tokens = tokens(Algorithm::HS256, &EncodingKey::from_secret(SECRET));
    let es_key = EncodingKey::from_ec_pem(EC_PRIVATE.as_bytes()).expect("the EC test key");
    let es_tokens = tokens(Algorithm::ES256, &es_key);
    let hs = Verifier::hs256(SECRET).expect("a long secret");
    let es = Verifier::from_public_key_pem(EC_PUBLIC.as_bytes()).expect("the EC test key");
    let rs_key = EncodingKey::from_rsa_pem(RSA_PRIVATE.as_bytes()).expect("the RSA test key");
    let rs_tokens = tokens(Algorithm::RS256, &rs_key);
    let rs = Verifier::from_public_key_pem(RSA_PUBLIC.as_bytes()).expect("the RSA test key");

    let open = join_us(None, &joins(None));
    println!("join, open mode: {open:.2} us");
    for (name, verifier, tokens) in [
        ("HS256", &hs, &hs_tokens),
        ("ES256", &es, &es_tokens),
        ("RS256", &rs, &rs_tokens),
    ] {
        let verify = verify_us(verifier, tokens);
        let with_token = join_us(Some(verifier), &joins(Some(tokens)));
        println!(
            "{name}: verify {verify:.2} us; join with token {with_token:.2} us, {:+.2} us over open mode",
            with_token - open
        );
    }
}

//! Who a connection is: signed connection tokens (JWT, RFC 7519) checked against the one key the operator gave.
//!
//! Owns the key (an HS256 secret, or an RS256 or ES256 public key in PEM), the one algorithm it accepts, and turning
//! a token into an [`Identity`]: its `sub`, the rooms it may join, whether it may send DMs, and when it stops being
//! valid. The signature, the header's algorithm and the claims' JSON are checked by the `jsonwebtoken` crate; this
//! file only pins the algorithm to the key and compares the time claims with the time the caller passes in. It must
//! not read a clock (so a test can verify at any instant), and must not decide what an identity may do in the chat:
//! the chat does, from the plain data in [`Identity`]. Nothing here logs a token. The check comes in two halves
//! ([`Verifier::check_signature`], which is costly and needs no clock, then [`Verifier::identity_at`]) so that the
//! first may run off the event loop and be remembered in a [`TokenCache`] (`cache.rs`).

use std::fmt;
use std::time::Duration;

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde::Deserialize;

/// The shortest HS256 secret accepted, in bytes. RFC 7518 3.2: a key of the same size as the hash output (256 bits
/// for HS256) or larger MUST be used.
pub const MIN_SECRET_BYTES: usize = 32;

/// The leeway for `exp` and `nbf` unless the operator sets another: clocks of the token's issuer and of this
/// server may disagree by this much (RFC 7519 4.1.4: "some small leeway, usually no more than a few minutes").
pub const DEFAULT_LEEWAY: Duration = Duration::from_secs(5);

/// What every PEM label of a private key ends with (`PRIVATE KEY`, `RSA PRIVATE KEY`, `EC PRIVATE KEY`).
const PRIVATE_LABEL: &[u8] = b"PRIVATE KEY-----";

/// Checks connection tokens against one key, with one algorithm.
#[derive(Clone)]
pub struct Verifier {
    key: DecodingKey,
    /// The crate's checks: the one algorithm the key is for, and `exp` and `sub` present. Its time checks are off:
    /// [`Verifier::verify`] compares the times with the caller's clock.
    validation: Validation,
    algorithm: Algorithm,
    leeway_ms: u64,
}

impl fmt::Debug for Verifier {
    // The key stays out of logs and of `Config`'s Debug output: only which algorithm it is for.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Verifier")
            .field("algorithm", &self.algorithm)
            .field("leeway_ms", &self.leeway_ms)
            .finish_non_exhaustive()
    }
}

/// Why a key cannot be used.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum KeyError {
    /// An HS256 secret shorter than [`MIN_SECRET_BYTES`].
    SecretTooShort {
        /// Its length in bytes.
        len: usize,
    },
    /// PEM that holds neither an RSA nor an EC public key the crate can read.
    UnreadablePublicKey,
    /// PEM that holds a private key: the server needs only the public half, and should never hold the other.
    PrivateKey,
}

impl fmt::Display for KeyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyError::SecretTooShort { len } => write!(
                f,
                "the HS256 secret is {len} bytes; it must be at least {MIN_SECRET_BYTES} (RFC 7518 3.2)"
            ),
            KeyError::UnreadablePublicKey => f.write_str(
                "the file holds no RSA or EC (P-256) public key in PEM (-----BEGIN PUBLIC KEY-----)",
            ),
            KeyError::PrivateKey => f.write_str(
                "the file holds a private key; give the server the public key only (openssl pkey -pubout)",
            ),
        }
    }
}

impl std::error::Error for KeyError {}

/// Why a token is refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenError {
    /// Not a JWT at all, or one whose header or claims cannot be read (a claim of the wrong type, a missing `exp`
    /// or `sub`, an `aud` this server is not named in, an unknown algorithm such as `none`).
    Malformed,
    /// Signed with another algorithm than the configured key's (RFC 8725 3.1: an HS256 token against an RS256 key,
    /// or the reverse).
    WrongAlgorithm,
    /// The signature does not verify with the configured key.
    BadSignature,
    /// Its `nbf` is still in the future, beyond the leeway.
    NotYetValid,
    /// Its `exp` has passed, beyond the leeway.
    Expired,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TokenError::Malformed => "the token is not a JWT this server can read",
            TokenError::WrongAlgorithm => {
                "the token is signed with another algorithm than the server's key"
            }
            TokenError::BadSignature => "the token's signature does not verify",
            TokenError::NotYetValid => "the token is not valid yet (nbf)",
            TokenError::Expired => "the token has expired (exp)",
        })
    }
}

impl std::error::Error for TokenError {}

/// What a valid token says about its bearer: plain data for the chat to decide with.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `sub` (RFC 7519 4.1.2): the userId the bearer joins as, the name shown.
    pub user: String,
    /// `rooms`: the exact names of the rooms it may join; `None` (the claim absent) for any room.
    pub rooms: Option<Vec<String>>,
    /// `dm`: false when it may not send private messages (the claim absent: it may).
    pub may_dm: bool,
    /// Milliseconds since the Unix epoch from which the token is refused: its `exp` plus the leeway.
    pub expires_unix_ms: u64,
}

impl Identity {
    /// True if the token lets its bearer join room `room` (compared exactly).
    pub fn may_join(&self, room: &str) -> bool {
        self.rooms
            .as_ref()
            .is_none_or(|rooms| rooms.iter().any(|allowed| allowed == room))
    }
}

/// The claims as they are read from a token.
#[derive(Deserialize)]
struct Claims {
    sub: String,
    exp: NumericDate,
    #[serde(default)]
    nbf: Option<NumericDate>,
    #[serde(default)]
    rooms: Option<Vec<String>>,
    #[serde(default)]
    dm: Option<bool>,
}

/// RFC 7519 2: a NumericDate is a JSON number of seconds since the epoch, which may have a fraction.
#[derive(Clone, Copy, Deserialize)]
struct NumericDate(f64);

impl NumericDate {
    /// In whole milliseconds; `None` for a negative date. A float past `u64::MAX` saturates, which `exp` may.
    fn unix_ms(self) -> Option<u64> {
        (self.0 >= 0.0).then_some((self.0 * 1000.0) as u64)
    }
}

impl Verifier {
    /// A verifier of HS256 tokens signed with `secret` (RFC 7518 3.2).
    pub fn hs256(secret: &[u8]) -> Result<Verifier, KeyError> {
        if secret.len() < MIN_SECRET_BYTES {
            return Err(KeyError::SecretTooShort { len: secret.len() });
        }
        Ok(Verifier::with_key(
            DecodingKey::from_secret(secret),
            Algorithm::HS256,
        ))
    }

    /// A verifier of tokens signed with the private half of the public key in `pem`: RS256 for an RSA key, ES256
    /// for an EC key (P-256), each the only algorithm accepted.
    pub fn from_public_key_pem(pem: &[u8]) -> Result<Verifier, KeyError> {
        if pem.windows(PRIVATE_LABEL.len()).any(|w| w == PRIVATE_LABEL) {
            return Err(KeyError::PrivateKey);
        }
        if let Ok(key) = DecodingKey::from_rsa_pem(pem) {
            return Ok(Verifier::with_key(key, Algorithm::RS256));
        }
        match DecodingKey::from_ec_pem(pem) {
            Ok(key) => Ok(Verifier::with_key(key, Algorithm::ES256)),
            Err(_) => Err(KeyError::UnreadablePublicKey),
        }
    }

    fn with_key(key: DecodingKey, algorithm: Algorithm) -> Verifier {
        // RFC 8725 3.1: the algorithm is the key's, never the token's to choose: one algorithm is accepted, and
        // `none` is not an algorithm the crate knows.
        let mut validation = Validation::new(algorithm);
        validation.set_required_spec_claims(&["exp", "sub"]);
        validation.validate_exp = false;
        validation.validate_nbf = false;
        validation.leeway = 0;
        Verifier {
            key,
            validation,
            algorithm,
            leeway_ms: duration_ms(DEFAULT_LEEWAY),
        }
    }

    /// The same verifier with another leeway for `exp` and `nbf`.
    pub fn with_leeway(mut self, leeway: Duration) -> Verifier {
        self.leeway_ms = duration_ms(leeway);
        self
    }

    /// The one algorithm accepted: `HS256`, `RS256` or `ES256`.
    pub fn algorithm(&self) -> &'static str {
        match self.algorithm {
            Algorithm::RS256 => "RS256",
            Algorithm::ES256 => "ES256",
            _ => "HS256",
        }
    }

    /// True for RS256 and ES256, whose signature check costs tens to hundreds of microseconds (a public-key
    /// operation): worth doing on another thread than the event loop's. HS256 (one HMAC) is not.
    pub fn is_asymmetric(&self) -> bool {
        matches!(self.algorithm, Algorithm::RS256 | Algorithm::ES256)
    }

    /// The identity `token` carries, if it is signed with the key's algorithm by the key, and valid at
    /// `now_unix_ms` (milliseconds since the Unix epoch) within the leeway: [`Verifier::check_signature`], then
    /// [`Verifier::identity_at`].
    pub fn verify(&self, token: &str, now_unix_ms: u64) -> Result<Identity, TokenError> {
        let signed = self.check_signature(token)?;
        self.identity_at(&signed, now_unix_ms)
    }

    /// The expensive half of [`Verifier::verify`], which needs no clock: the header's algorithm, the signature and
    /// the claims' JSON. What it returns holds for as long as the key is the same, so it may be computed on another
    /// thread or kept in a [`TokenCache`]; the times are compared later, by [`Verifier::identity_at`].
    pub fn check_signature(&self, token: &str) -> Result<SignedToken, TokenError> {
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation)
            .map_err(|e| refusal(e.kind()))?;
        let claims = data.claims;
        let exp_unix_ms = claims.exp.unix_ms().ok_or(TokenError::Malformed)?;
        let nbf_unix_ms = claims.nbf.map(NumericDate::unix_ms);
        Ok(SignedToken {
            identity: Identity {
                user: claims.sub,
                rooms: claims.rooms,
                may_dm: claims.dm.unwrap_or(true),
                expires_unix_ms: exp_unix_ms,
            },
            exp_unix_ms,
            nbf_unix_ms,
        })
    }

    /// The cheap half of [`Verifier::verify`]: the identity of a token whose signature checked out, if it is valid
    /// at `now_unix_ms` within the leeway.
    pub fn identity_at(
        &self,
        signed: &SignedToken,
        now_unix_ms: u64,
    ) -> Result<Identity, TokenError> {
        // RFC 7519 4.1.4: the current time MUST be before `exp` (with a small leeway for clock skew).
        let expires_unix_ms = signed.exp_unix_ms.saturating_add(self.leeway_ms);
        if now_unix_ms >= expires_unix_ms {
            return Err(TokenError::Expired);
        }
        // RFC 7519 4.1.5: the current time MUST be after or equal to `nbf` (the same leeway).
        if let Some(nbf) = signed.nbf_unix_ms {
            // A negative `nbf` is refused here, after `exp`, as the one-step check always did.
            let nbf = nbf.ok_or(TokenError::Malformed)?;
            if now_unix_ms.saturating_add(self.leeway_ms) < nbf {
                return Err(TokenError::NotYetValid);
            }
        }
        Ok(Identity {
            expires_unix_ms,
            ..signed.identity.clone()
        })
    }
}

/// A token whose algorithm, signature and claims checked out ([`Verifier::check_signature`]), its times not yet
/// compared with any clock.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SignedToken {
    /// What it says, its `expires_unix_ms` the bare `exp` (no leeway yet).
    identity: Identity,
    /// `exp`, in milliseconds since the Unix epoch.
    exp_unix_ms: u64,
    /// `nbf`, in milliseconds since the Unix epoch, if it has one (`Some(None)`: a negative one, malformed).
    nbf_unix_ms: Option<Option<u64>>,
}

impl SignedToken {
    /// Its `exp`, in milliseconds since the Unix epoch, without the leeway.
    pub fn exp_unix_ms(&self) -> u64 {
        self.exp_unix_ms
    }
}

/// The refusal for an error of the crate.
fn refusal(kind: &ErrorKind) -> TokenError {
    match kind {
        ErrorKind::InvalidAlgorithm => TokenError::WrongAlgorithm,
        ErrorKind::InvalidSignature => TokenError::BadSignature,
        _ => TokenError::Malformed,
    }
}

/// A duration in whole milliseconds, saturating.
fn duration_ms(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

mod cache;

pub use cache::{token_digest, TokenCache, TokenDigest};

#[cfg(test)]
pub(crate) mod tests;

//! RFC 7692 5 and 7.1: agreeing on permessage-deflate during the opening handshake, in both roles.
//!
//! Owns the meaning of the four parameters (7.1.1.1 `server_no_context_takeover`, 7.1.1.2
//! `client_no_context_takeover`, 7.1.2.1 `server_max_window_bits`, 7.1.2.2 `client_max_window_bits`), the
//! server's choice among a client's offers, the answer it writes, and the client's check of that answer. Input is
//! the already parsed header (`extensions::parse_extensions`); this file never sees raw bytes, sockets or the
//! compressed data itself (that is `codec`).

use std::fmt;

use crate::protocol::extensions::ExtensionOffer;

/// The extension's registered name (RFC 7692 7).
pub const EXTENSION_NAME: &str = "permessage-deflate";

/// What our client offers: permessage-deflate, and leave to the server which window we compress with.
///
/// RFC 7692 7.1.2.2: naming `client_max_window_bits` without a value tells the server it may pick our window.
pub const CLIENT_OFFER: &str = "permessage-deflate; client_max_window_bits";

/// The smallest window zlib (and zlib-rs) can deflate raw data with: a 256-byte window (8 bits) is not one of
/// theirs. Messages with an 8-bit window are compressed by our own `QuickCompressor`, each on its own.
pub const MIN_COMPRESS_WINDOW_BITS: u8 = 9;

/// The smallest LZ77 window RFC 7692 7.1.2 allows, 256 bytes.
pub const MIN_WINDOW_BITS: u8 = 8;

/// The largest LZ77 window, 32 KiB, which is also the default when no parameter names one (RFC 7692 7.1.2).
pub const MAX_WINDOW_BITS: u8 = 15;

const SERVER_NO_CONTEXT_TAKEOVER: &str = "server_no_context_takeover";
const CLIENT_NO_CONTEXT_TAKEOVER: &str = "client_no_context_takeover";
const SERVER_MAX_WINDOW_BITS: &str = "server_max_window_bits";
const CLIENT_MAX_WINDOW_BITS: &str = "client_max_window_bits";

/// The agreed configuration, exactly as the server's answer states it. Both roles build it: the server from the
/// offer it accepted, the client from the answer it received.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct DeflateParams {
    /// The server resets its compression context after every message (7.1.1.1).
    pub server_no_context_takeover: bool,
    /// The client resets its compression context after every message (7.1.1.2).
    pub client_no_context_takeover: bool,
    /// The server's LZ77 window as the answer names it, 8..=15; `None` when unnamed, which means 15 (7.1.2.1).
    pub server_max_window_bits: Option<u8>,
    /// The client's LZ77 window as the answer names it, 8..=15; `None` when unnamed, which means 15 (7.1.2.2).
    pub client_max_window_bits: Option<u8>,
}

impl DeflateParams {
    /// The window the server compresses with and the client inflates with.
    pub fn server_window_bits(&self) -> u8 {
        self.server_max_window_bits.unwrap_or(MAX_WINDOW_BITS)
    }

    /// The window the client compresses with and the server inflates with.
    pub fn client_window_bits(&self) -> u8 {
        self.client_max_window_bits.unwrap_or(MAX_WINDOW_BITS)
    }

    /// The answer as one extension-list element.
    pub fn to_extension(&self) -> ExtensionOffer {
        let mut params = Vec::new();
        if self.server_no_context_takeover {
            params.push((SERVER_NO_CONTEXT_TAKEOVER.to_string(), None));
        }
        if self.client_no_context_takeover {
            params.push((CLIENT_NO_CONTEXT_TAKEOVER.to_string(), None));
        }
        if let Some(bits) = self.server_max_window_bits {
            params.push((SERVER_MAX_WINDOW_BITS.to_string(), Some(bits.to_string())));
        }
        if let Some(bits) = self.client_max_window_bits {
            params.push((CLIENT_MAX_WINDOW_BITS.to_string(), Some(bits.to_string())));
        }
        ExtensionOffer {
            name: EXTENSION_NAME.to_string(),
            params,
        }
    }

    /// The value of the `Sec-WebSocket-Extensions` header of the server's 101 response.
    ///
    /// It names only what `negotiate_server` put in the params, and that never includes a parameter the RFC
    /// forbids in the answer to the accepted offer (such as `client_max_window_bits` when the client did not
    /// offer it, 7.1.2.2).
    pub fn response_header(&self) -> String {
        self.to_extension().to_string()
    }
}

/// Whether the server answers a `*_no_context_takeover` parameter.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TakeoverPolicy {
    /// Name the parameter in every answer, offered or not (7.1.1.1 and 7.1.1.2 allow a server to).
    Forbid,
    /// Name it when the accepted offer did. For `server_no_context_takeover` that is a client's demand the server
    /// must meet (7.1.1.1); for `client_no_context_takeover` it confirms the client's own promise (7.1.1.2).
    AsOffered,
}

/// What a server is willing to agree to. The caller picks one per route.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ServerDeflatePolicy {
    /// When the server resets its compressor between messages. `Forbid` lets one compressed frame be shared by
    /// every recipient of a broadcast.
    pub server_context: TakeoverPolicy,
    /// When the client must reset its compressor between messages. `Forbid` means inflate state need only live
    /// while one message arrives.
    pub client_context: TakeoverPolicy,
    /// The largest window the server compresses with; taken as 8..=15. Below 15 it is named in every answer
    /// (7.1.2.1 allows that even when not offered).
    pub server_max_window_bits: u8,
    /// The largest window the server asks a client to compress with, when the client's offer lets it ask
    /// (7.1.2.2); taken as 8..=15.
    pub client_max_window_bits: u8,
}

impl ServerDeflatePolicy {
    /// The chat route: no context kept in either direction, so one compressed broadcast serves every member and
    /// no zlib state outlives a message.
    pub const NO_CONTEXT_TAKEOVER: ServerDeflatePolicy = ServerDeflatePolicy {
        server_context: TakeoverPolicy::Forbid,
        client_context: TakeoverPolicy::Forbid,
        server_max_window_bits: MAX_WINDOW_BITS,
        client_max_window_bits: MAX_WINDOW_BITS,
    };

    /// The echo route: context takeover exactly as offered, full windows.
    pub const AS_OFFERED: ServerDeflatePolicy = ServerDeflatePolicy {
        server_context: TakeoverPolicy::AsOffered,
        client_context: TakeoverPolicy::AsOffered,
        server_max_window_bits: MAX_WINDOW_BITS,
        client_max_window_bits: MAX_WINDOW_BITS,
    };
}

/// The server side of RFC 7692 5: accepts the first permessage-deflate offer it can honour and declines the rest.
///
/// Other extensions are ignored (declined). An offer with an unknown parameter, a duplicated parameter or an
/// invalid value is declined (7). Every window from 8 to 15 bits can be honoured. `None` means the upgrade goes on
/// without compression.
pub fn negotiate_server(
    offers: &[ExtensionOffer],
    policy: &ServerDeflatePolicy,
) -> Option<DeflateParams> {
    offers
        .iter()
        .filter(|offer| offer.is(EXTENSION_NAME))
        .find_map(|offer| {
            let offered = read_params(&offer.params, Side::Offer).ok()?;
            answer_offer(&offered, policy)
        })
}

/// The server's answer to one well-formed offer, or `None` if it cannot honour it.
fn answer_offer(offered: &Params, policy: &ServerDeflatePolicy) -> Option<DeflateParams> {
    let server_limit = policy
        .server_max_window_bits
        .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    let client_limit = policy
        .client_max_window_bits
        .clamp(MIN_WINDOW_BITS, MAX_WINDOW_BITS);
    let server_max_window_bits = match offered.server_max_window_bits {
        // 7.1.2.1: accept by naming the same or a smaller value.
        Some(bits) => Some(bits.min(server_limit)),
        // 7.1.2.1: a server MAY name it even when it was not offered.
        None => (server_limit < MAX_WINDOW_BITS).then_some(server_limit),
    };
    let client_max_window_bits = match offered.client_max_window_bits {
        // 7.1.2.2: not offered, so the answer MUST NOT name it.
        None => None,
        // 7.1.2.2: offered without a value: the server picks; naming 15 would change nothing.
        Some(None) => (client_limit < MAX_WINDOW_BITS).then_some(client_limit),
        // 7.1.2.2: a value no greater than the offered one.
        Some(Some(bits)) => {
            let bits = bits.min(client_limit);
            (bits < MAX_WINDOW_BITS).then_some(bits)
        }
    };
    Some(DeflateParams {
        // 7.1.1.1: an offered server_no_context_takeover MUST be in the answer.
        server_no_context_takeover: offered.server_no_context_takeover
            || policy.server_context == TakeoverPolicy::Forbid,
        client_no_context_takeover: policy.client_context == TakeoverPolicy::Forbid
            || offered.client_no_context_takeover,
        server_max_window_bits,
        client_max_window_bits,
    })
}

/// Why a client refuses the server's answer. Each one fails the connection (RFC 6455 4.1, RFC 7692 5 and 7).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AnswerError {
    /// The answer accepts an extension we did not offer.
    UnofferedExtension(String),
    /// The answer accepts permessage-deflate more than once; we made one offer.
    RepeatedExtension,
    /// A parameter that is not defined for an answer, or that we cannot have been offered.
    UnknownParameter(String),
    /// A parameter named twice.
    DuplicateParameter(String),
    /// A parameter with a value it may not have, without one it needs, or out of range.
    InvalidValue(String),
}

impl fmt::Display for AnswerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AnswerError::UnofferedExtension(name) => {
                write!(
                    f,
                    "the server accepted extension {name:?}, which was not offered"
                )
            }
            AnswerError::RepeatedExtension => {
                f.write_str("the server accepted permessage-deflate more than once")
            }
            AnswerError::UnknownParameter(name) => {
                write!(
                    f,
                    "permessage-deflate answer has unknown parameter {name:?}"
                )
            }
            AnswerError::DuplicateParameter(name) => {
                write!(f, "permessage-deflate answer names {name:?} twice")
            }
            AnswerError::InvalidValue(name) => {
                write!(
                    f,
                    "permessage-deflate answer has an invalid value for {name:?}"
                )
            }
        }
    }
}

impl std::error::Error for AnswerError {}

/// The client side: checks the extensions a server's 101 accepted against `CLIENT_OFFER`.
///
/// `Ok(None)`: the server declined (no extension in the answer). `Ok(Some)`: the agreed parameters. An error means
/// the client must fail the connection.
pub fn accept_server_answer(
    answer: &[ExtensionOffer],
) -> Result<Option<DeflateParams>, AnswerError> {
    let mut agreed = None;
    for extension in answer {
        // RFC 6455 9.1: the server may only answer with extensions the client offered.
        if !extension.is(EXTENSION_NAME) {
            return Err(AnswerError::UnofferedExtension(extension.name.clone()));
        }
        // RFC 7692 5: each accepted element answers one offer; we made one.
        if agreed.is_some() {
            return Err(AnswerError::RepeatedExtension);
        }
        let params = read_params(&extension.params, Side::Answer).map_err(|e| match e {
            ParamError::Unknown(name) => AnswerError::UnknownParameter(name),
            ParamError::Duplicate(name) => AnswerError::DuplicateParameter(name),
            ParamError::InvalidValue(name) => AnswerError::InvalidValue(name),
        })?;
        // 7.1.2.2: any window from 8 to 15 is one we can compress with (8 by `QuickCompressor`).
        let client_max_window_bits = params.client_max_window_bits.flatten();
        agreed = Some(DeflateParams {
            server_no_context_takeover: params.server_no_context_takeover,
            client_no_context_takeover: params.client_no_context_takeover,
            // 7.1.2.1: the server may name its window even though we did not offer one; we inflate any window.
            server_max_window_bits: params.server_max_window_bits,
            client_max_window_bits,
        });
    }
    Ok(agreed)
}

/// Whether a parameter list is a client's offer or a server's answer; their rules differ slightly.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Side {
    Offer,
    Answer,
}

/// The four parameters of one offer or answer, read and checked for form.
#[derive(Default)]
struct Params {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// Outer `Some`: named; inner `Some`: with a value (only an offer may leave it out).
    client_max_window_bits: Option<Option<u8>>,
}

enum ParamError {
    Unknown(String),
    Duplicate(String),
    InvalidValue(String),
}

/// RFC 7692 7: rejects unknown parameters, duplicates and invalid values; parameter names compare ASCII
/// case-insensitively.
fn read_params(params: &[(String, Option<String>)], side: Side) -> Result<Params, ParamError> {
    let mut read = Params::default();
    let mut seen = [false; 4];
    for (name, value) in params {
        let index = [
            SERVER_NO_CONTEXT_TAKEOVER,
            CLIENT_NO_CONTEXT_TAKEOVER,
            SERVER_MAX_WINDOW_BITS,
            CLIENT_MAX_WINDOW_BITS,
        ]
        .iter()
        .position(|known| name.eq_ignore_ascii_case(known))
        .ok_or_else(|| ParamError::Unknown(name.clone()))?;
        if std::mem::replace(&mut seen[index], true) {
            return Err(ParamError::Duplicate(name.clone()));
        }
        let invalid = || ParamError::InvalidValue(name.clone());
        match index {
            // 7.1.1.1 and 7.1.1.2: these parameters have no value.
            0 | 1 => {
                if value.is_some() {
                    return Err(invalid());
                }
                if index == 0 {
                    read.server_no_context_takeover = true;
                } else {
                    read.client_no_context_takeover = true;
                }
            }
            // 7.1.2.1: always with a value.
            2 => {
                let bits = value.as_deref().and_then(window_bits).ok_or_else(invalid)?;
                read.server_max_window_bits = Some(bits);
            }
            // 7.1.2.2: an offer may leave the value out, an answer must give one.
            _ => {
                let bits = match value.as_deref() {
                    None if side == Side::Offer => None,
                    None => return Err(invalid()),
                    Some(text) => Some(window_bits(text).ok_or_else(invalid)?),
                };
                read.client_max_window_bits = Some(bits);
            }
        }
    }
    Ok(read)
}

/// 7.1.2.1 and 7.1.2.2: "a decimal integer value without leading zeroes between 8 to 15, inclusive".
fn window_bits(text: &str) -> Option<u8> {
    if text.starts_with('0') || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let bits: u8 = text.parse().ok()?;
    (8..=MAX_WINDOW_BITS).contains(&bits).then_some(bits)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::extensions::parse_extensions;

    fn offers(header: &str) -> Vec<ExtensionOffer> {
        parse_extensions([header.as_bytes()]).unwrap()
    }

    fn server(header: &str, policy: &ServerDeflatePolicy) -> Option<DeflateParams> {
        negotiate_server(&offers(header), policy)
    }

    fn answer(header: &str) -> Result<Option<DeflateParams>, AnswerError> {
        accept_server_answer(&offers(header))
    }

    const ECHO: ServerDeflatePolicy = ServerDeflatePolicy::AS_OFFERED;
    const CHAT: ServerDeflatePolicy = ServerDeflatePolicy::NO_CONTEXT_TAKEOVER;

    /// Autobahn's client offers (autobahn 0.10.9 `PerMessageDeflateOffer.getExtensionString`, cases 12.* and
    /// 13.1-13.7), with the answer our echo route writes to each.
    const AUTOBAHN_OFFERS: [(&str, &str); 7] = [
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits",
            "permessage-deflate; client_no_context_takeover",
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover",
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=9",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=9",
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_max_window_bits=15",
            "permessage-deflate; client_no_context_takeover; server_max_window_bits=15",
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=9",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9",
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=15",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=15",
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover; server_max_window_bits=9, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits; server_no_context_takeover, \
             permessage-deflate; client_no_context_takeover; client_max_window_bits",
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover; server_max_window_bits=9",
        ),
    ];

    /// Autobahn's server answers to `CLIENT_OFFER` (autobahn 0.10.9 `PerMessageDeflateOfferAccept`, accept1-accept7
    /// of cases 13.1-13.7; 12.* use accept1), with the parameters our client must take from each.
    const AUTOBAHN_ANSWERS: [(&str, bool, Option<u8>); 7] = [
        ("permessage-deflate", false, None),
        ("permessage-deflate; client_no_context_takeover", true, None),
        (
            "permessage-deflate; client_max_window_bits=9",
            false,
            Some(9),
        ),
        (
            "permessage-deflate; client_max_window_bits=15",
            false,
            Some(15),
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
            true,
            Some(9),
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=15",
            true,
            Some(15),
        ),
        (
            "permessage-deflate; client_no_context_takeover; client_max_window_bits=9",
            true,
            Some(9),
        ),
    ];

    #[test]
    fn echo_route_answers_every_autobahn_offer() {
        for (offer, expected) in AUTOBAHN_OFFERS {
            let params = server(offer, &ECHO).unwrap_or_else(|| panic!("declined {offer}"));
            assert_eq!(params.response_header(), expected, "offer {offer}");
        }
    }

    #[test]
    fn chat_route_answers_every_autobahn_offer_without_context_takeover() {
        for (offer, _) in AUTOBAHN_OFFERS {
            let params = server(offer, &CHAT).unwrap();
            assert!(params.server_no_context_takeover && params.client_no_context_takeover);
            assert_eq!(params.client_max_window_bits, None, "offer {offer}");
        }
    }

    #[test]
    fn autobahn_server_window_offers_set_our_compression_window() {
        let windows: Vec<u8> = AUTOBAHN_OFFERS
            .iter()
            .map(|(offer, _)| server(offer, &ECHO).unwrap().server_window_bits())
            .collect();
        assert_eq!(windows, [15, 15, 9, 15, 9, 15, 9]);
    }

    #[test]
    fn client_accepts_every_autobahn_answer() {
        for (text, no_context_takeover, bits) in AUTOBAHN_ANSWERS {
            let params = answer(text).unwrap().unwrap();
            assert_eq!(
                params.client_no_context_takeover, no_context_takeover,
                "{text}"
            );
            assert_eq!(params.client_max_window_bits, bits, "{text}");
            assert!(!params.server_no_context_takeover);
            assert_eq!(params.server_window_bits(), 15);
        }
    }

    #[test]
    fn browser_offer_is_accepted_with_full_windows() {
        let params = server("permessage-deflate; client_max_window_bits", &ECHO).unwrap();
        assert_eq!(
            params,
            DeflateParams {
                server_no_context_takeover: false,
                client_no_context_takeover: false,
                server_max_window_bits: None,
                client_max_window_bits: None,
            }
        );
        assert_eq!(params.response_header(), "permessage-deflate");
        let chat = server("permessage-deflate; client_max_window_bits", &CHAT).unwrap();
        assert_eq!(
            chat.response_header(),
            "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
        );
    }

    #[test]
    fn our_client_offer_is_accepted_by_both_routes_and_the_answers_by_our_client() {
        for policy in [ECHO, CHAT] {
            let params = server(CLIENT_OFFER, &policy).unwrap();
            let back = answer(&params.response_header()).unwrap();
            assert_eq!(back, Some(params));
        }
    }

    #[test]
    fn offers_without_the_extension_are_declined() {
        assert_eq!(server("x-webkit-deflate-frame", &ECHO), None);
        assert_eq!(negotiate_server(&[], &ECHO), None);
    }

    #[test]
    fn first_acceptable_offer_wins_after_declined_ones() {
        let header = "permessage-deflate; mystery, \
                      permessage-deflate; server_no_context_takeover; server_no_context_takeover, \
                      permessage-deflate; server_max_window_bits=12, \
                      permessage-deflate";
        let params = server(header, &ECHO).unwrap();
        assert_eq!(params.server_max_window_bits, Some(12));
    }

    #[test]
    fn unknown_parameter_declines_the_offer() {
        assert_eq!(server("permessage-deflate; x=1", &ECHO), None);
    }

    #[test]
    fn duplicate_parameter_declines_the_offer() {
        for header in [
            "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
            "permessage-deflate; server_max_window_bits=10; SERVER_MAX_WINDOW_BITS=10",
            "permessage-deflate; client_no_context_takeover; client_no_context_takeover",
        ] {
            assert_eq!(server(header, &ECHO), None, "{header}");
        }
    }

    #[test]
    fn invalid_values_decline_the_offer() {
        for header in [
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; server_max_window_bits=16",
            "permessage-deflate; server_max_window_bits=010",
            "permessage-deflate; server_max_window_bits=+9",
            "permessage-deflate; client_max_window_bits=0",
            "permessage-deflate; client_max_window_bits=09",
            "permessage-deflate; client_max_window_bits=100",
            "permessage-deflate; server_no_context_takeover=1",
            "permessage-deflate; client_no_context_takeover=true",
        ] {
            assert_eq!(server(header, &ECHO), None, "{header}");
        }
    }

    #[test]
    fn offer_insisting_on_an_8_bit_server_window_is_accepted() {
        let params = server("permessage-deflate; server_max_window_bits=8", &ECHO).unwrap();
        assert_eq!(params.server_window_bits(), 8);
        assert_eq!(
            params.response_header(),
            "permessage-deflate; server_max_window_bits=8"
        );
    }

    #[test]
    fn client_window_of_8_is_accepted_and_named_back() {
        let params = server("permessage-deflate; client_max_window_bits=8", &ECHO).unwrap();
        assert_eq!(params.client_max_window_bits, Some(8));
        assert_eq!(
            params.response_header(),
            "permessage-deflate; client_max_window_bits=8"
        );
    }

    #[test]
    fn quoted_window_values_are_read_like_bare_ones() {
        let quoted = server(r#"permessage-deflate; server_max_window_bits="10""#, &ECHO);
        let bare = server("permessage-deflate; server_max_window_bits=10", &ECHO);
        assert_eq!(quoted, bare);
        assert_eq!(quoted.unwrap().server_max_window_bits, Some(10));
    }

    #[test]
    fn names_are_case_insensitive() {
        let params = server("PerMessage-Deflate; Server_No_Context_Takeover", &ECHO).unwrap();
        assert!(params.server_no_context_takeover);
    }

    #[test]
    fn repeated_header_lines_are_one_offer_list() {
        let list = parse_extensions([
            &b"x-foo"[..],
            b"permessage-deflate; server_max_window_bits=11",
        ])
        .unwrap();
        assert_eq!(
            negotiate_server(&list, &ECHO)
                .unwrap()
                .server_max_window_bits,
            Some(11)
        );
    }

    #[test]
    fn client_max_window_bits_is_never_named_unless_offered() {
        let policy = ServerDeflatePolicy {
            client_max_window_bits: 10,
            ..ECHO
        };
        assert_eq!(
            server("permessage-deflate", &policy)
                .unwrap()
                .client_max_window_bits,
            None
        );
        assert_eq!(
            server("permessage-deflate; client_max_window_bits", &policy)
                .unwrap()
                .client_max_window_bits,
            Some(10)
        );
        assert_eq!(
            server("permessage-deflate; client_max_window_bits=9", &policy)
                .unwrap()
                .client_max_window_bits,
            Some(9)
        );
    }

    #[test]
    fn server_window_policy_caps_the_offer_and_is_named_unasked() {
        let policy = ServerDeflatePolicy {
            server_max_window_bits: 11,
            ..ECHO
        };
        assert_eq!(
            server("permessage-deflate", &policy)
                .unwrap()
                .server_max_window_bits,
            Some(11)
        );
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=13", &policy)
                .unwrap()
                .server_max_window_bits,
            Some(11)
        );
        assert_eq!(
            server("permessage-deflate; server_max_window_bits=10", &policy)
                .unwrap()
                .server_max_window_bits,
            Some(10)
        );
    }

    #[test]
    fn out_of_range_policy_windows_are_clamped() {
        let policy = ServerDeflatePolicy {
            server_max_window_bits: 3,
            client_max_window_bits: 200,
            ..ECHO
        };
        let params = server("permessage-deflate; client_max_window_bits", &policy).unwrap();
        assert_eq!(params.server_max_window_bits, Some(8));
        assert_eq!(params.client_max_window_bits, None);
    }

    #[test]
    fn echo_route_keeps_context_unless_asked() {
        let params = server("permessage-deflate", &ECHO).unwrap();
        assert!(!params.server_no_context_takeover && !params.client_no_context_takeover);
    }

    #[test]
    fn every_server_answer_is_accepted_by_our_client_when_the_offer_was_ours() {
        let policies = [
            ECHO,
            CHAT,
            ServerDeflatePolicy {
                server_max_window_bits: 9,
                client_max_window_bits: 9,
                ..ECHO
            },
            ServerDeflatePolicy {
                server_max_window_bits: 12,
                client_max_window_bits: 13,
                ..CHAT
            },
        ];
        for policy in policies {
            let params = server(CLIENT_OFFER, &policy).unwrap();
            assert_eq!(
                answer(&params.response_header()),
                Ok(Some(params)),
                "{policy:?}"
            );
        }
    }

    #[test]
    fn client_takes_an_empty_answer_as_declined() {
        assert_eq!(accept_server_answer(&[]), Ok(None));
    }

    #[test]
    fn client_accepts_server_parameters_it_did_not_offer() {
        let params =
            answer("permessage-deflate; server_no_context_takeover; server_max_window_bits=8")
                .unwrap()
                .unwrap();
        assert!(params.server_no_context_takeover);
        assert_eq!(params.server_window_bits(), 8);
    }

    #[test]
    fn client_refuses_an_extension_it_did_not_offer() {
        assert_eq!(
            answer("x-webkit-deflate-frame"),
            Err(AnswerError::UnofferedExtension(
                "x-webkit-deflate-frame".into()
            ))
        );
        assert_eq!(
            answer("permessage-deflate, x-other"),
            Err(AnswerError::UnofferedExtension("x-other".into()))
        );
    }

    #[test]
    fn client_refuses_two_permessage_deflate_answers() {
        assert_eq!(
            answer("permessage-deflate, permessage-deflate"),
            Err(AnswerError::RepeatedExtension)
        );
    }

    #[test]
    fn client_refuses_unknown_and_duplicate_parameters() {
        assert_eq!(
            answer("permessage-deflate; mem_level=8"),
            Err(AnswerError::UnknownParameter("mem_level".into()))
        );
        assert_eq!(
            answer("permessage-deflate; server_no_context_takeover; server_no_context_takeover"),
            Err(AnswerError::DuplicateParameter(
                "server_no_context_takeover".into()
            ))
        );
    }

    #[test]
    fn client_refuses_invalid_values() {
        for text in [
            "permessage-deflate; client_max_window_bits",
            "permessage-deflate; client_max_window_bits=16",
            "permessage-deflate; client_max_window_bits=09",
            "permessage-deflate; server_max_window_bits",
            "permessage-deflate; server_max_window_bits=7",
            "permessage-deflate; client_no_context_takeover=1",
        ] {
            assert!(
                matches!(answer(text), Err(AnswerError::InvalidValue(_))),
                "{text}"
            );
        }
    }

    #[test]
    fn client_accepts_an_8_bit_window_to_compress_with() {
        let params = answer("permessage-deflate; client_max_window_bits=8")
            .unwrap()
            .unwrap();
        assert_eq!(params.client_window_bits(), 8);
    }

    #[test]
    fn errors_display_as_text() {
        assert!(AnswerError::RepeatedExtension
            .to_string()
            .contains("more than once"));
        assert!(AnswerError::InvalidValue("server_max_window_bits".into())
            .to_string()
            .contains("server_max_window_bits"));
    }
}

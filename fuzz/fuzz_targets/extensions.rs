//! Fuzz target `extensions`: the `Sec-WebSocket-Extensions` parser and writer, the server's permessage-deflate
//! negotiation and the client's check of a server's answer.
//!
//! Input: `[flags][windows][lines]` (see `roomcast_fuzz::extensions_input`): a server policy and header lines.
//! Asserts that nothing panics, and:
//! - a parsed list holds only tokens, and writing it and parsing that again gives the same list;
//! - `negotiate_server` accepts exactly when this target's own reading of RFC 7692 7 finds an acceptable
//!   permessage-deflate offer, and its answer keeps that first offer's rules: an offered
//!   `server_no_context_takeover` is answered (7.1.1.1), an offered `server_max_window_bits` is answered with the
//!   same or a smaller value (7.1.2.1), `client_max_window_bits` is never answered unless offered, and then with
//!   a value no greater than the offered one (7.1.2.2); the policy's windows and `Forbid`s are kept;
//! - the answer re-parses to exactly one extension, and our client accepts it and reads the same parameters;
//! - `accept_server_answer` on the list, taken as a server's answer, agrees with this target's reading of what a
//!   client may accept, and what it accepts survives writing and re-checking;
//! - our own `CLIENT_OFFER` is accepted under every policy, and our client accepts the answer.

#![no_main]

use std::collections::HashSet;

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::deflate::negotiate::{
    accept_server_answer, negotiate_server, DeflateParams, ServerDeflatePolicy, TakeoverPolicy,
    CLIENT_OFFER,
};
use roomcast::protocol::extensions::{
    is_token_byte, parse_extensions, write_extensions, ExtensionOffer,
};
use roomcast_fuzz::extensions_input::ExtensionsInput;

fuzz_target!(|data: &[u8]| {
    let input = ExtensionsInput::parse(data);
    let policy = ServerDeflatePolicy {
        server_context: takeover(input.flags & 1 != 0),
        client_context: takeover(input.flags & 2 != 0),
        server_max_window_bits: input.windows & 0x0F,
        client_max_window_bits: input.windows >> 4,
    };

    let ours = reparse(CLIENT_OFFER);
    let agreed = negotiate_server(&ours, &policy).expect("our own offer is always acceptable");
    assert_eq!(
        accept_server_answer(&reparse(&agreed.response_header())),
        Ok(Some(agreed)),
        "our client refuses the answer to our own offer under {policy:?}"
    );

    let list = match parse_extensions(input.lines.iter().copied()) {
        Ok(list) => list,
        Err(error) => {
            let _ = error.to_string();
            return;
        }
    };
    for extension in &list {
        assert!(is_token(&extension.name), "{extension:?}");
        for (name, value) in &extension.params {
            assert!(
                is_token(name) && value.as_deref().is_none_or(is_token),
                "{extension:?}"
            );
        }
    }
    assert_eq!(reparse(&write_extensions(&list)), list);

    check_server(&list, &policy);
    check_client(&list);
});

fn takeover(forbid: bool) -> TakeoverPolicy {
    if forbid {
        TakeoverPolicy::Forbid
    } else {
        TakeoverPolicy::AsOffered
    }
}

fn reparse(header: &str) -> Vec<ExtensionOffer> {
    parse_extensions([header.as_bytes()]).expect("a written header parses")
}

fn is_token(text: &str) -> bool {
    !text.is_empty() && text.bytes().all(is_token_byte)
}

/// One offer or answer as this target reads RFC 7692 7.
#[derive(Default, Debug)]
struct Reading {
    server_no_context_takeover: bool,
    client_no_context_takeover: bool,
    server_max_window_bits: Option<u8>,
    /// Outer: named; inner: with a value.
    client_max_window_bits: Option<Option<u8>>,
}

/// The parameters if they are all known, each named once, with valid values; `None` otherwise.
fn read(params: &[(String, Option<String>)], is_offer: bool) -> Option<Reading> {
    let mut reading = Reading::default();
    let mut seen = HashSet::new();
    for (name, value) in params {
        let name = name.to_ascii_lowercase();
        if !seen.insert(name.clone()) {
            return None;
        }
        match (name.as_str(), value.as_deref()) {
            ("server_no_context_takeover", None) => reading.server_no_context_takeover = true,
            ("client_no_context_takeover", None) => reading.client_no_context_takeover = true,
            ("server_max_window_bits", Some(v)) => reading.server_max_window_bits = Some(bits(v)?),
            ("client_max_window_bits", None) if is_offer => {
                reading.client_max_window_bits = Some(None)
            }
            ("client_max_window_bits", Some(v)) => {
                reading.client_max_window_bits = Some(Some(bits(v)?))
            }
            _ => return None,
        }
    }
    Some(reading)
}

fn bits(value: &str) -> Option<u8> {
    const VALUES: [&str; 8] = ["8", "9", "10", "11", "12", "13", "14", "15"];
    VALUES.iter().position(|v| *v == value).map(|i| i as u8 + 8)
}

fn is_deflate(extension: &ExtensionOffer) -> bool {
    extension.name.eq_ignore_ascii_case("permessage-deflate")
}

fn check_server(list: &[ExtensionOffer], policy: &ServerDeflatePolicy) {
    let first_acceptable = list
        .iter()
        .filter(|e| is_deflate(e))
        .find_map(|e| read(&e.params, true));
    let agreed = negotiate_server(list, policy);
    let (Some(offer), Some(params)) = (&first_acceptable, agreed) else {
        assert!(
            first_acceptable.is_none() && agreed.is_none(),
            "offer {first_acceptable:?}, answer {agreed:?}"
        );
        return;
    };
    let server_cap = policy.server_max_window_bits.clamp(8, 15);
    let client_cap = policy.client_max_window_bits.clamp(8, 15);
    let context = format!("offer {offer:?}, answer {params:?}, policy {policy:?}");
    if offer.server_no_context_takeover || policy.server_context == TakeoverPolicy::Forbid {
        assert!(params.server_no_context_takeover, "{context}");
    }
    if policy.client_context == TakeoverPolicy::Forbid {
        assert!(params.client_no_context_takeover, "{context}");
    }
    match offer.server_max_window_bits {
        Some(offered) => assert!(
            params.server_max_window_bits.is_some_and(|b| b <= offered),
            "{context}"
        ),
        None => assert!(
            params
                .server_max_window_bits
                .is_none_or(|b| (8..=15).contains(&b)),
            "{context}"
        ),
    }
    assert!(params.server_window_bits() <= server_cap, "{context}");
    match offer.client_max_window_bits {
        None => assert_eq!(params.client_max_window_bits, None, "{context}"),
        Some(offered) => {
            let limit = offered.unwrap_or(15);
            // What the client will use: the answered window, else its own offered limit, else 15.
            let effective = params.client_max_window_bits.unwrap_or(limit);
            assert!(effective <= limit && effective <= client_cap, "{context}");
        }
    }
    let answer = reparse(&params.response_header());
    assert_eq!(answer, vec![params.to_extension()]);
    assert_eq!(accept_server_answer(&answer), Ok(Some(params)), "{context}");
}

fn check_client(list: &[ExtensionOffer]) {
    let expected: Option<Option<DeflateParams>> = match list {
        [] => Some(None),
        [only] if is_deflate(only) => read(&only.params, false).map(|r| {
            Some(DeflateParams {
                server_no_context_takeover: r.server_no_context_takeover,
                client_no_context_takeover: r.client_no_context_takeover,
                server_max_window_bits: r.server_max_window_bits,
                client_max_window_bits: r.client_max_window_bits.flatten(),
            })
        }),
        _ => None,
    };
    let got = accept_server_answer(list);
    match (&got, expected) {
        (Ok(params), Some(want)) => assert_eq!(*params, want, "{list:?}"),
        (Err(error), None) => {
            let _ = error.to_string();
        }
        _ => panic!("client check {got:?} on {list:?}, expected {expected:?}"),
    }
    if let Ok(Some(params)) = got {
        assert!((8..=15).contains(&params.client_window_bits()));
        let again = accept_server_answer(&reparse(&params.response_header()));
        assert_eq!(again, Ok(Some(params)));
    }
}

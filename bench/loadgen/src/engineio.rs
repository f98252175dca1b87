//! The Socket.IO wire format as the load generator speaks it: Engine.IO v4 packets over WebSocket, one packet per
//! text message, carrying Socket.IO v5 packets of the main namespace `/`.
//!
//! Owns the classification of a received packet, the connection's progress through the Engine.IO open and the
//! Socket.IO connect, and the bytes of the packets the generator sends (`join` and `chat` events, the connect,
//! Pongs). It does no I/O: `client.rs` feeds it whole WebSocket text messages and sends what it returns.
//!
//! Engine.IO v4 (<https://socket.io/docs/v4/engine-io-protocol/>): the first byte is the packet type, `0` open
//! (followed by the handshake JSON), `1` close, `2` ping, `3` pong, `4` message; over WebSocket there is no
//! batching, and in v4 the server pings and the client answers each `2` with a `3`. A `4` message carries a
//! Socket.IO packet (<https://socket.io/docs/v4/socket-io-protocol/>) whose first byte is its type: `0` connect,
//! `1` disconnect, `2` event (a JSON array, its first element the event's name), `4` connect error. The client
//! connects to the main namespace by sending `40` after the open packet; the server answers `40{"sid":...}`.

/// The request target of a Socket.IO server's WebSocket transport, skipping the HTTP long-polling start.
pub const WEBSOCKET_PATH: &str = "/socket.io/?EIO=4&transport=websocket";

/// The Socket.IO connect to the main namespace.
pub const CONNECT: &[u8] = b"40";

/// The Engine.IO pong that answers the server's ping.
pub const PONG: &[u8] = b"3";

/// One received Engine.IO packet, as far as the generator cares.
#[derive(Debug, PartialEq, Eq)]
pub enum Packet<'a> {
    /// `0{...}`: the Engine.IO session is open; the client must now connect to the namespace.
    Open,
    /// `40{...}`: the namespace accepted the connect.
    Connected,
    /// `44{...}`: the namespace refused the connect, with the server's reason.
    ConnectError(&'a [u8]),
    /// `2`: the server's ping, to be answered with `PONG`.
    Ping,
    /// `42[...]`: an event; the slice is the JSON array, the event's name first.
    Event(&'a [u8]),
    /// `1` (Engine.IO close) or `41` (Socket.IO disconnect): the server ends the session.
    Closed,
    /// Anything else (a pong, an acknowledgement, binary attachments): nothing the generator uses.
    Other(&'a [u8]),
}

/// Classifies one WebSocket text message received from a Socket.IO server.
pub fn classify(text: &[u8]) -> Packet<'_> {
    match text {
        [b'0', ..] => Packet::Open,
        [b'1', ..] => Packet::Closed,
        [b'2', ..] => Packet::Ping,
        [b'4', b'0', ..] => Packet::Connected,
        [b'4', b'1', ..] => Packet::Closed,
        [b'4', b'2', event @ ..] => Packet::Event(event),
        [b'4', b'4', reason @ ..] => Packet::ConnectError(reason),
        other => Packet::Other(other),
    }
}

/// Where a connection is in the Engine.IO open and the Socket.IO connect that follow the WebSocket handshake.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Session {
    /// Waiting for the server's open packet.
    AwaitingOpen,
    /// `40` sent, waiting for the namespace's answer.
    AwaitingConnect,
    /// Events flow.
    Connected,
}

/// What a connection must do with a received packet.
#[derive(Debug, PartialEq, Eq)]
pub enum Step<'a> {
    /// Send these bytes as a text message.
    Reply(&'static [u8]),
    /// Hand this event (its JSON array) to the scenario.
    Deliver(&'a [u8]),
    /// The session ended or was refused: close the connection with this reason.
    Fail(String),
    /// Nothing.
    Nothing,
}

impl Session {
    /// Advances the session with one received text message and says what to do about it. A packet that is not
    /// an event is answered here (the open with the connect, a ping with a pong); an event or an unknown packet
    /// is handed on, so that the scenario counts what it did not expect.
    pub fn on_text<'a>(&mut self, text: &'a [u8]) -> Step<'a> {
        match classify(text) {
            Packet::Open if *self == Session::AwaitingOpen => {
                *self = Session::AwaitingConnect;
                Step::Reply(CONNECT)
            }
            Packet::Connected if *self == Session::AwaitingConnect => {
                *self = Session::Connected;
                Step::Nothing
            }
            Packet::Ping => Step::Reply(PONG),
            Packet::Event(event) => Step::Deliver(event),
            Packet::ConnectError(reason) => Step::Fail(format!(
                "Socket.IO connect refused: {}",
                String::from_utf8_lossy(reason)
            )),
            Packet::Closed => Step::Fail("Socket.IO session closed by the server".into()),
            Packet::Open | Packet::Connected => Step::Fail(format!(
                "unexpected Socket.IO packet while {self:?}: {}",
                String::from_utf8_lossy(text)
            )),
            Packet::Other(other) => Step::Deliver(other),
        }
    }
}

/// The `join` event: `42["join",{"userId":...,"room":...}]`. Names and rooms must need no JSON escaping.
pub fn join_event(user: &str, room: &str) -> Vec<u8> {
    format!(r#"42["join",{{"userId":"{user}","room":"{room}"}}]"#).into_bytes()
}

/// The `chat` event: `42["chat",{"content":...}]`, appended to `out`. `content` must need no JSON escaping.
pub fn chat_event(content: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(br#"42["chat",{"content":""#);
    out.extend_from_slice(content);
    out.extend_from_slice(br#""}]"#);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_opens_connects_and_then_delivers_events() {
        let mut session = Session::AwaitingOpen;
        let open = br#"0{"sid":"a","upgrades":[],"pingInterval":25000,"pingTimeout":20000}"#;
        assert_eq!(session.on_text(open), Step::Reply(CONNECT));
        assert_eq!(session, Session::AwaitingConnect);
        assert_eq!(session.on_text(br#"40{"sid":"b"}"#), Step::Nothing);
        assert_eq!(session, Session::Connected);
        let event = br#"42["chat",{"content":"@x"}]"#;
        assert_eq!(
            session.on_text(event),
            Step::Deliver(&br#"["chat",{"content":"@x"}]"#[..])
        );
    }

    #[test]
    fn a_ping_is_answered_with_a_pong_in_any_state() {
        for mut session in [Session::AwaitingOpen, Session::Connected] {
            assert_eq!(session.on_text(b"2"), Step::Reply(PONG));
        }
    }

    #[test]
    fn a_refused_connect_or_a_server_disconnect_fails_the_connection() {
        let mut session = Session::AwaitingConnect;
        assert!(matches!(
            session.on_text(br#"44{"message":"no"}"#),
            Step::Fail(_)
        ));
        assert!(matches!(session.on_text(b"41"), Step::Fail(_)));
        assert!(matches!(session.on_text(b"1"), Step::Fail(_)));
    }

    #[test]
    fn a_second_open_packet_is_an_error() {
        let mut session = Session::Connected;
        assert!(matches!(session.on_text(b"0{}"), Step::Fail(_)));
    }

    #[test]
    fn unknown_packets_are_handed_on_to_be_counted() {
        let mut session = Session::Connected;
        assert_eq!(session.on_text(b"43[1]"), Step::Deliver(&b"43[1]"[..]));
    }

    #[test]
    fn events_are_written_as_socketio_event_packets() {
        assert_eq!(
            join_event("u1", "r2"),
            br#"42["join",{"userId":"u1","room":"r2"}]"#.to_vec()
        );
        let mut out = Vec::new();
        chat_event(b"@abc", &mut out);
        assert_eq!(out, br#"42["chat",{"content":"@abc"}]"#.to_vec());
    }
}

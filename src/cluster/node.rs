//! A node's name among the roomcast processes that share one Redis (`--node-id`).
//!
//! Owns what a node id may look like and how a random one is spelled. It must not draw the randomness itself: the
//! caller passes the bytes (from the operating system, `protocol::mask::fill_random`).

use std::fmt;
use std::str::FromStr;

/// The longest node id accepted.
pub const MAX_NODE_ID_LEN: usize = 64;

/// A node id: 1 to 64 ASCII letters, digits, `-`, `_` or `.`, so it can stand in a Redis client name
/// (`CLIENT SETNAME roomcast-<id>`, which refuses spaces) and in a key without quoting.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct NodeId(String);

impl NodeId {
    /// A random id: the four bytes in lowercase hex (8 characters).
    pub fn from_random(bytes: [u8; 4]) -> NodeId {
        NodeId(bytes.iter().map(|b| format!("{b:02x}")).collect())
    }

    /// The id as text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Why a `--node-id` was refused.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NodeIdError {
    /// Empty, or longer than `MAX_NODE_ID_LEN`.
    BadLength(usize),
    /// A character other than an ASCII letter, digit, `-`, `_` or `.`.
    BadCharacter(char),
}

impl fmt::Display for NodeIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            NodeIdError::BadLength(len) => write!(
                f,
                "a node id has 1 to {MAX_NODE_ID_LEN} characters, not {len}"
            ),
            NodeIdError::BadCharacter(c) => write!(
                f,
                "{c:?} cannot be in a node id: use ASCII letters, digits, `-`, `_` and `.`"
            ),
        }
    }
}

impl std::error::Error for NodeIdError {}

impl FromStr for NodeId {
    type Err = NodeIdError;

    fn from_str(text: &str) -> Result<NodeId, NodeIdError> {
        // Characters first: once every character is ASCII, the byte length is the character count.
        if let Some(bad) = text
            .chars()
            .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.')))
        {
            return Err(NodeIdError::BadCharacter(bad));
        }
        if text.is_empty() || text.len() > MAX_NODE_ID_LEN {
            return Err(NodeIdError::BadLength(text.len()));
        }
        Ok(NodeId(text.to_owned()))
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_random_id_is_eight_lowercase_hex_digits() {
        let id = NodeId::from_random([0x00, 0xab, 0x10, 0xff]);
        assert_eq!(id.as_str(), "00ab10ff");
        assert_eq!(id.as_str().parse::<NodeId>(), Ok(id));
    }

    #[test]
    fn a_long_non_ascii_id_is_refused_for_its_character_not_its_length() {
        let id = "\u{e9}".repeat(40);
        assert_eq!(
            id.parse::<NodeId>(),
            Err(NodeIdError::BadCharacter('\u{e9}'))
        );
    }

    #[test]
    fn ids_with_spaces_or_nothing_are_refused() {
        assert_eq!("a b".parse::<NodeId>(), Err(NodeIdError::BadCharacter(' ')));
        assert_eq!("".parse::<NodeId>(), Err(NodeIdError::BadLength(0)));
        assert!("x".repeat(65).parse::<NodeId>().is_err());
        assert!("eu-west.1_a".parse::<NodeId>().is_ok());
    }
}

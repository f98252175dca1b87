//! RFC 6455 9.1: the `Sec-WebSocket-Extensions` header, read into a list of extensions and written back.
//!
//! Owns the grammar only: `extension-list = 1#extension`, `extension = token *( ";" param )`,
//! `param = token [ "=" (token | quoted-string) ]`, with optional white space around every separator and the rule
//! that a quoted value must be a token once unquoted. It knows no extension's meaning: which extensions and
//! parameters are acceptable is decided by their own modules (`deflate::negotiate` for permessage-deflate).
//! It must not allocate more than the header's own size warrants, and never panics on any input bytes.

use std::fmt;

/// One element of an extension list: an extension name with its parameters, in the order they were written.
///
/// The same shape serves a client's offer and a server's answer (9.1 uses one grammar for both).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExtensionOffer {
    /// The extension's name token, as written (compare it with `is`).
    pub name: String,
    /// Each parameter's name and its value, if it has one; quoted values are stored unquoted.
    pub params: Vec<(String, Option<String>)>,
}

impl ExtensionOffer {
    /// True if this is the extension called `name`, compared ASCII case-insensitively as HTTP tokens are.
    pub fn is(&self, name: &str) -> bool {
        self.name.eq_ignore_ascii_case(name)
    }
}

/// Writes `name; param; param=value`. Names and values must be tokens, as every parsed one is.
impl fmt::Display for ExtensionOffer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name)?;
        for (name, value) in &self.params {
            write!(f, "; {name}")?;
            if let Some(value) = value {
                write!(f, "={value}")?;
            }
        }
        Ok(())
    }
}

/// Which token the parser was looking for when it failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenPart {
    /// The name at the start of a list element.
    ExtensionName,
    /// A parameter's name, after `;`.
    ParamName,
    /// A parameter's value, after `=`.
    ParamValue,
}

/// A `Sec-WebSocket-Extensions` value that breaks the 9.1 grammar. A server answers such a request with 400.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExtensionsError {
    /// A token was required but the value ended (`found: None`) or went on with a byte no token may start with.
    ExpectedToken {
        /// What was expected.
        part: TokenPart,
        /// The byte found instead, or `None` at the end of the value.
        found: Option<u8>,
    },
    /// After an extension or one of its parameters came a byte other than `;`, `,` or white space.
    UnexpectedByte(u8),
    /// A quoted value holds a byte that a quoted-string may not hold (a control character).
    InvalidQuotedByte(u8),
    /// A quoted value had no closing `"`.
    UnterminatedQuote,
    /// A quoted value that is not a token once unquoted (9.1), such as `""` or `"a b"`.
    QuotedValueNotToken,
}

impl fmt::Display for ExtensionsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ExtensionsError::ExpectedToken { part, found } => {
                let part = match part {
                    TokenPart::ExtensionName => "an extension name",
                    TokenPart::ParamName => "a parameter name",
                    TokenPart::ParamValue => "a parameter value",
                };
                match found {
                    Some(byte) => write!(f, "expected {part}, found byte {byte:#04x}"),
                    None => write!(f, "expected {part}, found the end of the header"),
                }
            }
            ExtensionsError::UnexpectedByte(byte) => {
                write!(
                    f,
                    "unexpected byte {byte:#04x} after an extension or parameter"
                )
            }
            ExtensionsError::InvalidQuotedByte(byte) => {
                write!(f, "byte {byte:#04x} is not allowed in a quoted value")
            }
            ExtensionsError::UnterminatedQuote => {
                f.write_str("quoted value without its closing quote")
            }
            ExtensionsError::QuotedValueNotToken => {
                f.write_str("quoted value is not a token once unquoted")
            }
        }
    }
}

impl std::error::Error for ExtensionsError {}

/// Parses every `Sec-WebSocket-Extensions` header line of a message, in order, into one list.
///
/// The lines may be any bytes; each is a comma-separated list. Empty list elements (`a, , b`, or a blank line) are
/// skipped, as RFC 7230 7 asks of recipients. Duplicated extensions are all kept: several offers of one extension
/// are alternatives, in the client's order of preference (RFC 7692 5).
pub fn parse_extensions<'a, I>(values: I) -> Result<Vec<ExtensionOffer>, ExtensionsError>
where
    I: IntoIterator<Item = &'a [u8]>,
{
    let mut list = Vec::new();
    for value in values {
        Parser {
            bytes: value,
            pos: 0,
        }
        .parse_list(&mut list)?;
    }
    Ok(list)
}

/// Writes an extension list as one header value: the elements joined by `, `.
pub fn write_extensions(extensions: &[ExtensionOffer]) -> String {
    let mut out = String::new();
    for (i, extension) in extensions.iter().enumerate() {
        if i > 0 {
            out.push_str(", ");
        }
        out.push_str(&extension.to_string());
    }
    out
}

/// RFC 7230 3.2.6: `tchar`, the bytes a token is made of.
pub fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

/// A cursor over one header line.
struct Parser<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Parser<'_> {
    fn peek(&self) -> Option<u8> {
        self.bytes.get(self.pos).copied()
    }

    /// RFC 7230 3.2.3: OWS is any run of spaces and horizontal tabs.
    fn skip_white_space(&mut self) {
        while matches!(self.peek(), Some(b' ' | b'\t')) {
            self.pos += 1;
        }
    }

    fn parse_list(&mut self, list: &mut Vec<ExtensionOffer>) -> Result<(), ExtensionsError> {
        loop {
            self.skip_white_space();
            match self.peek() {
                None => return Ok(()),
                // RFC 7230 7: empty list elements are ignored.
                Some(b',') => self.pos += 1,
                Some(_) => {
                    list.push(self.parse_extension()?);
                    match self.peek() {
                        None => return Ok(()),
                        Some(b',') => self.pos += 1,
                        Some(byte) => return Err(ExtensionsError::UnexpectedByte(byte)),
                    }
                }
            }
        }
    }

    /// One list element; leaves the cursor after its trailing white space.
    fn parse_extension(&mut self) -> Result<ExtensionOffer, ExtensionsError> {
        let name = self.token(TokenPart::ExtensionName)?;
        let mut params = Vec::new();
        self.skip_white_space();
        while self.peek() == Some(b';') {
            self.pos += 1;
            self.skip_white_space();
            let param = self.token(TokenPart::ParamName)?;
            self.skip_white_space();
            let value = if self.peek() == Some(b'=') {
                self.pos += 1;
                self.skip_white_space();
                let value = if self.peek() == Some(b'"') {
                    self.quoted_token()?
                } else {
                    self.token(TokenPart::ParamValue)?
                };
                self.skip_white_space();
                Some(value)
            } else {
                None
            };
            params.push((param, value));
        }
        Ok(ExtensionOffer { name, params })
    }

    /// A non-empty run of token bytes.
    fn token(&mut self, part: TokenPart) -> Result<String, ExtensionsError> {
        let start = self.pos;
        while self.peek().is_some_and(is_token_byte) {
            self.pos += 1;
        }
        if self.pos == start {
            return Err(ExtensionsError::ExpectedToken {
                part,
                found: self.peek(),
            });
        }
        Ok(self.bytes[start..self.pos]
            .iter()
            .map(|&b| char::from(b))
            .collect())
    }

    /// RFC 7230 3.2.6 quoted-string, unescaped; RFC 6455 9.1: the result MUST be a token.
    fn quoted_token(&mut self) -> Result<String, ExtensionsError> {
        // The opening quote.
        self.pos += 1;
        let mut value = String::new();
        let mut all_token_bytes = true;
        loop {
            let Some(byte) = self.peek() else {
                return Err(ExtensionsError::UnterminatedQuote);
            };
            self.pos += 1;
            let byte = match byte {
                b'"' => break,
                b'\\' => {
                    let Some(escaped) = self.peek() else {
                        return Err(ExtensionsError::UnterminatedQuote);
                    };
                    // quoted-pair = "\" ( HTAB / SP / VCHAR / obs-text )
                    if !(escaped == b'\t' || escaped >= 0x20) || escaped == 0x7F {
                        return Err(ExtensionsError::InvalidQuotedByte(escaped));
                    }
                    self.pos += 1;
                    escaped
                }
                // qdtext = HTAB / SP / %x21 / %x23-5B / %x5D-7E / obs-text
                b'\t' | 0x20..=0x7E | 0x80..=0xFF => byte,
                _ => return Err(ExtensionsError::InvalidQuotedByte(byte)),
            };
            if is_token_byte(byte) {
                value.push(char::from(byte));
            } else {
                all_token_bytes = false;
            }
        }
        if !all_token_bytes || value.is_empty() {
            return Err(ExtensionsError::QuotedValueNotToken);
        }
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(lines: &[&str]) -> Result<Vec<ExtensionOffer>, ExtensionsError> {
        parse_extensions(lines.iter().map(|l| l.as_bytes()))
    }

    fn ext(name: &str, params: &[(&str, Option<&str>)]) -> ExtensionOffer {
        ExtensionOffer {
            name: name.to_string(),
            params: params
                .iter()
                .map(|(n, v)| (n.to_string(), v.map(str::to_string)))
                .collect(),
        }
    }

    #[test]
    fn browser_offer_parses() {
        assert_eq!(
            parse(&["permessage-deflate; client_max_window_bits"]).unwrap(),
            vec![ext(
                "permessage-deflate",
                &[("client_max_window_bits", None)]
            )]
        );
    }

    #[test]
    fn several_extensions_and_values_keep_their_order() {
        let list = parse(&["a; x=1; y, b, a;z=\"15\""]).unwrap();
        assert_eq!(
            list,
            vec![
                ext("a", &[("x", Some("1")), ("y", None)]),
                ext("b", &[]),
                ext("a", &[("z", Some("15"))]),
            ]
        );
    }

    #[test]
    fn repeated_header_lines_form_one_list() {
        let list = parse(&[
            "foo",
            "permessage-deflate; server_no_context_takeover",
            "bar; q",
        ])
        .unwrap();
        let names: Vec<_> = list.iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["foo", "permessage-deflate", "bar"]);
    }

    #[test]
    fn white_space_around_every_separator_is_optional() {
        let tight = parse(&["a;b=1;c,d"]).unwrap();
        let loose = parse(&[" \ta ; b = 1 ;\tc , d \t"]).unwrap();
        assert_eq!(tight, loose);
    }

    #[test]
    fn empty_elements_and_blank_lines_are_skipped() {
        assert_eq!(
            parse(&[", a ,, ,b,"]).unwrap(),
            vec![ext("a", &[]), ext("b", &[])]
        );
        assert_eq!(parse(&["", "  "]).unwrap(), vec![]);
    }

    #[test]
    fn quoted_value_is_unquoted_and_unescaped() {
        assert_eq!(
            parse(&[r#"x; p="1\5""#]).unwrap(),
            vec![ext("x", &[("p", Some("15"))])]
        );
    }

    #[test]
    fn quoted_value_must_be_a_token() {
        assert_eq!(
            parse(&[r#"x; p="a b""#]),
            Err(ExtensionsError::QuotedValueNotToken)
        );
        assert_eq!(
            parse(&[r#"x; p="""#]),
            Err(ExtensionsError::QuotedValueNotToken)
        );
        assert_eq!(
            parse(&[r#"x; p="a,b""#]),
            Err(ExtensionsError::QuotedValueNotToken)
        );
        assert_eq!(
            parse(&["x; p=\"\u{e9}\""]),
            Err(ExtensionsError::QuotedValueNotToken)
        );
    }

    #[test]
    fn unterminated_quote_is_refused() {
        assert_eq!(
            parse(&[r#"x; p="15"#]),
            Err(ExtensionsError::UnterminatedQuote)
        );
        assert_eq!(
            parse(&[r#"x; p="15\"#]),
            Err(ExtensionsError::UnterminatedQuote)
        );
    }

    #[test]
    fn control_byte_inside_quotes_is_refused() {
        assert_eq!(
            parse_extensions([&b"x; p=\"1\x005\""[..]]),
            Err(ExtensionsError::InvalidQuotedByte(0))
        );
    }

    #[test]
    fn missing_tokens_are_refused_with_what_was_expected() {
        let cases: [(&str, TokenPart, Option<u8>); 6] = [
            ("; p", TokenPart::ExtensionName, Some(b';')),
            ("x;", TokenPart::ParamName, None),
            ("x; =1", TokenPart::ParamName, Some(b'=')),
            ("x; p=", TokenPart::ParamValue, None),
            ("x; p= ;q", TokenPart::ParamValue, Some(b';')),
            ("=x", TokenPart::ExtensionName, Some(b'=')),
        ];
        for (line, part, found) in cases {
            assert_eq!(
                parse(&[line]),
                Err(ExtensionsError::ExpectedToken { part, found }),
                "{line:?}"
            );
        }
    }

    #[test]
    fn garbage_after_an_element_is_refused() {
        assert_eq!(parse(&["a b"]), Err(ExtensionsError::UnexpectedByte(b'b')));
        assert_eq!(
            parse(&["a; p=1 2"]),
            Err(ExtensionsError::UnexpectedByte(b'2'))
        );
        assert_eq!(
            parse(&["a; p=1=2"]),
            Err(ExtensionsError::UnexpectedByte(b'='))
        );
        assert_eq!(
            parse(&["a\r\n"]),
            Err(ExtensionsError::UnexpectedByte(b'\r'))
        );
    }

    #[test]
    fn non_utf8_bytes_are_refused_not_panicked_on() {
        assert_eq!(
            parse_extensions([&b"\xff\xfe"[..]]),
            Err(ExtensionsError::ExpectedToken {
                part: TokenPart::ExtensionName,
                found: Some(0xff)
            })
        );
        assert_eq!(
            parse_extensions([&b"a; p=\xc3\xa9"[..]]),
            Err(ExtensionsError::ExpectedToken {
                part: TokenPart::ParamValue,
                found: Some(0xc3)
            })
        );
    }

    #[test]
    fn an_error_in_a_later_line_fails_the_whole_header() {
        assert!(parse(&["permessage-deflate", "x;"]).is_err());
    }

    #[test]
    fn names_compare_case_insensitively() {
        let list = parse(&["PerMessage-Deflate"]).unwrap();
        assert!(list[0].is("permessage-deflate"));
        assert!(!list[0].is("permessage-deflat"));
    }

    #[test]
    fn written_list_parses_back_to_itself() {
        let list = vec![
            ext(
                "permessage-deflate",
                &[
                    ("server_no_context_takeover", None),
                    ("server_max_window_bits", Some("10")),
                ],
            ),
            ext("x-other", &[]),
        ];
        let written = write_extensions(&list);
        assert_eq!(
            written,
            "permessage-deflate; server_no_context_takeover; server_max_window_bits=10, x-other"
        );
        assert_eq!(parse(&[&written]).unwrap(), list);
    }

    #[test]
    fn empty_list_writes_an_empty_value() {
        assert_eq!(write_extensions(&[]), "");
    }
}

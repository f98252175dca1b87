//! Which user and room names the chat accepts, and when two user names belong to the same person.
//!
//! Owns the name rules of the hardening issue, as two pure functions: [`user_name`] and [`room_name`]. It must not
//! look at chat state (whether a name is taken is for the handlers, which compare [`Name::key`]s) and must not
//! allocate anything on the plain-ASCII fast path beyond what it returns.
//!
//! A name is first put in Unicode Normalization Form KC (UAX #15); the normalised form is what is stored and
//! shown, so full-width `ａｎｎ` arrives as `ann`. That form is then refused, with a [`NameError`] a person can
//! act on, when it holds:
//! - a character drawn as nothing: any Default_Ignorable_Code_Point (zero-width spaces and joiners, U+2060, the
//!   U+FEFF byte order mark, the soft hyphen U+00AD, the tag characters U+E0000..U+E007F, variation selectors,
//!   Hangul fillers);
//! - a bidirectional control (U+061C, U+200E, U+200F, U+202A..U+202E, U+2066..U+2069), which could reorder the
//!   text around the name;
//! - a line or paragraph separator (Zl, Zp), a control (Cc), any other format character (Cf), a private-use
//!   character (Co), an unassigned code point or noncharacter (Cn);
//! - white space other than U+0020, or U+2800 BRAILLE PATTERN BLANK (a blank that is not white space), a space at
//!   either end, two spaces in a row;
//! - the double quote `"`, which the chat's own notices put around names;
//! - nothing visible at all (only blanks, invisible characters or combining marks), or nothing;
//! - a combining mark first, and U+0345 COMBINING GREEK YPOGEGRAMMENI where NFKC left it loose (not composed
//!   with a Greek vowel): it is the one mark whose capital is a letter (Ι), so the name in capitals would put that
//!   letter on the other side of the marks around it, and one name would have two keys;
//! - more Unicode scalar values than the limit, counted after normalisation.
//!
//! Decisions the rules left open:
//! - **No-break and other compatibility spaces are accepted inside a name.** NFKC turns U+00A0, U+3000
//!   IDEOGRAPHIC SPACE and the U+2000..U+200A spaces into U+0020, so what is stored holds only plain spaces and the
//!   space rules apply to the result: `José\u{A0}María` is stored as `José María`, while `ann\u{A0}` becomes
//!   `ann ` and is refused for its trailing space. Refusing them would only confuse people whose keyboard or input
//!   method types them; nothing hidden survives normalisation.
//! - **Emoji are accepted** (they are So or Sk, script Common). So that emoji typed on phones work, two default
//!   ignorables are let through in exactly the places emoji sequences (UTS #51) put them: U+FE0F VARIATION
//!   SELECTOR-16 right after an emoji character (`❤️`, keycaps such as `1️⃣`), and U+200D ZERO WIDTH JOINER between
//!   two non-ASCII emoji (`👩‍💻`). Both are dropped from the key, so `❤️ ann` and `❤ ann` are the same person. Tag
//!   sequences (subdivision flags) stay refused.
//!
//! User names also must not mix scripts beyond UTS #39 section 5.2's "Moderately Restrictive" level: one script
//! (with Japanese, Korean and Chinese counted as one writing system each), or Latin with one other Recommended
//! script other than Cyrillic and Greek. So `аnn` with a Cyrillic `а` is refused even when nobody called `ann` is
//! online, while `Kim 김` or `Sam سام` are fine. UTS #39's General Security Profile is not applied: it is meant for
//! identifiers and would refuse spaces, apostrophes, emoji and whole Limited_Use scripts such as Cherokee.
//!
//! Whether two user names are the same person is decided on their [`Name::key`], a confusable skeleton after UTS
//! #39 section 4: `skeleton(X)` is X in NFD with default ignorables removed, every character replaced by its
//! prototype from `confusables.txt`, then NFD again. A TS #39 skeleton is case-sensitive and maps some capitals
//! (`I` to `l`, Greek `Ν` to `N`) and some small letters (Cyrillic `а` to `a`, `m` to `rn`) but not their other
//! cases, so the key is `skeleton(lower(skeleton(upper(lower(name)))))`: lower then upper case makes case
//! irrelevant (full case mappings, so `ß`, `SS` and `ẞ` agree), the inner skeleton catches capitals that imitate
//! others (Greek `ΑΝΝ` is `ANN`), and the outer one small letters that do (Cyrillic `аnn` is `ann`). The
//! collisions this brings are deliberate: `rn` and `m` are one person, as TS #39 says, and so are `i`, `l`, `I`,
//! `1` and `|`, or `o` and `0`: a name that two people could not tell apart on screen is one name. A skeleton is
//! never shown; it is only compared.
//!
//! The reserved word `system` (the sender of the chat's own notices) is refused as a user name when its key is
//! that of `system`, so `System`, `SYSTEM` and `ѕуѕtem` are refused too. Room names follow the same character and
//! space rules but have no key, no script rule and no reserved word.
//!
//! The tables come from `unicode-normalization`, `unicode-security`, `unicode-script` and `unicode-properties`,
//! which must agree on their Unicode version (a test checks), and from the standard library's case mappings. A
//! character those crates do not know yet is refused as unassigned rather than judged on guesses.

use std::borrow::Cow;
use std::fmt;
use std::rc::Rc;

use unicode_normalization::UnicodeNormalization;
use unicode_properties::{GeneralCategory, UnicodeEmoji, UnicodeGeneralCategory};
use unicode_script::Script;
use unicode_security::mixed_script::AugmentedScriptSet;
use unicode_security::skeleton;

/// U+FE0F VARIATION SELECTOR-16: asks for the emoji presentation of the character before it.
const EMOJI_PRESENTATION: char = '\u{FE0F}';
/// U+200D ZERO WIDTH JOINER: glues emoji into one picture (UTS #51 emoji ZWJ sequences).
const ZERO_WIDTH_JOINER: char = '\u{200D}';
/// U+2800 BRAILLE PATTERN BLANK: not white space to Unicode, but drawn as one.
const BRAILLE_BLANK: char = '\u{2800}';

/// The keys of the reserved user names, in the order of their names: `system`.
/// `reserved_keys_are_the_keys_of_the_reserved_names` keeps them in step with [`key_of`].
const RESERVED_KEYS: [&str; 1] = ["systern"];

/// NFKC makes text at most four times shorter, in scalar values: it only composes, and the longest canonical
/// decomposition is four code points (UAX #15). A raw name of more than `4 * 4 * max_chars` bytes is therefore
/// too long before it is normalised.
const MAX_RAW_BYTES_PER_CHAR: usize = 16;

/// An accepted user name: the form to store and show, and the key that tells whether two names are one person.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Name {
    shown: Rc<str>,
    /// The same allocation as `shown` when the two are equal (most ASCII names), and shared with the claim on the
    /// name (`claims.rs`), so a member holds one or two copies of its name, not three.
    key: Rc<str>,
}

impl Name {
    /// The name in NFKC, as it is stored and shown to others.
    pub(super) fn shown(&self) -> &Rc<str> {
        &self.shown
    }

    /// The confusable skeleton of the name, case-insensitive: two names are the same person exactly when their
    /// keys are equal. Never shown.
    pub(super) fn key(&self) -> &Rc<str> {
        &self.key
    }

    /// A name shown as `shown` with the key `key`, sharing one allocation when they are equal.
    fn new(shown: Rc<str>, key: String) -> Name {
        let key = if *key == *shown {
            shown.clone()
        } else {
            Rc::from(key)
        };
        Name { shown, key }
    }
}

/// Why a name is refused. The `char` is the offending character; Display names it as `U+XXXX`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum NameError {
    /// No characters at all.
    Empty,
    /// More Unicode scalar values than the limit, counted after normalisation.
    TooLong {
        /// The limit.
        max_chars: usize,
    },
    /// Only blanks, invisible characters and combining marks: nothing a reader would see.
    NothingVisible,
    /// A bidirectional control, which can reorder the text around it.
    BidiControl(char),
    /// A line or paragraph separator (general category Zl or Zp).
    LineBreak(char),
    /// A control character (Cc).
    Control(char),
    /// A Default_Ignorable_Code_Point: a character drawn as nothing.
    Invisible(char),
    /// Any other format character (Cf).
    Format(char),
    /// A private-use character (Co), drawn differently on every device.
    PrivateUse(char),
    /// An unassigned code point or a noncharacter (Cn).
    Unassigned(char),
    /// White space other than U+0020, or a character drawn as a blank.
    OtherBlank(char),
    /// A space at the start or the end.
    EdgeSpace,
    /// Two spaces in a row.
    DoubleSpace,
    /// The double quote `"`.
    Quote,
    /// A combining mark first, with no letter to sit on: drawn on whatever comes before the name on screen.
    LeadingMark,
    /// U+0345 COMBINING GREEK YPOGEGRAMMENI not composed with a Greek vowel: its case mappings are letters.
    LooseYpogegrammeni,
    /// Letters of scripts that are mixed to imitate other names, such as Latin with Cyrillic.
    MixedScripts,
    /// A name the chat keeps for itself.
    Reserved,
}

impl fmt::Display for NameError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            NameError::Empty => f.write_str("the name is empty"),
            NameError::TooLong { max_chars } => {
                write!(f, "the name is longer than {max_chars} characters")
            }
            NameError::NothingVisible => f.write_str("the name has nothing visible in it"),
            NameError::BidiControl(c) => write!(
                f,
                "the name contains a text direction control ({}), which can reorder what others see",
                CodePoint(c)
            ),
            NameError::LineBreak(c) => write!(
                f,
                "the name contains a line or paragraph separator ({})",
                CodePoint(c)
            ),
            NameError::Control(c) => write!(
                f,
                "the name contains a control character ({})",
                CodePoint(c)
            ),
            NameError::Invisible(c) => write!(
                f,
                "the name contains an invisible character ({})",
                CodePoint(c)
            ),
            NameError::Format(c) => write!(
                f,
                "the name contains a formatting character ({})",
                CodePoint(c)
            ),
            NameError::PrivateUse(c) => write!(
                f,
                "the name contains a private-use character ({}), which looks different on every device",
                CodePoint(c)
            ),
            NameError::Unassigned(c) => write!(
                f,
                "the name contains {}, which is not an assigned character",
                CodePoint(c)
            ),
            NameError::OtherBlank(c) => write!(
                f,
                "the name contains a blank other than the plain space ({})",
                CodePoint(c)
            ),
            NameError::EdgeSpace => f.write_str("the name starts or ends with a space"),
            NameError::DoubleSpace => f.write_str("the name has two spaces in a row"),
            NameError::Quote => f.write_str("the name contains a double quote (\")"),
            NameError::LeadingMark => f.write_str("the name starts with a combining mark"),
            NameError::LooseYpogegrammeni => f.write_str(
                "the name contains U+0345 COMBINING GREEK YPOGEGRAMMENI on something other than a Greek vowel",
            ),
            NameError::MixedScripts => f.write_str(
                "the name mixes letters of different scripts in a way used to imitate other names, \
                 such as Latin with Cyrillic or Greek",
            ),
            NameError::Reserved => f.write_str("the name is reserved"),
        }
    }
}

impl std::error::Error for NameError {}

/// Writes a character as `U+XXXX`.
struct CodePoint(char);

impl fmt::Display for CodePoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "U+{:04X}", u32::from(self.0))
    }
}

/// Judge a user name of at most `max_chars` scalar values (after NFKC): its shown form and key, or why not.
pub(super) fn user_name(raw: &str, max_chars: usize) -> Result<Name, NameError> {
    if !is_plain_ascii(raw, max_chars) {
        return any_user_name(raw, max_chars);
    }
    let key = ascii_key_of(raw);
    if is_reserved(&key) {
        return Err(NameError::Reserved);
    }
    // No script check: ASCII is Latin and Common only, which always mix acceptably.
    Ok(Name::new(Rc::from(raw), key))
}

/// [`user_name`] the long way, for any text.
fn any_user_name(raw: &str, max_chars: usize) -> Result<Name, NameError> {
    let shown = normalised(raw, max_chars)?;
    let key = key_of(&shown);
    if is_reserved(&key) {
        return Err(NameError::Reserved);
    }
    if !scripts_mix_acceptably(&shown) {
        return Err(NameError::MixedScripts);
    }
    Ok(Name::new(Rc::from(shown), key))
}

/// Whether `key` is the key of a name the chat keeps for itself.
fn is_reserved(key: &str) -> bool {
    RESERVED_KEYS.contains(&key)
}

/// Judge a room name of at most `max_chars` scalar values (after NFKC): the form to store and show, or why not.
/// Borrowed when `raw` is plain ASCII that needs no change.
pub(super) fn room_name(raw: &str, max_chars: usize) -> Result<Cow<'_, str>, NameError> {
    if is_plain_ascii(raw, max_chars) {
        return Ok(Cow::Borrowed(raw));
    }
    normalised(raw, max_chars).map(Cow::Owned)
}

/// Whether `raw` is a name that needs neither normalisation nor any further check: printable ASCII, no `"`, at
/// most `max_chars` bytes, no space at either end and never two in a row. NFKC leaves ASCII as it is.
fn is_plain_ascii(raw: &str, max_chars: usize) -> bool {
    let bytes = raw.as_bytes();
    if bytes.len() > max_chars || bytes.first() == Some(&b' ') || bytes.last() == Some(&b' ') {
        return false;
    }
    let mut previous = 0;
    for &byte in bytes {
        if !(b' '..=b'~').contains(&byte) || byte == b'"' || (byte == b' ' && previous == b' ') {
            return false;
        }
        previous = byte;
    }
    !bytes.is_empty()
}

/// `raw` in NFKC, if that passes every character and space rule and is at most `max_chars` scalar values long.
fn normalised(raw: &str, max_chars: usize) -> Result<String, NameError> {
    if raw.is_empty() {
        return Err(NameError::Empty);
    }
    let too_long = NameError::TooLong { max_chars };
    if raw.len() > max_chars.saturating_mul(MAX_RAW_BYTES_PER_CHAR) {
        return Err(too_long);
    }
    let mut shown = String::with_capacity(raw.len());
    for (count, c) in raw.nfkc().enumerate() {
        if count == max_chars {
            return Err(too_long);
        }
        shown.push(c);
    }
    if !shown.chars().any(is_visible) {
        return Err(NameError::NothingVisible);
    }
    check_characters(&shown)?;
    if shown.chars().next().is_some_and(is_mark) {
        return Err(NameError::LeadingMark);
    }
    // On a Greek vowel NFKC composes it (ᾳ, ῃ, ῳ and their accented forms); loose, its capital Ι would move
    // across the marks NFKC ordered it among, so `upper(name)` would be another name.
    if shown.contains(YPOGEGRAMMENI) {
        return Err(NameError::LooseYpogegrammeni);
    }
    Ok(shown)
}

/// U+0345 COMBINING GREEK YPOGEGRAMMENI, the iota subscript: a combining mark whose upper and lower cases are letters.
const YPOGEGRAMMENI: char = '\u{345}';

/// Whether `c` is a combining mark (Mn, Mc, Me): drawn on the character before it.
fn is_mark(c: char) -> bool {
    matches!(
        c.general_category(),
        GeneralCategory::NonspacingMark
            | GeneralCategory::SpacingMark
            | GeneralCategory::EnclosingMark
    )
}

/// Whether `c` shows on its own: not white space, not a blank, not drawn as nothing, not a combining mark.
/// Unassigned and private-use characters count as visible, so that a name of them is refused for what they are.
fn is_visible(c: char) -> bool {
    !c.is_whitespace()
        && c != BRAILLE_BLANK
        && !is_default_ignorable(c)
        && !matches!(
            c.general_category(),
            GeneralCategory::Control
                | GeneralCategory::Format
                | GeneralCategory::LineSeparator
                | GeneralCategory::ParagraphSeparator
                | GeneralCategory::NonspacingMark
                | GeneralCategory::EnclosingMark
        )
}

/// The first character or space rule that normalised `shown` breaks, in reading order.
fn check_characters(shown: &str) -> Result<(), NameError> {
    let mut previous = None;
    let mut chars = shown.chars().peekable();
    while let Some(c) = chars.next() {
        let next = chars.peek().copied();
        if c == ' ' {
            if previous.is_none() || next.is_none() {
                return Err(NameError::EdgeSpace);
            }
            if previous == Some(' ') {
                return Err(NameError::DoubleSpace);
            }
        } else if let Some(refusal) = refusal(c, previous, next) {
            return Err(refusal);
        }
        previous = Some(c);
    }
    Ok(())
}

/// Why the character `c`, between `previous` and `next`, is refused, if it is; `c` is not U+0020.
fn refusal(c: char, previous: Option<char>, next: Option<char>) -> Option<NameError> {
    if c == '"' {
        return Some(NameError::Quote);
    }
    if is_bidi_control(c) {
        return Some(NameError::BidiControl(c));
    }
    match c.general_category() {
        GeneralCategory::LineSeparator | GeneralCategory::ParagraphSeparator => {
            return Some(NameError::LineBreak(c))
        }
        GeneralCategory::Control => return Some(NameError::Control(c)),
        GeneralCategory::PrivateUse => return Some(NameError::PrivateUse(c)),
        GeneralCategory::Unassigned | GeneralCategory::Surrogate => {
            return Some(NameError::Unassigned(c))
        }
        _ => {}
    }
    if is_default_ignorable(c) && !is_emoji_glue(c, previous, next) {
        return Some(NameError::Invisible(c));
    }
    if c.general_category() == GeneralCategory::Format && !is_emoji_glue(c, previous, next) {
        return Some(NameError::Format(c));
    }
    if c.is_whitespace() || c == BRAILLE_BLANK {
        return Some(NameError::OtherBlank(c));
    }
    None
}

/// The Bidi_Control characters (UAX #9): ALM, LRM, RLM, the embeddings and overrides, and the isolates.
fn is_bidi_control(c: char) -> bool {
    matches!(
        c,
        '\u{061C}' | '\u{200E}' | '\u{200F}' | '\u{202A}'..='\u{202E}' | '\u{2066}'..='\u{2069}'
    )
}

/// Whether `c` has the Default_Ignorable_Code_Point property (DerivedCoreProperties.txt), assigned or not.
/// None of the crates exports the property itself; `default_ignorables_are_what_the_skeleton_drops` checks this
/// list against the table `unicode-security` removes in its skeleton, over every code point.
fn is_default_ignorable(c: char) -> bool {
    matches!(
        c,
        '\u{AD}'
            | '\u{34F}'
            | '\u{61C}'
            | '\u{115F}'..='\u{1160}'
            | '\u{17B4}'..='\u{17B5}'
            | '\u{180B}'..='\u{180F}'
            | '\u{200B}'..='\u{200F}'
            | '\u{202A}'..='\u{202E}'
            | '\u{2060}'..='\u{206F}'
            | '\u{3164}'
            | '\u{FE00}'..='\u{FE0F}'
            | '\u{FEFF}'
            | '\u{FFA0}'
            | '\u{FFF0}'..='\u{FFF8}'
            | '\u{1BCA0}'..='\u{1BCA3}'
            | '\u{1D173}'..='\u{1D17A}'
            | '\u{E0000}'..='\u{E0FFF}'
    )
}

/// Whether `c` is a variation selector-16 or a zero width joiner where an emoji sequence puts it (UTS #51): VS16
/// right after an emoji character, ZWJ between two non-ASCII emoji (the first may end in VS16).
fn is_emoji_glue(c: char, previous: Option<char>, next: Option<char>) -> bool {
    match c {
        EMOJI_PRESENTATION => previous.is_some_and(|p| p.is_emoji_char()),
        ZERO_WIDTH_JOINER => {
            previous.is_some_and(|p| p == EMOJI_PRESENTATION || is_non_ascii_emoji(p))
                && next.is_some_and(is_non_ascii_emoji)
        }
        _ => false,
    }
}

/// An Emoji=Yes character outside ASCII (ASCII digits, `#` and `*` are Emoji=Yes for keycaps).
fn is_non_ascii_emoji(c: char) -> bool {
    !c.is_ascii() && c.is_emoji_char()
}

/// Whether the scripts of `shown` are at most "Moderately Restrictive" (UTS #39 5.2): one script (Han with kana,
/// Hangul or Bopomofo counting as one), or Latin and Han with kana, Hangul or Bopomofo, or Latin and one other
/// Recommended script that is neither Cyrillic nor Greek. Common and Inherited characters go with any script.
fn scripts_mix_acceptably(shown: &str) -> bool {
    let mut all = AugmentedScriptSet::default();
    let mut all_but_latin = AugmentedScriptSet::default();
    for c in shown.chars() {
        let scripts = AugmentedScriptSet::for_char(c);
        all.intersect_with(scripts);
        if !scripts.base.contains_script(Script::Latin) {
            all_but_latin.intersect_with(scripts);
        }
    }
    if !all.is_empty() || all_but_latin.hanb || all_but_latin.jpan || all_but_latin.kore {
        return true;
    }
    let mut others = all_but_latin.base.iter();
    match (others.next(), others.next()) {
        (Some(other), None) => {
            other.is_recommended() && other != Script::Cyrillic && other != Script::Greek
        }
        _ => false,
    }
}

/// The key of an NFKC name: `skeleton(lower(skeleton(upper(lower(shown)))))`, see the module doc.
fn key_of(shown: &str) -> String {
    let caseless = shown.to_lowercase().to_uppercase();
    let capitals: String = skeleton(&caseless).collect();
    skeleton(&capitals.to_lowercase()).collect()
}

/// [`key_of`] for a name that [`is_plain_ascii`] accepted, one byte at a time and in a single allocation.
fn ascii_key_of(plain: &str) -> String {
    let length = plain
        .bytes()
        .map(|byte| ascii_key_exception(byte).map_or(1, str::len))
        .sum();
    let mut key = String::with_capacity(length);
    for byte in plain.bytes() {
        match ascii_key_exception(byte) {
            Some(part) => key.push_str(part),
            None => key.push(char::from(byte.to_ascii_lowercase())),
        }
    }
    key
}

/// What [`key_of`] makes of a printable ASCII character when that is not the character in lower case. Written
/// out so that the fast path needs no case mapping or table search; `ascii_key_parts_are_the_general_key` checks
/// every printable ASCII character against [`key_of`].
fn ascii_key_exception(byte: u8) -> Option<&'static str> {
    match byte {
        b'0' => Some("o"),
        b'1' | b'I' | b'i' | b'|' => Some("l"),
        b'M' | b'm' => Some("rn"),
        b'`' => Some("'"),
        b'"' => Some("''"),
        b'%' => Some("°/₀"),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const USER: usize = 32;
    const ROOM: usize = 64;

    fn key(raw: &str) -> String {
        match user_name(raw, USER) {
            Ok(name) => name.key.to_string(),
            Err(error) => panic!("{raw:?} refused: {error}"),
        }
    }

    fn refused(raw: &str) -> NameError {
        match user_name(raw, USER) {
            Ok(name) => panic!("{raw:?} accepted as {name:?}"),
            Err(error) => error,
        }
    }

    fn room_refused(raw: &str) -> NameError {
        match room_name(raw, ROOM) {
            Ok(room) => panic!("room {raw:?} accepted as {room:?}"),
            Err(error) => error,
        }
    }

    #[test]
    fn plain_names_are_kept_as_typed() {
        let name = user_name("ann", USER).unwrap();
        assert_eq!(&**name.shown(), "ann");
        assert_eq!(&**name.key(), "ann");
        assert_eq!(room_name("lobby", ROOM), Ok(Cow::Borrowed("lobby")));
    }

    #[test]
    fn a_key_equal_to_the_shown_name_shares_its_allocation() {
        let name = user_name("ann", USER).unwrap();
        assert!(Rc::ptr_eq(name.shown(), name.key()));
        let other = user_name("Ann", USER).unwrap();
        assert_eq!(&**other.key(), "ann");
        assert!(!Rc::ptr_eq(other.shown(), other.key()));
    }

    #[test]
    fn names_are_stored_in_nfkc() {
        assert_eq!(&**user_name("ａｎｎ", USER).unwrap().shown(), "ann");
        assert_eq!(&**user_name("Zoe\u{308}", USER).unwrap().shown(), "Zoë");
        assert_eq!(&**user_name("ﬁona", USER).unwrap().shown(), "fiona");
        assert_eq!(room_name("ｌｏｂｂｙ", ROOM).unwrap(), "lobby");
    }

    #[test]
    fn empty_names_are_refused() {
        assert_eq!(refused(""), NameError::Empty);
        assert_eq!(room_refused(""), NameError::Empty);
    }

    #[test]
    fn names_of_only_invisible_characters_are_refused() {
        for raw in [
            " ",
            "   ",
            "\u{200B}",
            "\u{200B}\u{2060}\u{FEFF}",
            "\u{3164}",
            "\u{2800}",
            "\u{A0}",
            "\u{3000}",
            "\u{301}",
            "\u{E0061}\u{E0062}",
        ] {
            assert_eq!(refused(raw), NameError::NothingVisible, "{raw:?}");
            assert_eq!(room_refused(raw), NameError::NothingVisible, "{raw:?}");
        }
    }

    #[test]
    fn length_is_counted_in_scalar_values_after_nfkc() {
        assert!(user_name(&"é".repeat(USER), USER).is_ok());
        assert!(user_name(&"e\u{301}".repeat(USER), USER).is_ok());
        let too_long = NameError::TooLong { max_chars: USER };
        assert_eq!(refused(&"é".repeat(USER + 1)), too_long);
        assert_eq!(refused(&"a".repeat(USER + 1)), too_long);
        assert_eq!(refused(&"\u{FDFA}".repeat(2)), too_long);
        assert_eq!(
            room_refused(&"😀".repeat(ROOM + 1)),
            NameError::TooLong { max_chars: ROOM }
        );
    }

    #[test]
    fn huge_names_are_refused_before_normalising() {
        assert_eq!(
            refused(&"\u{301}".repeat(100_000)),
            NameError::TooLong { max_chars: USER }
        );
    }

    #[test]
    fn zero_width_and_other_default_ignorables_are_refused() {
        for (raw, c) in [
            ("ann\u{200B}", '\u{200B}'),
            ("\u{2060}ann", '\u{2060}'),
            ("an\u{FEFF}n", '\u{FEFF}'),
            ("an\u{AD}n", '\u{AD}'),
            ("ann\u{34F}", '\u{34F}'),
            ("ann\u{FE0E}", '\u{FE0E}'),
            ("ann\u{FE0F}", '\u{FE0F}'),
            ("ann\u{E0100}", '\u{E0100}'),
            // NFKC turns the Hangul filler U+3164 into U+1160, and the error names what was normalised.
            ("an\u{3164}n", '\u{1160}'),
            ("a\u{200D}b", '\u{200D}'),
        ] {
            assert_eq!(refused(raw), NameError::Invisible(c), "{raw:?}");
            assert_eq!(room_refused(raw), NameError::Invisible(c), "{raw:?}");
        }
    }

    #[test]
    fn tag_characters_are_refused() {
        assert_eq!(refused("ann\u{E0061}"), NameError::Invisible('\u{E0061}'));
        assert_eq!(
            refused("🏴\u{E0067}\u{E0062}\u{E007F}"),
            NameError::Invisible('\u{E0067}')
        );
        assert_eq!(refused("ann\u{E0001}"), NameError::Invisible('\u{E0001}'));
    }

    #[test]
    fn bidi_controls_are_refused() {
        for c in [
            '\u{202E}', '\u{202A}', '\u{202D}', '\u{2066}', '\u{2069}', '\u{200E}', '\u{200F}',
            '\u{61C}',
        ] {
            let raw = format!("ann{c}x");
            assert_eq!(refused(&raw), NameError::BidiControl(c), "{raw:?}");
            assert_eq!(room_refused(&raw), NameError::BidiControl(c), "{raw:?}");
        }
    }

    #[test]
    fn line_and_paragraph_separators_are_refused() {
        assert_eq!(refused("ann\u{2028}x"), NameError::LineBreak('\u{2028}'));
        assert_eq!(refused("ann\u{2029}x"), NameError::LineBreak('\u{2029}'));
        assert_eq!(room_refused("a\u{2028}b"), NameError::LineBreak('\u{2028}'));
    }

    #[test]
    fn control_characters_are_refused() {
        for c in ['\0', '\t', '\n', '\r', '\u{7F}', '\u{85}', '\u{9B}'] {
            let raw = format!("a{c}b");
            assert_eq!(refused(&raw), NameError::Control(c), "{raw:?}");
            assert_eq!(room_refused(&raw), NameError::Control(c), "{raw:?}");
        }
    }

    #[test]
    fn other_format_characters_are_refused() {
        assert_eq!(refused("\u{600}12"), NameError::Format('\u{600}'));
        assert_eq!(refused("a\u{110BD}b"), NameError::Format('\u{110BD}'));
    }

    #[test]
    fn private_use_characters_are_refused() {
        assert_eq!(refused("ann\u{E000}"), NameError::PrivateUse('\u{E000}'));
        assert_eq!(refused("ann\u{F0000}"), NameError::PrivateUse('\u{F0000}'));
    }

    #[test]
    fn unassigned_code_points_and_noncharacters_are_refused() {
        assert_eq!(refused("ann\u{378}"), NameError::Unassigned('\u{378}'));
        assert_eq!(refused("ann\u{FFFF}"), NameError::Unassigned('\u{FFFF}'));
        assert_eq!(refused("ann\u{FDD0}"), NameError::Unassigned('\u{FDD0}'));
        assert_eq!(refused("ann\u{2065}"), NameError::Unassigned('\u{2065}'));
        assert_eq!(refused("\u{378}"), NameError::Unassigned('\u{378}'));
    }

    #[test]
    fn white_space_other_than_the_plain_space_is_refused() {
        assert_eq!(refused("a\u{1680}b"), NameError::OtherBlank('\u{1680}'));
        assert_eq!(refused("ann\u{2800}"), NameError::OtherBlank('\u{2800}'));
        assert_eq!(
            room_refused("a\u{1680}b"),
            NameError::OtherBlank('\u{1680}')
        );
    }

    #[test]
    fn no_break_spaces_become_plain_spaces_inside_a_name() {
        assert_eq!(
            &**user_name("José\u{A0}María", USER).unwrap().shown(),
            "José María"
        );
        assert_eq!(
            &**user_name("山田\u{3000}太郎", USER).unwrap().shown(),
            "山田 太郎"
        );
        assert_eq!(&**user_name("a\u{202F}b", USER).unwrap().shown(), "a b");
        assert_eq!(key("José\u{A0}María"), key("José María"));
    }

    #[test]
    fn a_trailing_no_break_space_is_refused() {
        assert_eq!(refused("ann\u{A0}"), NameError::EdgeSpace);
        assert_eq!(refused("\u{3000}ann"), NameError::EdgeSpace);
    }

    #[test]
    fn spaces_at_either_end_are_refused() {
        assert_eq!(refused(" ann"), NameError::EdgeSpace);
        assert_eq!(refused("ann "), NameError::EdgeSpace);
        assert_eq!(refused("zoë "), NameError::EdgeSpace);
        assert_eq!(room_refused(" lobby"), NameError::EdgeSpace);
    }

    #[test]
    fn two_spaces_in_a_row_are_refused() {
        assert_eq!(refused("ann  lee"), NameError::DoubleSpace);
        assert_eq!(refused("ann \u{A0}lee"), NameError::DoubleSpace);
        assert_eq!(room_refused("the  lobby"), NameError::DoubleSpace);
    }

    #[test]
    fn double_quotes_are_refused() {
        assert_eq!(refused("x\" left the room. User \"ann"), NameError::Quote);
        assert_eq!(refused("ann\u{FF02}"), NameError::Quote);
        assert_eq!(room_refused("\"lobby\""), NameError::Quote);
    }

    #[test]
    fn the_reserved_name_is_refused_in_any_look_alike() {
        for raw in [
            "system",
            "System",
            "SYSTEM",
            "ѕуѕtem",
            "ѕуѕтем",
            "ｓｙｓｔｅｍ",
            "systern",
        ] {
            assert_eq!(user_name(raw, USER), Err(NameError::Reserved), "{raw:?}");
        }
        assert_eq!(room_name("system", ROOM), Ok(Cow::Borrowed("system")));
        assert!(user_name("systems", USER).is_ok());
    }

    #[test]
    fn reserved_keys_are_the_keys_of_the_reserved_names() {
        assert_eq!(RESERVED_KEYS, [key_of("system")]);
    }

    #[test]
    fn case_does_not_make_a_different_person() {
        assert_eq!(key("Ann"), key("ann"));
        assert_eq!(key("ANN"), key("ann"));
        assert_eq!(key("Zoë"), key("ZOË"));
        assert_eq!(key("Straße"), key("STRASSE"));
        assert_eq!(key("Straße"), key("Straẞe"));
        assert_eq!(key("ΟΔΟΣ"), key("οδος"));
    }

    #[test]
    fn cyrillic_look_alikes_are_the_same_person() {
        assert_eq!(key_of("аnn"), key("ann"));
        assert_eq!(key("аре"), key("ape"));
        assert_eq!(key("СОРЕ"), key("cope"));
    }

    #[test]
    fn greek_capitals_imitating_latin_are_the_same_person() {
        assert_eq!(key("ΑΝΝ"), key("ANN"));
        assert_eq!(key("ΒΟΒ"), key("bob"));
    }

    #[test]
    fn latin_mixed_with_cyrillic_or_greek_is_refused() {
        assert_eq!(refused("аnn"), NameError::MixedScripts);
        assert_eq!(refused("pаypal"), NameError::MixedScripts);
        assert_eq!(refused("Ivan Иванов"), NameError::MixedScripts);
        assert_eq!(refused("ann α"), NameError::MixedScripts);
    }

    #[test]
    fn one_script_or_latin_with_one_other_recommended_script_is_accepted() {
        for raw in [
            "Kim 김",
            "Sam سام",
            "Tanaka 田中さん",
            "Li 李",
            "Ави 2",
            "Ελένη",
        ] {
            assert!(user_name(raw, USER).is_ok(), "{raw:?}");
        }
        assert!(room_name("аnn", ROOM).is_ok());
    }

    #[test]
    fn confusables_from_the_ts39_table_are_the_same_person() {
        assert_eq!(key("rn"), key("m"), "deliberate: TS #39 maps m to rn");
        assert_eq!(key("Ian"), key("lan"));
        assert_eq!(key("B0B"), key("bob"));
        assert_eq!(key("l33t"), key("I33t"));
    }

    #[test]
    fn legitimate_names_are_accepted() {
        for raw in [
            "Zoë",
            "李小龍",
            "José María",
            "anna",
            "O'Brien",
            "🙂 sam",
            "محمد",
            "שלום עליכם",
            "Ἀλέξανδρος",
            "Пётр",
            "ᏣᎳᎩ",
            "R2-D2",
            "ann_99",
        ] {
            let name = user_name(raw, USER);
            assert_eq!(name.as_ref().map(|n| &**n.shown()), Ok(raw), "{raw:?}");
        }
    }

    #[test]
    fn legitimate_names_stay_distinct() {
        let names = [
            "ann",
            "Zoë",
            "Zoe",
            "李小龍",
            "José María",
            "anna",
            "O'Brien",
            "🙂 sam",
            "sam",
            "محمد",
            "שלום",
        ];
        for (i, a) in names.iter().enumerate() {
            for b in &names[i + 1..] {
                assert_ne!(key(a), key(b), "{a:?} and {b:?}");
            }
        }
    }

    #[test]
    fn emoji_sequences_keep_their_joiners_and_selectors() {
        for raw in [
            "❤\u{FE0F} ann",
            "👩\u{200D}💻 bo",
            "👩🏽\u{200D}💻",
            "🏳\u{FE0F}\u{200D}🌈",
            "1\u{FE0F}\u{20E3}",
        ] {
            let name = user_name(raw, USER);
            assert_eq!(name.as_ref().map(|n| &**n.shown()), Ok(raw), "{raw:?}");
        }
        assert_eq!(key("❤\u{FE0F} ann"), key("❤ ann"));
        assert_eq!(key("👩\u{200D}💻"), key("👩💻"));
    }

    #[test]
    fn joiners_and_selectors_outside_emoji_sequences_are_refused() {
        assert_eq!(refused("\u{FE0F}ann"), NameError::Invisible('\u{FE0F}'));
        assert_eq!(
            refused("❤\u{FE0F}\u{FE0F}"),
            NameError::Invisible('\u{FE0F}')
        );
        assert_eq!(
            refused("👩\u{200D}\u{200D}💻"),
            NameError::Invisible('\u{200D}')
        );
        assert_eq!(refused("👩\u{200D}"), NameError::Invisible('\u{200D}'));
        assert_eq!(refused("1\u{200D}2"), NameError::Invisible('\u{200D}'));
    }

    #[test]
    fn every_issue_example_is_refused_or_collides_with_ann() {
        let ann = key("ann");
        for raw in [
            "ann\u{200B}",
            "\u{2060}ann",
            "ann\u{A0}",
            "аnn",
            "ann\u{202E}",
            "\u{FEFF}ann",
            "ann\u{E0061}",
            "ann\u{2028}",
            "\u{200B}\u{200B}",
            "x\" left the room. User \"ann",
        ] {
            if let Ok(name) = user_name(raw, USER) {
                assert_eq!(*name.key, *ann, "{raw:?} accepted as someone else");
            }
        }
    }

    #[test]
    fn ascii_key_parts_are_the_general_key() {
        for byte in b' '..=b'~' {
            let text = char::from(byte).to_string();
            let part = ascii_key_exception(byte).map_or_else(|| text.to_lowercase(), str::to_owned);
            assert_eq!(part, key_of(&text), "{text:?}");
        }
    }

    #[test]
    fn default_ignorables_are_what_the_skeleton_drops() {
        for c in (0..=0x10FFFF).filter_map(char::from_u32) {
            let dropped = skeleton(c.encode_utf8(&mut [0; 4])).next().is_none();
            assert_eq!(dropped, is_default_ignorable(c), "{}", CodePoint(c));
        }
    }

    #[test]
    fn the_unicode_tables_are_of_one_version() {
        let (major, minor, update) = unicode_normalization::UNICODE_VERSION;
        let normalization = (u64::from(major), u64::from(minor), u64::from(update));
        assert_eq!(normalization, unicode_security::UNICODE_VERSION);
        assert_eq!(normalization, unicode_script::UNICODE_VERSION);
        assert_eq!(normalization, unicode_properties::UNICODE_VERSION);
    }

    #[test]
    fn errors_name_the_character_for_people() {
        assert_eq!(
            NameError::Invisible('\u{200B}').to_string(),
            "the name contains an invisible character (U+200B)"
        );
        assert_eq!(
            NameError::TooLong { max_chars: 32 }.to_string(),
            "the name is longer than 32 characters"
        );
        assert_eq!(
            NameError::BidiControl('\u{E0001}').to_string(),
            "the name contains a text direction control (U+E0001), which can reorder what others see"
        );
    }

    /// A character for names: mostly printable ASCII, often a character some rule is about, sometimes anything.
    fn name_char() -> impl Strategy<Value = char> {
        prop_oneof![
            6 => proptest::char::range(' ', '~'),
            2 => proptest::sample::select(vec![
                ' ', '"', '\u{A0}', '\u{3000}', '\u{1680}', '\u{2800}', '\u{200B}', '\u{200D}', '\u{2060}',
                '\u{FEFF}', '\u{AD}', '\u{FE0F}', '\u{FE0E}', '\u{E0061}', '\u{202E}', '\u{2066}', '\u{200F}',
                '\u{2028}', '\u{2029}', '\u{85}', '\t', '\u{E000}', '\u{378}', '\u{3164}', '\u{FF02}',
                '\u{FDFA}', '\u{FB01}', '\u{212A}', '\u{130}', '\u{131}', '\u{DF}', '\u{1E9E}', '\u{3C2}',
                '\u{3A3}', '\u{345}', '\u{1FB3}', '\u{1F0}', '\u{149}', '\u{2764}', '\u{1F469}', '\u{1F4BB}',
                '\u{1F3FD}', '\u{20E3}', '\u{430}', '\u{410}', '\u{391}', '\u{3BD}', '\u{5D0}', '\u{627}',
                '\u{674E}', '\u{3055}', '\u{AE40}', '\u{13A0}', '\u{AB70}',
            ]),
            2 => proptest::char::range('\u{A1}', '\u{52F}'),
            1 => proptest::char::range('\u{300}', '\u{36F}'),
            1 => proptest::char::range('\u{1E00}', '\u{1FFF}'),
            2 => any::<char>(),
        ]
    }

    fn name_text() -> impl Strategy<Value = String> {
        proptest::collection::vec(name_char(), 0..40).prop_map(String::from_iter)
    }

    /// The rules an accepted name must meet, written out apart from the code that enforces them.
    fn breaks_a_rule(shown: &str) -> Option<String> {
        let chars: Vec<char> = shown.chars().collect();
        if chars.is_empty() || chars.len() > USER {
            return Some(format!("{} characters", chars.len()));
        }
        if matches!(
            chars[0].general_category(),
            GeneralCategory::NonspacingMark
                | GeneralCategory::SpacingMark
                | GeneralCategory::EnclosingMark
        ) {
            return Some("a combining mark first".into());
        }
        if chars.contains(&'\u{345}') {
            return Some("U+0345 not composed with a vowel".into());
        }
        if chars.first() == Some(&' ') || chars.last() == Some(&' ') || shown.contains("  ") {
            return Some("space at an end or doubled".into());
        }
        for (i, &c) in chars.iter().enumerate() {
            let category = c.general_category();
            let glue =
                (c == '\u{FE0F}' && i > 0) || (c == '\u{200D}' && i > 0 && i + 1 < chars.len());
            let bad = c == '"'
                || c == '\u{2800}'
                || (c.is_whitespace() && c != ' ')
                || (is_default_ignorable(c) && !glue)
                || matches!(
                    category,
                    GeneralCategory::Control
                        | GeneralCategory::PrivateUse
                        | GeneralCategory::Unassigned
                        | GeneralCategory::Surrogate
                        | GeneralCategory::LineSeparator
                        | GeneralCategory::ParagraphSeparator
                )
                || (category == GeneralCategory::Format && !glue);
            if bad {
                return Some(format!("{} ({category:?})", CodePoint(c)));
            }
        }
        None
    }

    #[test]
    fn a_loose_iota_subscript_is_refused_and_a_composed_one_keys_like_its_capitals() {
        // Found by the property below: in `[` U+0345 U+0312, NFKC moves U+0345 after U+0312, while the name typed
        // in capitals has the letter Ι before it, so the two had different keys.
        for raw in [
            "[\u{345}\u{312}",
            "x\u{345}",
            "\u{3B5}\u{301}\u{345}\u{302}",
        ] {
            assert_eq!(
                user_name(raw, USER),
                Err(NameError::LooseYpogegrammeni),
                "{raw:?}"
            );
            assert_eq!(
                room_name(raw, USER),
                Err(NameError::LooseYpogegrammeni),
                "{raw:?}"
            );
        }
        let subscript =
            user_name("\u{3B1}\u{345}", USER).expect("alpha with iota subscript composes");
        assert_eq!(&**subscript.shown(), "\u{1FB3}");
        let capitals = user_name("\u{391}\u{399}", USER).expect("alpha iota");
        assert_eq!(subscript.key(), capitals.key());
    }

    #[test]
    fn a_name_may_not_start_with_a_combining_mark() {
        // Found by the property below: a leading U+0345 (which NFKC moves after U+0312, and whose capital is Greek
        // Iota) gave a name whose case variants had another key. Such a name was never a sensible one.
        for raw in ["\u{345}\u{312}\u{1F20}", "\u{301}ann", "\u{20DD}x"] {
            assert_eq!(user_name(raw, USER), Err(NameError::LeadingMark), "{raw:?}");
            assert_eq!(room_name(raw, USER), Err(NameError::LeadingMark), "{raw:?}");
        }
        assert!(
            user_name("Zoe\u{308}", USER).is_ok(),
            "a mark after a letter is fine"
        );
    }

    proptest! {
        // Failures are not persisted to a file next to this one: each one found becomes a named test above.
        #![proptest_config(ProptestConfig {
            cases: 1024,
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn accepted_names_are_nfkc_clean_and_keyed_regardless_of_form_or_case(raw in name_text()) {
            if let Ok(name) = user_name(&raw, USER) {
                prop_assert!(unicode_normalization::is_nfkc(name.shown()), "{:?}", name);
                prop_assert_eq!(breaks_a_rule(name.shown()), None, "{:?}", name);
                let nfkc: String = raw.nfkc().collect();
                prop_assert_eq!(user_name(&nfkc, USER), Ok(name.clone()));
                for variant in [
                    raw.to_uppercase(),
                    raw.to_lowercase(),
                    name.shown().to_uppercase(),
                    name.shown().to_lowercase(),
                ] {
                    if let Ok(other) = user_name(&variant, USER) {
                        prop_assert_eq!(other.key(), name.key(), "{:?} vs {:?}", variant, name);
                    }
                }
            }
        }

        #[test]
        fn accepted_room_names_are_nfkc_and_clean(raw in name_text()) {
            if let Ok(room) = room_name(&raw, USER) {
                prop_assert!(unicode_normalization::is_nfkc(&room), "{:?}", room);
                prop_assert_eq!(breaks_a_rule(&room), None, "{:?}", room);
            }
        }

        #[test]
        fn the_ascii_fast_path_agrees_with_the_general_one(
            raw in proptest::collection::vec(proptest::char::range(' ', '~'), 0..40).prop_map(String::from_iter),
        ) {
            prop_assert_eq!(user_name(&raw, USER), any_user_name(&raw, USER));
            prop_assert_eq!(room_name(&raw, USER).map(Cow::into_owned), normalised(&raw, USER));
        }
    }
}

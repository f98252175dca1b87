//! The padding text of fan-out messages (`--padding words`): English-like chat drawn from a fixed seed, so every
//! run, and every tool that needs the same bytes (benches/quick_corpus.rs includes this file), sends the same text.
//! Self-contained on purpose: it uses nothing from the generator, so the root crate's benches can include it.

/// Common words of English chat, most frequent first; `chat_text` draws the earlier ones more often.
const CHAT_WORDS: &[&str] = &[
    "the",
    "to",
    "I",
    "you",
    "a",
    "and",
    "it",
    "is",
    "that",
    "for",
    "of",
    "in",
    "we",
    "on",
    "this",
    "be",
    "have",
    "can",
    "just",
    "so",
    "with",
    "not",
    "are",
    "do",
    "was",
    "if",
    "at",
    "but",
    "will",
    "what",
    "get",
    "all",
    "about",
    "think",
    "now",
    "there",
    "know",
    "like",
    "they",
    "me",
    "my",
    "from",
    "yes",
    "no",
    "one",
    "up",
    "out",
    "good",
    "time",
    "today",
    "tomorrow",
    "meeting",
    "thanks",
    "please",
    "someone",
    "anyone",
    "release",
    "build",
    "deploy",
    "again",
    "later",
    "look",
    "check",
    "still",
    "going",
    "need",
    "working",
    "fixed",
    "issue",
    "branch",
    "review",
    "test",
    "tests",
    "failing",
    "green",
    "lunch",
    "coffee",
    "morning",
    "afternoon",
    "team",
    "call",
    "sure",
    "sounds",
    "great",
    "idea",
    "maybe",
    "after",
    "before",
    "should",
    "would",
    "could",
    "next",
    "week",
    "done",
];

/// About `len` bytes of English-like chat text: sentences of common words with capitals, commas and stops,
/// drawn from a fixed seed so every run sends the same text.
pub fn chat_text(len: usize) -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15_u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut text = Vec::with_capacity(len + 64);
    let mut words_left = 0;
    while text.len() < len {
        let starts_sentence = words_left == 0;
        if starts_sentence {
            words_left = 4 + next() % 12;
        }
        // Squaring a uniform draw favours the frequent words, as real text does.
        let u = (next() % 1024) as usize;
        let word = CHAT_WORDS[u * u * CHAT_WORDS.len() / (1024 * 1024)];
        if !text.is_empty() {
            text.push(b' ');
        }
        let at = text.len();
        text.extend_from_slice(word.as_bytes());
        if starts_sentence {
            text[at] = text[at].to_ascii_uppercase();
        }
        words_left -= 1;
        if words_left == 0 {
            text.push(if next() % 5 == 0 { b'?' } else { b'.' });
        } else if next() % 9 == 0 {
            text.push(b',');
        }
    }
    text
}

//! What the chat benches send: English-like message content, a different run of words in every message, so that
//! it compresses as chat does. Shared by `compress_chat` and `inflate_chat`; it must not measure anything.

const WORDS: [&str; 24] = [
    "meeting",
    "tomorrow",
    "the",
    "release",
    "notes",
    "room",
    "anyone",
    "seen",
    "proposal",
    "around",
    "afternoon",
    "thanks",
    "roadmap",
    "weather",
    "coffee",
    "build",
    "green",
    "deploy",
    "again",
    "later",
    "question",
    "great",
    "idea",
    "lunch",
];

/// `count` message contents of `words` words each, drawn by one xorshift stream (the same every run).
pub fn contents(count: usize, words: usize) -> Vec<String> {
    let mut state = 0x2545_f491_4f6c_dd1d_u64;
    (0..count)
        .map(|_| {
            let content: Vec<&str> = (0..words)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    WORDS[(state % WORDS.len() as u64) as usize]
                })
                .collect();
            content.join(" ")
        })
        .collect()
}

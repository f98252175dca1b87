//! Fuzz target `utf8`: `protocol::utf8::Utf8Validator` against `std::str::from_utf8` under random
//! fragmentation.
//!
//! Input: `[flags][n][plan][bytes]` (see `roomcast_fuzz::raw`; flags unused, plan byte 0 is an empty piece).
//! Asserts that the validator, fed the pieces and then finished, accepts exactly what std accepts, and that it
//! fails fast: on the piece holding the first byte after which the text can no longer be the start of valid
//! UTF-8, never earlier and never later. Text that is only cut short at the end is refused by `finish`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use roomcast::protocol::utf8::Utf8Validator;
use roomcast_fuzz::chunks::Chunker;
use roomcast_fuzz::raw::RawInput;

fuzz_target!(|data: &[u8]| {
    let input = RawInput::parse(data);
    let bytes = input.stream;
    let first_bad = first_bad_byte(bytes);
    let mut validator = Utf8Validator::new();
    let mut start = 0;
    for piece in Chunker::new(input.plan).split(bytes) {
        let end = start + piece.len();
        let result = validator.feed(piece);
        // The piece holds the first bad byte when it ends past it (an empty piece never holds it).
        let holds_bad = first_bad.is_some_and(|bad| bad < end);
        assert_eq!(
            result.is_err(),
            holds_bad,
            "piece {start}..{end} of {bytes:x?}, first bad byte {first_bad:?}"
        );
        if result.is_err() {
            return;
        }
        start = end;
    }
    assert!(first_bad.is_none());
    assert_eq!(
        validator.finish().is_ok(),
        std::str::from_utf8(bytes).is_ok(),
        "finish on {bytes:x?}"
    );
});

/// The index of the first byte that makes `bytes[..=index]` no longer a prefix of any valid UTF-8, or `None`
/// if every prefix is one (the text is valid, or valid but cut short at the end).
fn first_bad_byte(bytes: &[u8]) -> Option<usize> {
    let error = std::str::from_utf8(bytes).err()?;
    error.error_len()?;
    let start = error.valid_up_to();
    // The bad sequence begins at `start`; the first byte that rules it out is at most three bytes further.
    (start..bytes.len()).find(|&i| {
        std::str::from_utf8(&bytes[start..=i])
            .err()
            .is_some_and(|e| e.error_len().is_some())
    })
}

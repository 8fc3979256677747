//! libFuzzer target: `Envelope::decode` on arbitrary bytes (see `src/checks.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shoplens_fuzz::envelope_decode(data);
});

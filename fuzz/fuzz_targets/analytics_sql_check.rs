//! libFuzzer target: the analytics SQL gate on arbitrary text (see `src/checks.rs`).
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    shoplens_fuzz::analytics_sql_check(data);
});

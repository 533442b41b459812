//! Tests of the `fsck` formats. `xml_tests`, `stream_tests` and `gen_tests` are pure;
//! `tools` compares with the installed thin-provisioning-tools 0.9.0 (`thin_dump`,
//! `thin_restore`, `thin_check`, `thin_metadata_size`) and the sample images of
//! `tests/data/samples` (override with `THINLY_SAMPLES`). A missing tool skips loudly,
//! unless `CI` is set, where it fails (`thinly_test_support`'s rule).

mod gen_tests;
mod stream_tests;
mod tools;
mod xml_tests;

/// A sample file's text.
pub(super) fn sample_text(name: &str) -> String {
    let path = thinly_test_support::sample(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// True when `tool` is installed; otherwise skips loudly (or fails under CI).
pub(super) fn have_tool(tool: &str) -> bool {
    thinly_test_support::require_tool(tool).is_some()
}

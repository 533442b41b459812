//! The control-socket fuzz target's seed corpus (`fuzz/seeds/control_request`, with the
//! regressions its runs found) replayed through the same harness, so every `cargo test`
//! holds them without cargo-fuzz.

#[test]
fn every_control_fuzz_seed_passes_the_harness_oracles() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/seeds/control_request");
    let mut nr_seeds = 0;
    for entry in std::fs::read_dir(&dir).expect("the seed directory") {
        let path = entry.expect("a seed").path();
        let data = std::fs::read(&path).expect("a seed's bytes");
        eprintln!("seed {}", path.display());
        thinly_server::fuzzing::control_session(&data);
        nr_seeds += 1;
    }
    assert!(nr_seeds >= 10, "only {nr_seeds} seeds in {}", dir.display());
}

#[test]
fn an_over_long_request_line_is_refused_in_pieces_and_the_session_goes_on() {
    use thinly_server::control::{serve_lines, Response, MAX_REQUEST_BYTES};
    let (pool, _dev) = thinly_server::fuzzing::mem_pool();
    let mut input = vec![b'x'; MAX_REQUEST_BYTES as usize + 100];
    input.extend_from_slice(b"\n{\"op\":\"list\"}\n");
    let mut out = Vec::new();
    serve_lines(&pool, None, &input[..], &mut out);
    let answers: Vec<Response> = out
        .split(|&b| b == b'\n')
        .filter(|l| !l.is_empty())
        .map(|l| serde_json::from_slice(l).expect("a Response"))
        .collect();
    assert_eq!(answers.len(), 3, "two pieces of the long line, then the list");
    assert!(!answers[0].ok && !answers[1].ok);
    assert!(answers[2].ok, "{:?}", answers[2]);
    assert_eq!(answers[2].result[0]["name"], "vol0");
}

#[test]
fn bytes_that_are_not_utf8_end_the_session_without_an_answer() {
    let (pool, _dev) = thinly_server::fuzzing::mem_pool();
    let mut out = Vec::new();
    thinly_server::control::serve_lines(
        &pool,
        None,
        &b"{\"op\":\"list\"}\n\xff\xfe\n{\"op\":\"list\"}\n"[..],
        &mut out,
    );
    assert_eq!(out.iter().filter(|&&b| b == b'\n').count(), 1, "only the first line is answered");
}

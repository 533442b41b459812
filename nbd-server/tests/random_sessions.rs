//! Property tests over the same entry point as the fuzz target
//! (`thinly_nbd::fuzzing::run_session`): arbitrary bytes, and structured sessions —
//! a plausible handshake followed by random requests — must never panic, and every
//! request that reaches transmission gets a reply.

use proptest::prelude::*;
use thinly_nbd::fuzzing::run_session;
use thinly_nbd::proto::consts::*;
use thinly_nbd::proto::{HeaderMode, RequestHeader};

fn option(option: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn meta(queries: &[&str]) -> Vec<u8> {
    let mut v = 0u32.to_be_bytes().to_vec();
    v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        v.extend_from_slice(&(q.len() as u32).to_be_bytes());
        v.extend_from_slice(q.as_bytes());
    }
    v
}

/// A handshake ending in GO for the default export, in the given header mode.
fn handshake(mode: HeaderMode, ask_block_size: bool) -> Vec<u8> {
    let mut v = 3u32.to_be_bytes().to_vec();
    match mode {
        HeaderMode::Compact => {}
        HeaderMode::Structured => v.extend(option(OPT_STRUCTURED_REPLY, &[])),
        HeaderMode::Extended => v.extend(option(OPT_EXTENDED_HEADERS, &[])),
    }
    if mode != HeaderMode::Compact {
        v.extend(option(
            OPT_SET_META_CONTEXT,
            &meta(&["base:allocation", "qemu:allocation-depth"]),
        ));
    }
    let mut go = 0u32.to_be_bytes().to_vec();
    go.extend_from_slice(&(u16::from(ask_block_size)).to_be_bytes());
    if ask_block_size {
        go.extend_from_slice(&INFO_BLOCK_SIZE.to_be_bytes());
    }
    v.extend(option(OPT_GO, &go));
    v
}

fn mode_strategy() -> impl Strategy<Value = HeaderMode> {
    prop_oneof![Just(HeaderMode::Compact), Just(HeaderMode::Structured), Just(HeaderMode::Extended)]
}

/// Requests with plausible commands, flags, offsets and lengths around the export
/// size (256 KiB) and the boundaries that matter.
fn request_strategy() -> impl Strategy<Value = (u16, u16, u64, u64)> {
    let command = prop_oneof![0u16..=9, any::<u16>()];
    let flags = prop_oneof![0u16..=0x3f, any::<u16>()];
    let offset = prop_oneof![0u64..(300 << 10), Just(u64::MAX - 100), any::<u64>()];
    let length = prop_oneof![0u64..(70 << 10), Just(256 << 10), Just(u32::MAX as u64)];
    (command, flags, offset, length)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_bytes_never_panic_the_protocol_core(bytes in proptest::collection::vec(any::<u8>(), 0..2048)) {
        run_session(&bytes);
    }

    #[test]
    fn random_requests_after_a_valid_handshake_are_all_answered(
        chunk in 1u8..=255,
        mode in mode_strategy(),
        ask in any::<bool>(),
        requests in proptest::collection::vec(request_strategy(), 0..24),
    ) {
        let mut bytes = vec![chunk];
        bytes.extend(handshake(mode, ask));
        let mut expected = 0;
        for (i, (command, flags, offset, length)) in requests.into_iter().enumerate() {
            if command == CMD_DISC {
                continue;
            }
            let h = RequestHeader { flags, command, cookie: i as u64, offset, length };
            let payload = h.payload_len(mode);
            if mode != HeaderMode::Extended && payload > u64::from(u32::MAX) {
                continue;
            }
            if payload > 70 << 10 {
                continue; // a payload we will not supply would end the session early
            }
            h.encode(mode, &mut bytes);
            bytes.extend(std::iter::repeat_n(0xa5u8, payload as usize));
            expected += 1;
        }
        let summary = run_session(&bytes);
        prop_assert!(summary.transmission);
        prop_assert_eq!(summary.nr_requests, expected);
    }
}

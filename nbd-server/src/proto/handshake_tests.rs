use super::*;
use crate::export::ExportTable;
use crate::mem_export::MemExport;
use crate::proto::meta::FIRST_EXTRA_ID;

fn registry() -> Arc<dyn ExportRegistry> {
    let t = ExportTable::new();
    t.insert("disk", "a test disk", Arc::new(MemExport::new(1 << 20)));
    t.insert("ro", "", Arc::new(MemExport::new(1 << 20).with_read_only(true)));
    Arc::new(t)
}

fn opt(option: u32, data: &[u8]) -> Vec<u8> {
    let mut v = IHAVEOPT.to_be_bytes().to_vec();
    v.extend_from_slice(&option.to_be_bytes());
    v.extend_from_slice(&(data.len() as u32).to_be_bytes());
    v.extend_from_slice(data);
    v
}

fn info_data(name: &str, types: &[u16]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&(types.len() as u16).to_be_bytes());
    for t in types {
        v.extend_from_slice(&t.to_be_bytes());
    }
    v
}

fn meta_data(name: &str, queries: &[&str]) -> Vec<u8> {
    let mut v = (name.len() as u32).to_be_bytes().to_vec();
    v.extend_from_slice(name.as_bytes());
    v.extend_from_slice(&(queries.len() as u32).to_be_bytes());
    for q in queries {
        v.extend_from_slice(&(q.len() as u32).to_be_bytes());
        v.extend_from_slice(q.as_bytes());
    }
    v
}

/// (option, reply type, data) of every option reply in `buf`.
fn replies(mut buf: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    let mut v = Vec::new();
    while !buf.is_empty() {
        let mut c = Cursor::new(buf);
        assert_eq!(c.u64(), Some(OPTION_REPLY_MAGIC));
        let option = c.u32().unwrap();
        let ty = c.u32().unwrap();
        let len = c.u32().unwrap() as usize;
        v.push((option, ty, c.bytes(len).unwrap().to_vec()));
        buf = &buf[20 + len..];
    }
    v
}

/// A handshake past the greeting with client flags 0x3.
fn started() -> Handshake {
    let mut hs = Handshake::new(registry());
    let greeting = hs.take_output();
    assert_eq!(greeting.len(), GREETING_LEN);
    assert_eq!(&greeting[16..], &3u16.to_be_bytes());
    assert_eq!(hs.receive(&3u32.to_be_bytes()), Ok(4));
    hs
}

fn send(hs: &mut Handshake, bytes: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
    assert_eq!(hs.receive(bytes), Ok(bytes.len()));
    replies(&hs.take_output())
}

#[test]
fn unknown_client_flags_are_a_hard_disconnect() {
    let mut hs = Handshake::new(registry());
    assert_eq!(hs.receive(&4u32.to_be_bytes()), Err(ProtocolError::BadClientFlags(4)));
    assert_eq!(hs.status(), Status::Closed);
}

#[test]
fn unknown_options_are_skipped_with_err_unsup_and_parsing_continues() {
    let mut hs = started();
    let mut bytes = opt(0x7654321, &[1, 2, 3, 4, 5]);
    bytes.extend(opt(OPT_LIST, &[]));
    let r = send(&mut hs, &bytes);
    assert_eq!(r[0].0, 0x7654321);
    assert_eq!(r[0].1, REP_ERR_UNSUP);
    assert_eq!(r.last().map(|r| r.1), Some(REP_ACK));
    assert_eq!(r.iter().filter(|r| r.1 == REP_SERVER).count(), 2);
}

#[test]
fn go_sends_export_info_block_size_and_ack_then_finishes() {
    let mut hs = started();
    let r = send(
        &mut hs,
        &opt(OPT_GO, &info_data("disk", &[INFO_BLOCK_SIZE, INFO_NAME, INFO_DESCRIPTION])),
    );
    let types: Vec<u32> = r.iter().map(|r| r.1).collect();
    assert_eq!(types, vec![REP_INFO, REP_INFO, REP_INFO, REP_INFO, REP_ACK]);
    assert_eq!(&r[0].2[..2], &INFO_EXPORT.to_be_bytes());
    assert_eq!(&r[0].2[2..10], &(1u64 << 20).to_be_bytes());
    assert_eq!(&r[0].2[10..], &0x0d6du16.to_be_bytes(), "no DF without structured replies");
    assert_eq!(&r[2].2[2..], b"a test disk");
    assert_eq!(hs.status(), Status::Finished);
    let n = hs.into_negotiated().unwrap();
    assert!(n.block_size_acked);
    assert_eq!(n.block_sizes, BlockSizes { minimum: 512, preferred: 4096, maximum: 32 << 20 });
}

#[test]
fn go_for_an_unknown_export_is_err_unknown_and_negotiation_goes_on() {
    let mut hs = started();
    let r = send(&mut hs, &opt(OPT_GO, &info_data("nope", &[])));
    assert_eq!(r, vec![(OPT_GO, REP_ERR_UNKNOWN, b"no such export".to_vec())]);
    assert_eq!(hs.status(), Status::NeedInput);
}

#[test]
fn malformed_info_request_is_err_invalid() {
    let mut hs = started();
    let mut data = info_data("disk", &[]);
    data.push(0);
    let r = send(&mut hs, &opt(OPT_INFO, &data));
    assert_eq!(r[0].1, REP_ERR_INVALID);
}

#[test]
fn export_name_reply_has_no_zeroes_when_both_sides_agree() {
    let mut hs = started();
    assert_eq!(hs.receive(&opt(OPT_EXPORT_NAME, b"disk")), Ok(20));
    assert_eq!(hs.take_output().len(), 10);
    assert_eq!(hs.status(), Status::Finished);
    let mut hs = Handshake::new(registry());
    hs.take_output();
    hs.receive(&1u32.to_be_bytes()).unwrap();
    hs.receive(&opt(OPT_EXPORT_NAME, b"")).unwrap();
    assert_eq!(hs.take_output().len(), 134);
}

#[test]
fn export_name_for_an_unknown_export_is_a_hard_disconnect() {
    let mut hs = started();
    let err = hs.receive(&opt(OPT_EXPORT_NAME, b"nope")).unwrap_err();
    assert!(matches!(err, ProtocolError::ExportNameFailed { .. }));
}

#[test]
fn structured_reply_twice_is_err_invalid_and_after_extended_is_ext_header_reqd() {
    let mut hs = started();
    assert_eq!(send(&mut hs, &opt(OPT_STRUCTURED_REPLY, &[]))[0].1, REP_ACK);
    assert_eq!(send(&mut hs, &opt(OPT_STRUCTURED_REPLY, &[]))[0].1, REP_ERR_INVALID);
    assert_eq!(send(&mut hs, &opt(OPT_EXTENDED_HEADERS, &[]))[0].1, REP_ACK);
    assert_eq!(send(&mut hs, &opt(OPT_EXTENDED_HEADERS, &[]))[0].1, REP_ERR_INVALID);
    assert_eq!(send(&mut hs, &opt(OPT_STRUCTURED_REPLY, &[]))[0].1, REP_ERR_EXT_HEADER_REQD);
    assert!(hs.receive(&opt(OPT_EXPORT_NAME, b"disk")).is_err());
}

#[test]
fn starttls_is_refused_by_policy() {
    let mut hs = started();
    assert_eq!(send(&mut hs, &opt(OPT_STARTTLS, &[]))[0].1, REP_ERR_POLICY);
}

#[test]
fn set_meta_context_needs_structured_replies() {
    let mut hs = started();
    let r = send(&mut hs, &opt(OPT_SET_META_CONTEXT, &meta_data("disk", &["base:allocation"])));
    assert_eq!(r[0].1, REP_ERR_INVALID);
}

#[test]
fn set_meta_context_selects_contexts_bound_to_the_export_named_in_go() {
    let mut hs = started();
    send(&mut hs, &opt(OPT_STRUCTURED_REPLY, &[]));
    let q = ["base:allocation", "qemu:allocation-depth", "x-unknown:thing", "base:"];
    let r = send(&mut hs, &opt(OPT_SET_META_CONTEXT, &meta_data("disk", &q)));
    assert_eq!(r.len(), 3);
    assert_eq!(r[0].1, REP_META_CONTEXT);
    assert_eq!(&r[0].2[..4], &1u32.to_be_bytes());
    assert_eq!(&r[0].2[4..], b"base:allocation");
    assert_eq!(&r[1].2[4..], b"qemu:allocation-depth");
    send(&mut hs, &opt(OPT_GO, &info_data("disk", &[])));
    let n = hs.into_negotiated().unwrap();
    assert_eq!(n.contexts, vec![MetaContext::BaseAllocation, MetaContext::AllocationDepth]);
    assert_eq!(n.mode, HeaderMode::Structured);
    assert_eq!(n.transmission_flags, 0x0ded);
    assert!(!n.block_size_acked);
}

#[test]
fn contexts_set_for_another_export_are_dropped_at_go() {
    let mut hs = started();
    send(&mut hs, &opt(OPT_STRUCTURED_REPLY, &[]));
    send(&mut hs, &opt(OPT_SET_META_CONTEXT, &meta_data("disk", &["base:allocation"])));
    send(&mut hs, &opt(OPT_GO, &info_data("ro", &[])));
    let n = hs.into_negotiated().unwrap();
    assert!(n.contexts.is_empty());
    assert_eq!(n.transmission_flags & FLAG_READ_ONLY, FLAG_READ_ONLY);
    assert_eq!(n.transmission_flags & FLAG_SEND_TRIM, 0);
}

#[test]
fn list_meta_context_with_no_query_returns_every_context_with_id_zero() {
    let mut hs = started();
    let r = send(&mut hs, &opt(OPT_LIST_META_CONTEXT, &meta_data("disk", &[])));
    assert_eq!(r.len(), 3);
    assert!(r[..2].iter().all(|r| r.1 == REP_META_CONTEXT && r.2[..4] == [0; 4]));
    let r = send(&mut hs, &opt(OPT_LIST_META_CONTEXT, &meta_data("disk", &["qemu:"])));
    assert_eq!(&r[0].2[4..], b"qemu:allocation-depth");
}

#[test]
fn abort_is_acknowledged_and_closes() {
    let mut hs = started();
    let r = send(&mut hs, &opt(OPT_ABORT, &[]));
    assert_eq!(r[0].1, REP_ACK);
    assert_eq!(hs.status(), Status::Closed);
}

#[test]
fn oversized_option_length_is_a_hard_disconnect() {
    let mut hs = started();
    let mut bytes = IHAVEOPT.to_be_bytes().to_vec();
    bytes.extend_from_slice(&OPT_GO.to_be_bytes());
    bytes.extend_from_slice(&(MAX_OPTION_BYTES + 1).to_be_bytes());
    assert!(matches!(hs.receive(&bytes), Err(ProtocolError::OptionTooLong { .. })));
}

#[test]
fn bad_option_magic_is_a_hard_disconnect() {
    let mut hs = started();
    let err = hs.receive(&[0u8; 16]).unwrap_err();
    assert_eq!(err, ProtocolError::BadOptionMagic(0));
}

#[test]
fn options_other_than_export_name_need_fixed_newstyle() {
    let mut hs = Handshake::new(registry());
    hs.take_output();
    hs.receive(&0u32.to_be_bytes()).unwrap();
    assert_eq!(send(&mut hs, &opt(OPT_LIST, &[]))[0].1, REP_ERR_INVALID);
}

#[test]
fn shutting_down_answers_err_shutdown() {
    let mut hs = started();
    hs.set_shutting_down();
    assert_eq!(send(&mut hs, &opt(OPT_GO, &info_data("disk", &[])))[0].1, REP_ERR_SHUTDOWN);
}

#[test]
fn byte_at_a_time_input_gives_the_same_result_and_leaves_transmission_bytes() {
    let mut bytes = 3u32.to_be_bytes().to_vec();
    bytes.extend(opt(OPT_STRUCTURED_REPLY, &[]));
    bytes.extend(opt(OPT_GO, &info_data("disk", &[INFO_BLOCK_SIZE])));
    let transmission = [0x25u8, 0x60, 0x95, 0x13];
    bytes.extend_from_slice(&transmission);
    let mut hs = Handshake::new(registry());
    let mut used = 0;
    for b in bytes.chunks(1) {
        used += hs.receive(b).unwrap();
        if hs.status() == Status::Finished {
            break;
        }
    }
    assert_eq!(used, bytes.len() - transmission.len());
    assert!(hs.into_negotiated().is_some());
}

#[test]
fn too_many_options_is_a_hard_disconnect() {
    let mut hs = started();
    let one = opt(0x7654321, &[]);
    for _ in 0..MAX_OPTIONS_PER_CONNECTION {
        hs.receive(&one).unwrap();
    }
    assert!(matches!(hs.receive(&one), Err(ProtocolError::TooManyOptions(_))));
}

#[test]
fn an_exports_extra_contexts_are_listed_under_their_prefix_and_selected_by_name() {
    let t = ExportTable::new();
    t.insert("vm", "", Arc::new(crate::export::WithBitmaps(MemExport::new(1 << 20))));
    let mut hs = Handshake::new(Arc::new(t));
    hs.take_output();
    hs.receive(&3u32.to_be_bytes()).unwrap();
    send(&mut hs, &opt(OPT_STRUCTURED_REPLY, &[]));
    let r = send(&mut hs, &opt(OPT_LIST_META_CONTEXT, &meta_data("vm", &["qemu:dirty-bitmap:"])));
    let names: Vec<&[u8]> =
        r.iter().filter(|x| x.1 == REP_META_CONTEXT).map(|x| &x.2[4..]).collect();
    assert_eq!(names, [&b"qemu:dirty-bitmap:gone"[..], b"qemu:dirty-bitmap:s1"]);
    let q = ["qemu:dirty-bitmap:s1", "base:allocation", "qemu:dirty-bitmap:other"];
    let r = send(&mut hs, &opt(OPT_SET_META_CONTEXT, &meta_data("vm", &q)));
    assert_eq!(r.len(), 3);
    assert_eq!(&r[1].2[..4], &FIRST_EXTRA_ID.to_be_bytes());
    assert_eq!(&r[1].2[4..], b"qemu:dirty-bitmap:s1");
    send(&mut hs, &opt(OPT_GO, &info_data("vm", &[])));
    let n = hs.into_negotiated().unwrap();
    let s1 = MetaContext::Extra { id: FIRST_EXTRA_ID, name: "qemu:dirty-bitmap:s1".into() };
    assert_eq!(n.contexts, vec![MetaContext::BaseAllocation, s1]);
}

fn started_with_tls(mode: TlsMode) -> Handshake {
    let mut hs = Handshake::new(registry());
    hs.set_tls_mode(mode);
    hs.take_output();
    assert_eq!(hs.receive(&3u32.to_be_bytes()), Ok(4));
    hs
}

#[test]
fn required_tls_refuses_every_option_but_starttls_and_abort_with_tls_reqd() {
    let mut hs = started_with_tls(TlsMode::Require);
    for (option, data) in [
        (OPT_LIST, Vec::new()),
        (OPT_INFO, info_data("disk", &[])),
        (OPT_GO, info_data("disk", &[])),
        (OPT_STRUCTURED_REPLY, Vec::new()),
        (OPT_SET_META_CONTEXT, meta_data("disk", &["base:allocation"])),
        (99, vec![1, 2, 3]),
    ] {
        let r = send(&mut hs, &opt(option, &data));
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0, r[0].1), (option, REP_ERR_TLS_REQD));
    }
    assert_eq!(hs.status(), Status::NeedInput);
    assert!(hs.receive(&opt(OPT_EXPORT_NAME, b"disk")).is_err(), "EXPORT_NAME: hard disconnect");
    assert_eq!(hs.status(), Status::Closed);
}

#[test]
fn starttls_is_acknowledged_then_negotiation_starts_afresh_over_tls() {
    let mut hs = started_with_tls(TlsMode::Require);
    let mut input = opt(OPT_STARTTLS, &[]);
    input.extend_from_slice(b"client hello bytes");
    assert_eq!(hs.receive(&input), Ok(16), "stops at the end of STARTTLS");
    assert_eq!(hs.status(), Status::StartTls);
    let r = replies(&hs.take_output());
    assert_eq!(r, vec![(OPT_STARTTLS, REP_ACK, Vec::new())]);
    hs.tls_started();
    assert!(hs.tls_active());
    let r = send(&mut hs, &opt(OPT_STARTTLS, &[]));
    assert_eq!((r[0].0, r[0].1), (OPT_STARTTLS, REP_ERR_INVALID), "a second STARTTLS");
    let r = send(&mut hs, &opt(OPT_STRUCTURED_REPLY, &[]));
    assert_eq!(r[0].1, REP_ACK);
    send(&mut hs, &opt(OPT_GO, &info_data("disk", &[])));
    assert_eq!(hs.status(), Status::Finished);
}

#[test]
fn starttls_forgets_structured_replies_and_meta_contexts_negotiated_before() {
    let mut hs = started_with_tls(TlsMode::On);
    assert_eq!(send(&mut hs, &opt(OPT_STRUCTURED_REPLY, &[]))[0].1, REP_ACK);
    send(&mut hs, &opt(OPT_SET_META_CONTEXT, &meta_data("disk", &["base:allocation"])));
    send(&mut hs, &opt(OPT_STARTTLS, &[]));
    hs.tls_started();
    send(&mut hs, &opt(OPT_GO, &info_data("disk", &[])));
    let n = hs.into_negotiated().unwrap();
    assert_eq!(n.mode, HeaderMode::Compact);
    assert!(n.contexts.is_empty());
}

#[test]
fn optional_tls_serves_clients_that_do_not_upgrade_and_off_refuses_starttls() {
    let mut hs = started_with_tls(TlsMode::On);
    let r = send(&mut hs, &opt(OPT_LIST, &[]));
    assert_eq!(r.last().unwrap().1, REP_ACK);
    let mut hs = started_with_tls(TlsMode::Off);
    let r = send(&mut hs, &opt(OPT_STARTTLS, &[]));
    assert_eq!(r[0].1, REP_ERR_POLICY);
    assert_eq!(hs.status(), Status::NeedInput);
}

/// A policy for tests: uid 1000 writes "disk" and reads "ro"; uid 2000 reads "disk";
/// a PSK user "alice" writes everything; everyone else gets nothing.
#[derive(Debug)]
struct TestPolicy;

impl AccessPolicy for TestPolicy {
    fn access(&self, client: &Client, export: &str) -> Access {
        use crate::access::Peer;
        if client.tls == Some(TlsIdentity::PskUser("alice".into())) {
            return Access::Write;
        }
        match (&client.peer, export) {
            (Peer::Unix { uid: 1000, .. }, "disk") => Access::Write,
            (Peer::Unix { uid: 1000, .. }, "ro") => Access::Read,
            (Peer::Unix { uid: 2000, .. }, "disk") => Access::Read,
            _ => Access::None,
        }
    }
    fn admits(&self, client: &Client) -> bool {
        ["disk", "ro"].iter().any(|e| self.access(client, e) > Access::None)
    }
}

fn started_as(uid: u32, mode: TlsMode) -> Handshake {
    let mut hs = started();
    hs.set_tls_mode(mode);
    let client = Client { peer: crate::access::Peer::Unix { uid, gid: uid }, tls: None };
    hs.set_access(Arc::new(TestPolicy), client);
    hs
}

fn listed(r: &[(u32, u32, Vec<u8>)]) -> Vec<String> {
    r.iter()
        .filter(|r| r.1 == REP_SERVER)
        .map(|r| String::from_utf8_lossy(&r.2[4..]).into_owned())
        .collect()
}

#[test]
fn list_shows_only_the_exports_the_policy_lets_the_client_open() {
    let mut hs = started_as(2000, TlsMode::Off);
    let r = send(&mut hs, &opt(OPT_LIST, &[]));
    let names: Vec<String> = listed(&r).iter().map(|d| d[..4].to_owned()).collect();
    assert_eq!(names, vec!["disk"]);
    assert_eq!(r.last().map(|r| r.1), Some(REP_ACK));
    assert!(hs.take_denials().is_empty(), "hiding is not a denial");
}

#[test]
fn a_denied_export_looks_unknown_and_the_denial_is_recorded_once() {
    let mut hs = started_as(2000, TlsMode::Off);
    let r = send(&mut hs, &opt(OPT_INFO, &info_data("ro", &[])));
    assert_eq!(r, vec![(OPT_INFO, REP_ERR_UNKNOWN, b"no such export".to_vec())]);
    let r = send(&mut hs, &opt(OPT_LIST_META_CONTEXT, &meta_data("ro", &[])));
    assert_eq!(r[0].1, REP_ERR_UNKNOWN);
    assert_eq!(hs.take_denials(), vec!["ro".to_owned(), "ro".to_owned()]);
    assert!(hs.take_denials().is_empty());
    assert_eq!(hs.status(), Status::NeedInput, "negotiation goes on");
}

#[test]
fn a_client_the_policy_admits_nowhere_gets_err_policy_to_list_and_go() {
    let mut hs = started_as(3000, TlsMode::Off);
    let r = send(&mut hs, &opt(OPT_LIST, &[]));
    assert_eq!(r.iter().map(|r| r.1).collect::<Vec<_>>(), vec![REP_ERR_POLICY]);
    let r = send(&mut hs, &opt(OPT_GO, &info_data("disk", &[])));
    assert_eq!(r[0].1, REP_ERR_POLICY);
    let r = send(&mut hs, &opt(OPT_GO, &info_data("", &[])));
    assert_eq!(r[0].1, REP_ERR_POLICY, "the default export is judged by its real name");
}

#[test]
fn read_access_advertises_read_only_and_write_access_does_not() {
    let mut hs = started_as(2000, TlsMode::Off);
    let r = send(&mut hs, &opt(OPT_GO, &info_data("disk", &[])));
    let flags = u16::from_be_bytes([r[0].2[10], r[0].2[11]]);
    assert_ne!(flags & FLAG_READ_ONLY, 0);
    assert_eq!(flags & FLAG_SEND_TRIM, 0);
    let n = hs.into_negotiated().unwrap();
    assert!(n.export.read_only());
    assert_eq!(n.export.write(0, b"x", false).unwrap_err().raw_os_error(), Some(1));
    assert_eq!((n.resolved_name.as_str(), n.access), ("disk", Access::Read));

    let mut hs = started_as(1000, TlsMode::Off);
    let r = send(&mut hs, &opt(OPT_GO, &info_data("", &[])));
    let flags = u16::from_be_bytes([r[0].2[10], r[0].2[11]]);
    assert_eq!(flags & FLAG_READ_ONLY, 0);
    let n = hs.into_negotiated().unwrap();
    assert_eq!((n.resolved_name.as_str(), n.access), ("disk", Access::Write));
}

#[test]
fn export_name_refused_by_policy_is_a_hard_disconnect() {
    let mut hs = started_as(2000, TlsMode::Off);
    assert!(matches!(
        hs.receive(&opt(OPT_EXPORT_NAME, b"ro")),
        Err(ProtocolError::ExportNameFailed { .. })
    ));
    assert_eq!(hs.take_denials(), vec!["ro".to_owned()]);
}

#[test]
fn before_optional_tls_a_refused_go_asks_for_tls_and_the_tls_identity_then_counts() {
    let mut hs = started_as(3000, TlsMode::On);
    let r = send(&mut hs, &opt(OPT_GO, &info_data("ro", &[])));
    assert_eq!(r[0].1, REP_ERR_TLS_REQD);
    let r = send(&mut hs, &opt(OPT_STARTTLS, &[]));
    assert_eq!(r[0].1, REP_ACK);
    hs.tls_started();
    hs.set_tls_identity(Some(TlsIdentity::PskUser("alice".into())));
    let r = send(&mut hs, &opt(OPT_GO, &info_data("ro", &[])));
    assert_eq!(r.last().map(|r| r.1), Some(REP_ACK));
    assert_eq!(hs.status(), Status::Finished);
}

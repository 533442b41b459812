//! The fixed-newstyle handshake and option haggling (§4) as a state machine over byte
//! buffers. No sockets: the caller feeds received bytes to `receive`, sends whatever
//! `take_output` returns, and stops when `status` is `Finished` (transmission starts;
//! bytes `receive` did not consume belong to it) or `Closed`. A `ProtocolError` from
//! `receive` means hard-disconnect.
//!
//! Invariants: options are processed strictly one at a time (the client waits for the
//! final reply); every option's *L* data bytes are consumed exactly, whatever the
//! answer; the state after `Finished`/`Closed`/an error is terminal.

use std::sync::Arc;

use super::consts::*;
use super::error::ProtocolError;
use super::meta::MetaContext;
use super::options::{parse_info_request, parse_meta_request};
use super::request::HeaderMode;
use super::wire::{put_u16, put_u32, put_u64, Cursor};
use crate::access::{Access, AccessPolicy, Client, ReadOnly, TlsIdentity};
use crate::export::{Export, ExportRegistry};
use crate::limits::{
    MAX_EXTRA_META_CONTEXTS, MAX_LISTED_EXPORTS, MAX_OPTIONS_PER_CONNECTION, MAX_OPTION_BYTES,
    MAX_PARSED_OPTION_BYTES, MAX_PAYLOAD_BYTES, MAX_STRING_BYTES,
};

/// Size constraints advertised with `NBD_INFO_BLOCK_SIZE` (§5).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlockSizes {
    /// Minimum block size: power of two, 1 … 64 KiB.
    pub minimum: u32,
    /// Preferred block size: power of two ≥ max(minimum, 512).
    pub preferred: u32,
    /// Maximum payload size.
    pub maximum: u32,
}

impl BlockSizes {
    /// Sanitised constraints for `export`. The minimum falls back to 1 when the export
    /// size is not a multiple of it, so the tail stays addressable.
    pub fn for_export(export: &dyn Export) -> Self {
        let min = export.min_block_size();
        let min_ok = min.is_power_of_two() && min <= 65536;
        let minimum =
            if min_ok && export.size_bytes().is_multiple_of(u64::from(min)) { min } else { 1 };
        let pref = export.preferred_block_size();
        let pref = if pref.is_power_of_two() { pref } else { 4096 };
        let preferred = pref.max(minimum).max(512);
        let maximum = MAX_PAYLOAD_BYTES as u32;
        Self { minimum, preferred: preferred.min(maximum), maximum }
    }
}

/// Transmission flags for `export` in `mode`, advertised truthfully (§7.3): DF only with
/// chunked replies; no TRIM/WRITE_ZEROES/FAST_ZERO on a read-only export (as nbdkit).
pub fn transmission_flags(export: &dyn Export, mode: HeaderMode) -> u16 {
    let mut flags = FLAG_HAS_FLAGS | FLAG_SEND_FLUSH | FLAG_SEND_FUA | FLAG_SEND_CACHE;
    if export.read_only() {
        flags |= FLAG_READ_ONLY;
    } else {
        flags |= FLAG_SEND_TRIM | FLAG_SEND_WRITE_ZEROES | FLAG_SEND_FAST_ZERO;
    }
    if export.can_multi_conn() {
        flags |= FLAG_CAN_MULTI_CONN;
    }
    if mode.chunked() {
        flags |= FLAG_SEND_DF;
    }
    flags
}

/// Everything transmission needs from the handshake.
pub struct Negotiated {
    /// The export chosen by GO or EXPORT_NAME.
    pub export: Arc<dyn Export>,
    /// The name the client asked for.
    pub export_name: String,
    /// Header mode for requests and replies.
    pub mode: HeaderMode,
    /// Selected meta contexts (empty unless the last SET named this export).
    pub contexts: Vec<MetaContext>,
    /// Transmission flags sent to the client.
    pub transmission_flags: u16,
    /// Constraints advertised.
    pub block_sizes: BlockSizes,
    /// The client asked for `NBD_INFO_BLOCK_SIZE` in GO, promising to obey it.
    pub block_size_acked: bool,
    /// The export's own name (the default export resolved), as the policy saw it.
    pub resolved_name: String,
    /// What the policy granted (`Write` without a policy).
    pub access: Access,
}

impl std::fmt::Debug for Negotiated {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Negotiated")
            .field("export_name", &self.export_name)
            .field("mode", &self.mode)
            .field("contexts", &self.contexts)
            .field("transmission_flags", &self.transmission_flags)
            .finish_non_exhaustive()
    }
}

/// Where the handshake stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Feed more bytes.
    NeedInput,
    /// Transmission begins; call `into_negotiated`.
    Finished,
    /// The client aborted (or the handshake ended without an export); close.
    Closed,
    /// STARTTLS was acknowledged: send the output, run the TLS handshake on the socket
    /// (nothing else may have been received), then call `tls_started`.
    StartTls,
}

/// How a listener treats TLS (§4.4.3's server modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TlsMode {
    /// NOTLS: STARTTLS is refused with `ERR_POLICY`.
    #[default]
    Off,
    /// SELECTIVETLS: a client may upgrade, or not.
    On,
    /// FORCEDTLS: before TLS only STARTTLS and ABORT; the rest gets `ERR_TLS_REQD`.
    Require,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    ClientFlags,
    OptionHeader,
    OptionData {
        option: u32,
    },
    /// Discarding *L* bytes of an option we will not parse; `reply` answers it after.
    Skip {
        option: u32,
        remaining: u32,
        reply: u32,
    },
    /// Waiting for the driver's TLS handshake after STARTTLS was acknowledged.
    StartTls,
    Finished,
    Closed,
}

/// The server side of one connection's handshake.
pub struct Handshake {
    registry: Arc<dyn ExportRegistry>,
    state: State,
    acc: Vec<u8>,
    need: usize,
    out: Vec<u8>,
    fixed_newstyle: bool,
    no_zeroes: bool,
    mode: HeaderMode,
    /// The last SET_META_CONTEXT: (export name, selected contexts).
    meta: Option<(String, Vec<MetaContext>)>,
    nr_options: u32,
    shutting_down: bool,
    tls_mode: TlsMode,
    tls_active: bool,
    /// The policy and the client it judges (None: everything is allowed).
    access: Option<(Arc<dyn AccessPolicy>, Client)>,
    /// Exports refused by the policy since the last `take_denial`.
    denied: Vec<String>,
    result: Option<Negotiated>,
}

impl Handshake {
    /// Starts a handshake; the greeting is queued in the output.
    pub fn new(registry: Arc<dyn ExportRegistry>) -> Self {
        let mut out = Vec::with_capacity(GREETING_LEN);
        put_u64(&mut out, NBDMAGIC);
        put_u64(&mut out, IHAVEOPT);
        put_u16(&mut out, FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES);
        Self {
            registry,
            state: State::ClientFlags,
            acc: Vec::new(),
            need: CLIENT_FLAGS_LEN,
            out,
            fixed_newstyle: false,
            no_zeroes: false,
            mode: HeaderMode::Compact,
            meta: None,
            nr_options: 0,
            shutting_down: false,
            tls_mode: TlsMode::Off,
            tls_active: false,
            access: None,
            denied: Vec::new(),
            result: None,
        }
    }

    /// Judges every LIST, INFO, GO, EXPORT_NAME and meta-context option by `policy` for
    /// `client` (see the `access` module doc); call before the first `receive`.
    pub fn set_access(&mut self, policy: Arc<dyn AccessPolicy>, client: Client) {
        self.access = Some((policy, client));
    }

    /// The identity TLS proved, after `tls_started` (policies judge by it from then on).
    pub fn set_tls_identity(&mut self, identity: Option<TlsIdentity>) {
        if let Some((_, client)) = &mut self.access {
            client.tls = identity;
        }
    }

    /// The client as the policy sees it now, if there is a policy.
    pub fn client(&self) -> Option<&Client> {
        self.access.as_ref().map(|(_, c)| c)
    }

    /// Names of exports the policy refused since the last call (for the log).
    pub fn take_denials(&mut self) -> Vec<String> {
        std::mem::take(&mut self.denied)
    }

    /// Sets the listener's TLS mode; call before the first `receive`.
    pub fn set_tls_mode(&mut self, mode: TlsMode) {
        self.tls_mode = mode;
    }

    /// The driver finished the TLS handshake after `Status::StartTls`. Everything
    /// negotiated before is forgotten (§4.4.3): header mode and meta contexts.
    pub fn tls_started(&mut self) {
        assert_eq!(self.state, State::StartTls, "tls_started without STARTTLS");
        self.tls_active = true;
        self.mode = HeaderMode::Compact;
        self.meta = None;
        self.expect_option_header();
    }

    /// Whether TLS is running on this connection.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// FORCEDTLS before the upgrade: only STARTTLS and ABORT are allowed.
    fn tls_required(&self) -> bool {
        self.tls_mode == TlsMode::Require && !self.tls_active
    }

    /// From now on every option but ABORT is answered `ERR_SHUTDOWN` (§4.3).
    pub fn set_shutting_down(&mut self) {
        self.shutting_down = true;
    }

    /// Where the handshake stands.
    pub fn status(&self) -> Status {
        match self.state {
            State::Finished => Status::Finished,
            State::Closed => Status::Closed,
            State::StartTls => Status::StartTls,
            _ => Status::NeedInput,
        }
    }

    /// Bytes to send to the client, in order; empties the queue.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// The negotiated result once `status` is `Finished`.
    pub fn into_negotiated(self) -> Option<Negotiated> {
        self.result
    }

    /// Consumes bytes from `input` and returns how many were used. It stops early only
    /// when the handshake finishes or closes: the rest belongs to transmission.
    pub fn receive(&mut self, input: &[u8]) -> Result<usize, ProtocolError> {
        let mut used = 0;
        while used < input.len() && self.status() == Status::NeedInput {
            let avail = &input[used..];
            if let State::Skip { option, remaining, reply } = self.state {
                let n = avail.len().min(remaining as usize);
                used += n;
                let remaining = remaining - n as u32;
                self.state = State::Skip { option, remaining, reply };
                if remaining == 0 {
                    self.finish_skip(option, reply)?;
                }
                continue;
            }
            let n = avail.len().min(self.need - self.acc.len());
            self.acc.extend_from_slice(&avail[..n]);
            used += n;
            if self.acc.len() == self.need {
                let unit = std::mem::take(&mut self.acc);
                if let Err(e) = self.process(&unit) {
                    self.state = State::Closed;
                    return Err(e);
                }
            }
        }
        Ok(used)
    }

    fn process(&mut self, unit: &[u8]) -> Result<(), ProtocolError> {
        let mut c = Cursor::new(unit);
        match self.state {
            State::ClientFlags => {
                let flags = c.u32().unwrap_or(u32::MAX);
                if flags & !(FLAG_C_FIXED_NEWSTYLE | FLAG_C_NO_ZEROES) != 0 {
                    return Err(ProtocolError::BadClientFlags(flags));
                }
                self.fixed_newstyle = flags & FLAG_C_FIXED_NEWSTYLE != 0;
                self.no_zeroes = flags & FLAG_C_NO_ZEROES != 0;
                self.expect_option_header();
                Ok(())
            }
            State::OptionHeader => {
                let magic = c.u64().unwrap_or(0);
                let option = c.u32().unwrap_or(0);
                let len = c.u32().unwrap_or(u32::MAX);
                self.option_header(magic, option, len)
            }
            State::OptionData { option } => self.option(option, unit),
            // receive() never calls process in these states.
            State::Skip { .. } | State::StartTls | State::Finished | State::Closed => Ok(()),
        }
    }

    fn expect_option_header(&mut self) {
        self.state = State::OptionHeader;
        self.need = OPTION_HEADER_LEN;
    }

    fn option_header(&mut self, magic: u64, option: u32, len: u32) -> Result<(), ProtocolError> {
        if magic != IHAVEOPT {
            return Err(ProtocolError::BadOptionMagic(magic));
        }
        self.nr_options += 1;
        if self.nr_options > MAX_OPTIONS_PER_CONNECTION {
            return Err(ProtocolError::TooManyOptions(MAX_OPTIONS_PER_CONNECTION));
        }
        if len > MAX_OPTION_BYTES {
            return Err(ProtocolError::OptionTooLong { option, len, max: MAX_OPTION_BYTES });
        }
        let known = matches!(
            option,
            OPT_EXPORT_NAME
                | OPT_ABORT
                | OPT_LIST
                | OPT_STARTTLS
                | OPT_INFO
                | OPT_GO
                | OPT_STRUCTURED_REPLY
                | OPT_LIST_META_CONTEXT
                | OPT_SET_META_CONTEXT
                | OPT_EXTENDED_HEADERS
        );
        let skip_reply = if !known {
            Some(REP_ERR_UNSUP)
        } else if len > MAX_PARSED_OPTION_BYTES {
            Some(REP_ERR_TOO_BIG)
        } else {
            None
        };
        match skip_reply {
            Some(reply) if len > 0 => {
                self.state = State::Skip { option, remaining: len, reply };
                Ok(())
            }
            Some(reply) => self.finish_skip(option, reply),
            None if len == 0 => {
                self.state = State::OptionData { option };
                self.option(option, &[])
            }
            None => {
                self.state = State::OptionData { option };
                self.need = len as usize;
                Ok(())
            }
        }
    }

    fn finish_skip(&mut self, option: u32, reply: u32) -> Result<(), ProtocolError> {
        if option == OPT_EXPORT_NAME {
            return Err(ProtocolError::ExportNameFailed {
                name: String::new(),
                reason: "export name too long",
            });
        }
        if self.tls_required() && option != OPT_ABORT {
            self.reply_error(option, REP_ERR_TLS_REQD, "start TLS first");
            self.expect_option_header();
            return Ok(());
        }
        self.reply_error(option, reply, "option not supported or too large");
        self.expect_option_header();
        Ok(())
    }

    /// Handles one complete option; leaves the state at the next option header unless
    /// the option ends the handshake.
    fn option(&mut self, option: u32, data: &[u8]) -> Result<(), ProtocolError> {
        self.expect_option_header();
        if option == OPT_ABORT {
            self.reply(option, REP_ACK, &[]);
            self.state = State::Closed;
            return Ok(());
        }
        if self.shutting_down {
            if option == OPT_EXPORT_NAME {
                return Err(ProtocolError::ExportNameFailed {
                    name: String::from_utf8_lossy(data).into_owned(),
                    reason: "server shutting down",
                });
            }
            self.reply_error(option, REP_ERR_SHUTDOWN, "server shutting down");
            return Ok(());
        }
        if self.tls_required() && option != OPT_STARTTLS {
            if option == OPT_EXPORT_NAME {
                // No reply is possible to EXPORT_NAME: hard disconnect (§4.4.3).
                let name = String::from_utf8_lossy(data).into_owned();
                return Err(ProtocolError::ExportNameFailed { name, reason: "TLS required" });
            }
            self.reply_error(option, REP_ERR_TLS_REQD, "start TLS first");
            return Ok(());
        }
        if !self.fixed_newstyle && option != OPT_EXPORT_NAME {
            self.reply_error(option, REP_ERR_INVALID, "fixed newstyle not negotiated");
            return Ok(());
        }
        match option {
            OPT_EXPORT_NAME => self.export_name(data),
            OPT_LIST => {
                self.list(data);
                Ok(())
            }
            OPT_STARTTLS => {
                self.starttls(data);
                Ok(())
            }
            OPT_INFO | OPT_GO => {
                self.info_or_go(option, data);
                Ok(())
            }
            OPT_STRUCTURED_REPLY | OPT_EXTENDED_HEADERS => {
                self.header_mode_option(option, data);
                Ok(())
            }
            OPT_LIST_META_CONTEXT | OPT_SET_META_CONTEXT => {
                self.meta_context(option, data);
                Ok(())
            }
            _ => {
                self.reply_error(option, REP_ERR_UNSUP, "unknown option");
                Ok(())
            }
        }
    }

    fn starttls(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.reply_error(OPT_STARTTLS, REP_ERR_INVALID, "STARTTLS takes no data");
        } else if self.tls_mode == TlsMode::Off {
            self.reply_error(OPT_STARTTLS, REP_ERR_POLICY, "TLS is not enabled here");
        } else if self.tls_active {
            self.reply_error(OPT_STARTTLS, REP_ERR_INVALID, "TLS is already running");
        } else {
            self.reply(OPT_STARTTLS, REP_ACK, &[]);
            self.state = State::StartTls;
        }
    }

    fn export_name(&mut self, data: &[u8]) -> Result<(), ProtocolError> {
        let lossy = || String::from_utf8_lossy(data).into_owned();
        if self.mode == HeaderMode::Extended {
            let reason = "EXPORT_NAME is forbidden after EXTENDED_HEADERS";
            return Err(ProtocolError::ExportNameFailed { name: lossy(), reason });
        }
        let name = match std::str::from_utf8(data) {
            Ok(name) if name.len() <= MAX_STRING_BYTES => name,
            _ => return Err(ProtocolError::ExportNameFailed { name: lossy(), reason: "bad name" }),
        };
        let opened = match self.open_for_client(OPT_EXPORT_NAME, name) {
            Ok(o) => o,
            Err(REP_ERR_UNKNOWN) => {
                let reason = "no such export";
                return Err(ProtocolError::ExportNameFailed { name: lossy(), reason });
            }
            Err(_) => {
                let reason = "refused by the access policy";
                return Err(ProtocolError::ExportNameFailed { name: lossy(), reason });
            }
        };
        let flags = transmission_flags(opened.export.as_ref(), self.mode);
        put_u64(&mut self.out, opened.export.size_bytes());
        put_u16(&mut self.out, flags);
        if !self.no_zeroes {
            self.out.extend_from_slice(&[0u8; EXPORT_NAME_PADDING_LEN]);
        }
        self.finish(name, opened, flags, false);
        Ok(())
    }

    fn list(&mut self, data: &[u8]) {
        if !data.is_empty() {
            self.reply_error(OPT_LIST, REP_ERR_INVALID, "LIST takes no data");
            return;
        }
        if let Some((policy, client)) = &self.access {
            if !policy.admits(client) {
                self.denied.push("(list)".to_owned());
                self.reply_error(OPT_LIST, REP_ERR_POLICY, "refused by the access policy");
                return;
            }
        }
        let mut exports = self.registry.list();
        if let Some((policy, client)) = &self.access {
            exports.retain(|(name, _)| policy.access(client, name) > Access::None);
        }
        for (name, desc) in exports.iter().take(MAX_LISTED_EXPORTS) {
            if name.len() > MAX_STRING_BYTES {
                continue;
            }
            let desc = truncate_str(desc, MAX_STRING_BYTES);
            let mut payload = Vec::with_capacity(4 + name.len() + desc.len());
            put_u32(&mut payload, name.len() as u32);
            payload.extend_from_slice(name.as_bytes());
            payload.extend_from_slice(desc.as_bytes());
            self.reply(OPT_LIST, REP_SERVER, &payload);
        }
        self.reply(OPT_LIST, REP_ACK, &[]);
    }

    fn info_or_go(&mut self, option: u32, data: &[u8]) {
        let Some(req) = parse_info_request(data) else {
            self.reply_error(option, REP_ERR_INVALID, "malformed INFO/GO request");
            return;
        };
        let opened = match self.open_for_client(option, req.name) {
            Ok(o) => o,
            Err(code) => return self.reply_refusal(option, code),
        };
        let export = Arc::clone(&opened.export);
        let flags = transmission_flags(export.as_ref(), self.mode);
        let sizes = BlockSizes::for_export(export.as_ref());
        let mut info = Vec::with_capacity(14);
        put_u16(&mut info, INFO_EXPORT);
        put_u64(&mut info, export.size_bytes());
        put_u16(&mut info, flags);
        self.reply(option, REP_INFO, &info);
        if req.info_types.contains(&INFO_NAME) {
            let mut info = INFO_NAME.to_be_bytes().to_vec();
            info.extend_from_slice(req.name.as_bytes());
            self.reply(option, REP_INFO, &info);
        }
        if req.info_types.contains(&INFO_DESCRIPTION) {
            let desc = self.registry.list().into_iter().find(|(n, _)| n == req.name).map(|e| e.1);
            if let Some(desc) = desc.filter(|d| !d.is_empty()) {
                let mut info = INFO_DESCRIPTION.to_be_bytes().to_vec();
                info.extend_from_slice(truncate_str(&desc, MAX_STRING_BYTES).as_bytes());
                self.reply(option, REP_INFO, &info);
            }
        }
        // Sent even when not asked for: the client may ignore it (§4.4.4).
        let mut info = Vec::with_capacity(14);
        put_u16(&mut info, INFO_BLOCK_SIZE);
        put_u32(&mut info, sizes.minimum);
        put_u32(&mut info, sizes.preferred);
        put_u32(&mut info, sizes.maximum);
        self.reply(option, REP_INFO, &info);
        self.reply(option, REP_ACK, &[]);
        if option == OPT_GO {
            let acked = req.info_types.contains(&INFO_BLOCK_SIZE);
            let name = req.name.to_owned();
            self.finish(&name, opened, flags, acked);
        }
    }

    fn header_mode_option(&mut self, option: u32, data: &[u8]) {
        if !data.is_empty() {
            self.reply_error(option, REP_ERR_INVALID, "option takes no data");
            return;
        }
        let (reply, mode) = match (option, self.mode) {
            (OPT_STRUCTURED_REPLY, HeaderMode::Compact) => (REP_ACK, HeaderMode::Structured),
            (OPT_STRUCTURED_REPLY, HeaderMode::Extended) => (REP_ERR_EXT_HEADER_REQD, self.mode),
            (OPT_EXTENDED_HEADERS, HeaderMode::Extended) => (REP_ERR_INVALID, self.mode),
            (OPT_EXTENDED_HEADERS, _) => (REP_ACK, HeaderMode::Extended),
            _ => (REP_ERR_INVALID, self.mode),
        };
        self.mode = mode;
        if reply == REP_ACK {
            self.reply(option, REP_ACK, &[]);
        } else {
            self.reply_error(option, reply, "header mode already negotiated");
        }
    }

    fn meta_context(&mut self, option: u32, data: &[u8]) {
        let set = option == OPT_SET_META_CONTEXT;
        if set {
            // Each SET replaces the selection, even when it fails (§4.4.6).
            self.meta = None;
            if self.mode == HeaderMode::Compact {
                self.reply_error(option, REP_ERR_INVALID, "negotiate structured replies first");
                return;
            }
        }
        let Some(req) = parse_meta_request(data) else {
            self.reply_error(option, REP_ERR_INVALID, "malformed meta context request");
            return;
        };
        let export = match self.open_for_client(option, req.name) {
            Ok(o) => o.export,
            Err(code) => return self.reply_refusal(option, code),
        };
        if req.queries.iter().any(|q| !q.contains(':')) {
            self.reply_error(option, REP_ERR_INVALID, "query without a namespace");
            return;
        }
        let mut extras = export.extra_meta_contexts();
        extras.truncate(MAX_EXTRA_META_CONTEXTS);
        let mut found: Vec<MetaContext> = if set {
            req.queries.iter().filter_map(|q| MetaContext::set_match(q, &extras)).collect()
        } else if req.queries.is_empty() {
            MetaContext::list_all(&extras)
        } else {
            req.queries.iter().flat_map(|q| MetaContext::list_matches(q, &extras)).collect()
        };
        found.sort();
        found.dedup();
        for ctx in &found {
            let mut payload = Vec::new();
            put_u32(&mut payload, if set { ctx.id() } else { 0 });
            payload.extend_from_slice(ctx.name().as_bytes());
            self.reply(option, REP_META_CONTEXT, &payload);
        }
        self.reply(option, REP_ACK, &[]);
        if set {
            self.meta = Some((req.name.to_owned(), found));
        }
    }

    /// Opens `name` for this client as the policy allows (see the `access` module doc):
    /// read-only access wraps the export in `ReadOnly`. Err: the reply code to refuse with.
    fn open_for_client(&mut self, option: u32, name: &str) -> Result<Opened, u32> {
        let resolved = match name {
            "" => self.registry.default_name().unwrap_or_default(),
            n => n.to_owned(),
        };
        let access = match &self.access {
            None => Access::Write,
            Some((policy, client)) => policy.access(client, &resolved),
        };
        if access == Access::None {
            self.denied.push(resolved);
            let tls_may_help = self.tls_mode == TlsMode::On && !self.tls_active;
            let admitted = self.access.as_ref().is_some_and(|(p, c)| p.admits(c));
            return Err(match option {
                OPT_INFO | OPT_GO if tls_may_help => REP_ERR_TLS_REQD,
                _ if !admitted => REP_ERR_POLICY,
                _ => REP_ERR_UNKNOWN,
            });
        }
        let export = self.registry.open(&resolved).ok_or(REP_ERR_UNKNOWN)?;
        let export: Arc<dyn Export> = if access == Access::Read && !export.read_only() {
            Arc::new(ReadOnly(export))
        } else {
            export
        };
        Ok(Opened { export, resolved, access })
    }

    fn reply_refusal(&mut self, option: u32, code: u32) {
        let message = match code {
            REP_ERR_UNKNOWN => "no such export",
            REP_ERR_TLS_REQD => "start TLS first",
            _ => "refused by the access policy",
        };
        self.reply_error(option, code, message);
    }

    fn finish(&mut self, name: &str, opened: Opened, flags: u16, acked: bool) {
        let Opened { export, resolved, access } = opened;
        // Contexts count only if the last SET named this export (§4.4.6).
        let contexts = match self.meta.take() {
            Some((meta_name, contexts)) if meta_name == name => contexts,
            _ => Vec::new(),
        };
        let block_sizes = BlockSizes::for_export(export.as_ref());
        self.result = Some(Negotiated {
            export,
            export_name: name.to_owned(),
            mode: self.mode,
            contexts,
            transmission_flags: flags,
            block_sizes,
            block_size_acked: acked,
            resolved_name: resolved,
            access,
        });
        self.state = State::Finished;
    }

    fn reply(&mut self, option: u32, rep_type: u32, data: &[u8]) {
        self.out.reserve(OPTION_REPLY_HEADER_LEN + data.len());
        put_u64(&mut self.out, OPTION_REPLY_MAGIC);
        put_u32(&mut self.out, option);
        put_u32(&mut self.out, rep_type);
        put_u32(&mut self.out, data.len() as u32);
        self.out.extend_from_slice(data);
    }

    fn reply_error(&mut self, option: u32, rep_type: u32, message: &str) {
        debug_assert!(rep_type & 0x8000_0000 != 0);
        self.reply(option, rep_type, message.as_bytes());
    }
}

/// An export opened for a client, with what the policy granted.
struct Opened {
    export: Arc<dyn Export>,
    resolved: String,
    access: Access,
}

/// The longest prefix of `s` of at most `max` bytes that ends on a char boundary.
fn truncate_str(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

#[cfg(test)]
#[path = "handshake_tests.rs"]
mod tests;

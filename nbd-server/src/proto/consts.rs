//! Wire constants of the NBD protocol (`spec/nbd-protocol.md` §12), named as in the spec.
//! Every integer on the wire is big-endian.

/// "NBDMAGIC": first 8 bytes of the greeting (§4.2).
pub const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
/// "IHAVEOPT": newstyle greeting magic and option request magic (§4.2, §4.3).
pub const IHAVEOPT: u64 = 0x4948_4156_454F_5054;
/// Option reply magic (§4.3).
pub const OPTION_REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
/// Compact request magic (§6.2).
pub const REQUEST_MAGIC: u32 = 0x2560_9513;
/// Extended request magic (§6.2).
pub const EXTENDED_REQUEST_MAGIC: u32 = 0x21e4_1c71;
/// Simple reply magic (§6.3).
pub const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
/// Structured reply chunk magic (§6.4).
pub const STRUCTURED_REPLY_MAGIC: u32 = 0x668e_33ef;
/// Extended reply chunk magic (§6.5).
pub const EXTENDED_REPLY_MAGIC: u32 = 0x6e8a_278c;

/// Sizes of the fixed parts (§12).
pub const GREETING_LEN: usize = 18;
pub const CLIENT_FLAGS_LEN: usize = 4;
pub const OPTION_HEADER_LEN: usize = 16;
pub const OPTION_REPLY_HEADER_LEN: usize = 20;
pub const COMPACT_REQUEST_LEN: usize = 28;
pub const EXTENDED_REQUEST_LEN: usize = 32;
pub const SIMPLE_REPLY_LEN: usize = 16;
pub const STRUCTURED_CHUNK_HEADER_LEN: usize = 20;
pub const EXTENDED_CHUNK_HEADER_LEN: usize = 32;
/// Zero padding after an EXPORT_NAME reply unless NO_ZEROES was agreed (§4.4.1).
pub const EXPORT_NAME_PADDING_LEN: usize = 124;

/// Handshake flags (server, 16 bit).
pub const FLAG_FIXED_NEWSTYLE: u16 = 0x1;
pub const FLAG_NO_ZEROES: u16 = 0x2;
/// Client flags (32 bit).
pub const FLAG_C_FIXED_NEWSTYLE: u32 = 0x1;
pub const FLAG_C_NO_ZEROES: u32 = 0x2;

/// Options (§4.4).
pub const OPT_EXPORT_NAME: u32 = 1;
pub const OPT_ABORT: u32 = 2;
pub const OPT_LIST: u32 = 3;
pub const OPT_PEEK_EXPORT: u32 = 4;
pub const OPT_STARTTLS: u32 = 5;
pub const OPT_INFO: u32 = 6;
pub const OPT_GO: u32 = 7;
pub const OPT_STRUCTURED_REPLY: u32 = 8;
pub const OPT_LIST_META_CONTEXT: u32 = 9;
pub const OPT_SET_META_CONTEXT: u32 = 10;
pub const OPT_EXTENDED_HEADERS: u32 = 11;

/// Option reply types (§4.5).
pub const REP_ACK: u32 = 1;
pub const REP_SERVER: u32 = 2;
pub const REP_INFO: u32 = 3;
pub const REP_META_CONTEXT: u32 = 4;
pub const REP_ERR_UNSUP: u32 = 0x8000_0001;
pub const REP_ERR_POLICY: u32 = 0x8000_0002;
pub const REP_ERR_INVALID: u32 = 0x8000_0003;
pub const REP_ERR_PLATFORM: u32 = 0x8000_0004;
pub const REP_ERR_TLS_REQD: u32 = 0x8000_0005;
pub const REP_ERR_UNKNOWN: u32 = 0x8000_0006;
pub const REP_ERR_SHUTDOWN: u32 = 0x8000_0007;
pub const REP_ERR_BLOCK_SIZE_REQD: u32 = 0x8000_0008;
pub const REP_ERR_TOO_BIG: u32 = 0x8000_0009;
pub const REP_ERR_EXT_HEADER_REQD: u32 = 0x8000_000a;

/// Info types (§4.4.4).
pub const INFO_EXPORT: u16 = 0;
pub const INFO_NAME: u16 = 1;
pub const INFO_DESCRIPTION: u16 = 2;
pub const INFO_BLOCK_SIZE: u16 = 3;

/// Transmission flags (§7.3).
pub const FLAG_HAS_FLAGS: u16 = 0x0001;
pub const FLAG_READ_ONLY: u16 = 0x0002;
pub const FLAG_SEND_FLUSH: u16 = 0x0004;
pub const FLAG_SEND_FUA: u16 = 0x0008;
pub const FLAG_ROTATIONAL: u16 = 0x0010;
pub const FLAG_SEND_TRIM: u16 = 0x0020;
pub const FLAG_SEND_WRITE_ZEROES: u16 = 0x0040;
pub const FLAG_SEND_DF: u16 = 0x0080;
pub const FLAG_CAN_MULTI_CONN: u16 = 0x0100;
pub const FLAG_SEND_RESIZE: u16 = 0x0200;
pub const FLAG_SEND_CACHE: u16 = 0x0400;
pub const FLAG_SEND_FAST_ZERO: u16 = 0x0800;
pub const FLAG_BLOCK_STAT_PAYLOAD: u16 = 0x1000;

/// Commands (§7.1).
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
pub const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
pub const CMD_CACHE: u16 = 5;
pub const CMD_WRITE_ZEROES: u16 = 6;
pub const CMD_BLOCK_STATUS: u16 = 7;
pub const CMD_RESIZE: u16 = 8;

/// Command flags (§7.2).
pub const CMD_FLAG_FUA: u16 = 0x01;
pub const CMD_FLAG_NO_HOLE: u16 = 0x02;
pub const CMD_FLAG_DF: u16 = 0x04;
pub const CMD_FLAG_REQ_ONE: u16 = 0x08;
pub const CMD_FLAG_FAST_ZERO: u16 = 0x10;
pub const CMD_FLAG_PAYLOAD_LEN: u16 = 0x20;

/// Reply flags (§6.4).
pub const REPLY_FLAG_DONE: u16 = 0x1;

/// Chunk types (§6.6).
pub const REPLY_TYPE_NONE: u16 = 0;
pub const REPLY_TYPE_OFFSET_DATA: u16 = 1;
pub const REPLY_TYPE_OFFSET_HOLE: u16 = 2;
pub const REPLY_TYPE_BLOCK_STATUS: u16 = 5;
pub const REPLY_TYPE_BLOCK_STATUS_EXT: u16 = 6;
pub const REPLY_TYPE_ERROR: u16 = 0x8001;
pub const REPLY_TYPE_ERROR_OFFSET: u16 = 0x8002;

/// `base:allocation` status bits (§8.2).
pub const STATE_HOLE: u32 = 0x1;
pub const STATE_ZERO: u32 = 0x2;
/// `qemu:dirty-bitmap:NAME`: the extent changed (§8, qemu's convention).
pub const STATE_DIRTY: u32 = 0x1;

//! A minimal NBD client for the soak: fixed newstyle handshake, NBD_OPT_GO, simple replies,
//! one request at a time. Every read on the socket is bounded by a timeout, so a server
//! that stops answering fails the test instead of hanging it.

use std::io::{self, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

const NBDMAGIC: u64 = 0x4e42_444d_4147_4943;
const IHAVEOPT: u64 = 0x4948_4156_454f_5054;
const REPLY_MAGIC: u64 = 0x0003_e889_0455_65a9;
const REQUEST_MAGIC: u32 = 0x2560_9513;
const SIMPLE_REPLY_MAGIC: u32 = 0x6744_6698;
const FLAG_FIXED_NEWSTYLE: u32 = 1;
const FLAG_NO_ZEROES: u32 = 2;
const OPT_GO: u32 = 7;
const REP_ACK: u32 = 1;
const REP_INFO: u32 = 3;
const INFO_EXPORT: u16 = 0;
const TRANS_SEND_FLUSH: u16 = 1 << 2;
const TRANS_SEND_TRIM: u16 = 1 << 5;
pub const CMD_READ: u16 = 0;
pub const CMD_WRITE: u16 = 1;
const CMD_DISC: u16 = 2;
pub const CMD_FLUSH: u16 = 3;
pub const CMD_TRIM: u16 = 4;
/// Longest wait for any reply; far above what a loaded machine needs.
const REPLY_TIMEOUT: Duration = Duration::from_secs(120);

pub struct Client {
    sock: UnixStream,
    pub size_bytes: u64,
    cookie: u64,
}

fn u16_at(b: &[u8], at: usize) -> u16 {
    u16::from_be_bytes([b[at], b[at + 1]])
}

impl Client {
    /// Connects to `socket` and opens `export`.
    pub fn open(socket: &Path, export: &str) -> io::Result<Client> {
        let mut sock = UnixStream::connect(socket)?;
        sock.set_read_timeout(Some(REPLY_TIMEOUT))?;
        let mut hello = [0u8; 18];
        sock.read_exact(&mut hello)?;
        if u64::from_be_bytes(hello[..8].try_into().unwrap()) != NBDMAGIC
            || u64::from_be_bytes(hello[8..16].try_into().unwrap()) != IHAVEOPT
        {
            return Err(io::Error::other("not an NBD newstyle server"));
        }
        sock.write_all(&(FLAG_FIXED_NEWSTYLE | FLAG_NO_ZEROES).to_be_bytes())?;
        let mut opt = Vec::new();
        opt.extend_from_slice(&IHAVEOPT.to_be_bytes());
        opt.extend_from_slice(&OPT_GO.to_be_bytes());
        opt.extend_from_slice(&(4 + export.len() as u32 + 2).to_be_bytes());
        opt.extend_from_slice(&(export.len() as u32).to_be_bytes());
        opt.extend_from_slice(export.as_bytes());
        opt.extend_from_slice(&0u16.to_be_bytes());
        sock.write_all(&opt)?;
        Client { sock, size_bytes: 0, cookie: 0 }.go_replies()
    }

    /// Reads option replies up to the ACK; takes the size and checks the flags we need.
    fn go_replies(mut self) -> io::Result<Client> {
        let mut flags = 0;
        loop {
            let mut head = [0u8; 20];
            self.sock.read_exact(&mut head)?;
            let magic = u64::from_be_bytes(head[..8].try_into().unwrap());
            let kind = u32::from_be_bytes(head[12..16].try_into().unwrap());
            let len = u32::from_be_bytes(head[16..20].try_into().unwrap());
            if magic != REPLY_MAGIC || len > 1 << 16 {
                return Err(io::Error::other("bad option reply"));
            }
            let mut data = vec![0u8; len as usize];
            self.sock.read_exact(&mut data)?;
            if kind & (1 << 31) != 0 {
                return Err(io::Error::other(format!("NBD_OPT_GO refused: {kind:#x}")));
            }
            if kind == REP_INFO && len >= 12 && u16_at(&data, 0) == INFO_EXPORT {
                self.size_bytes = u64::from_be_bytes(data[2..10].try_into().unwrap());
                flags = u16_at(&data, 10);
            }
            if kind == REP_ACK {
                break;
            }
        }
        if flags & TRANS_SEND_FLUSH == 0 || flags & TRANS_SEND_TRIM == 0 {
            return Err(io::Error::other(format!("export flags {flags:#x} lack flush or trim")));
        }
        Ok(self)
    }

    /// Sends one request and waits for its reply; `Ok(Err(errno))` is an error reply. A
    /// read's data lands in `buf`; a write's comes from `buf`.
    pub fn request(
        &mut self,
        cmd: u16,
        offset: u64,
        buf: &mut [u8],
    ) -> io::Result<Result<(), u32>> {
        self.cookie += 1;
        let mut req = Vec::with_capacity(28);
        req.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        req.extend_from_slice(&cmd.to_be_bytes());
        req.extend_from_slice(&self.cookie.to_be_bytes());
        req.extend_from_slice(&offset.to_be_bytes());
        req.extend_from_slice(&(buf.len() as u32).to_be_bytes());
        self.sock.write_all(&req)?;
        if cmd == CMD_WRITE {
            self.sock.write_all(buf)?;
        }
        let mut reply = [0u8; 16];
        self.sock.read_exact(&mut reply)?;
        let magic = u32::from_be_bytes(reply[..4].try_into().unwrap());
        let error = u32::from_be_bytes(reply[4..8].try_into().unwrap());
        let cookie = u64::from_be_bytes(reply[8..16].try_into().unwrap());
        if magic != SIMPLE_REPLY_MAGIC || cookie != self.cookie {
            return Err(io::Error::other("bad simple reply"));
        }
        if error != 0 {
            return Ok(Err(error));
        }
        if cmd == CMD_READ {
            self.sock.read_exact(buf)?;
        }
        Ok(Ok(()))
    }

    /// NBD_CMD_DISC, then close.
    pub fn disconnect(mut self) {
        self.cookie += 1;
        let mut req = Vec::with_capacity(28);
        req.extend_from_slice(&REQUEST_MAGIC.to_be_bytes());
        req.extend_from_slice(&0u16.to_be_bytes());
        req.extend_from_slice(&CMD_DISC.to_be_bytes());
        req.extend_from_slice(&self.cookie.to_be_bytes());
        req.extend_from_slice(&[0u8; 12]);
        let _ = self.sock.write_all(&req);
    }
}

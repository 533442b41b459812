//! Real loop devices for tests of pools on block devices.
//!
//! [`LoopDevice::new`] backs a loop device with a sparse file in the system's temporary
//! directory. It needs root and `losetup`: without them it skips loudly (and fails under
//! `CI`, see [`crate::skip_or_fail`]). Drop detaches the device and removes the file, so a
//! test that fails half-way leaves nothing attached.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

/// One attached loop device over a sparse backing file.
pub struct LoopDevice {
    device: PathBuf,
    backing: PathBuf,
}

static NEXT: AtomicU64 = AtomicU64::new(0);

fn is_root() -> bool {
    // `id -u` rather than libc: this crate stays dependency-light.
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

fn losetup(args: &[&str]) -> Result<String, String> {
    let out = Command::new(crate::find_tool("losetup").ok_or("losetup is not installed")?)
        .args(args)
        .output()
        .map_err(|e| format!("losetup: {e}"))?;
    if !out.status.success() {
        return Err(format!("losetup {args:?}: {}", String::from_utf8_lossy(&out.stderr)));
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

impl LoopDevice {
    /// Attaches a loop device of `size_bytes` (zeros). `None` (after a loud skip line) when
    /// this machine cannot: not root, no `losetup`, no free loop device.
    pub fn new(size_bytes: u64) -> Option<LoopDevice> {
        if !is_root() {
            crate::skip_or_fail("root (to attach loop devices)");
            return None;
        }
        if crate::find_tool("losetup").is_none() {
            crate::skip_or_fail("losetup");
            return None;
        }
        let n = NEXT.fetch_add(1, Ordering::SeqCst);
        let backing =
            std::env::temp_dir().join(format!("thinly-loop-{}-{n}.img", std::process::id()));
        let file = std::fs::File::create(&backing).expect("creating a loop backing file");
        file.set_len(size_bytes).expect("sizing the loop backing file");
        drop(file);
        match losetup(&["--find", "--show", backing.to_str().expect("utf-8 temp dir")]) {
            Ok(dev) => Some(LoopDevice { device: PathBuf::from(dev), backing }),
            Err(e) => {
                let _ = std::fs::remove_file(&backing);
                crate::skip_or_fail(&format!("a loop device ({e})"));
                None
            }
        }
    }

    /// The device node (`/dev/loopN`).
    pub fn path(&self) -> &Path {
        &self.device
    }

    /// The backing file (to look under the device, or to grow it).
    pub fn backing(&self) -> &Path {
        &self.backing
    }

    /// Grows the backing file to `size_bytes` and tells the loop driver (`losetup -c`), as
    /// an LV extend grows a device under a running pool.
    pub fn grow(&self, size_bytes: u64) {
        let f = std::fs::OpenOptions::new().write(true).open(&self.backing).expect("backing");
        f.set_len(size_bytes).expect("growing the backing file");
        drop(f);
        losetup(&["-c", self.device.to_str().expect("utf-8")]).expect("losetup -c");
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        if let Err(e) = losetup(&["-d", self.device.to_str().unwrap_or_default()]) {
            eprintln!("detaching {}: {e}", self.device.display());
        }
        let _ = std::fs::remove_file(&self.backing);
    }
}

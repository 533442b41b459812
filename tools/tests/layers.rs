//! The container-image layer flow of Docker's devicemapper driver, on real ext4 through
//! `thinly attach`: a 10 GiB base volume formatted and detached; five layers, each a
//! snapshot of the one below with files added, modified, deleted and renamed, a hard
//! link, a large sparse file and permission changes; three containers, each a snapshot of
//! the top layer written its own way. Every layer and container is checked against a
//! manifest (path, mode, size, sha256) computed from the test's own model of what the
//! seed put there, and by `e2fsck -fn` (on ext4; the same flow runs on xfs with
//! `xfs_repair -n` when xfsprogs is installed); then a middle layer and a container are deleted,
//! the survivors checked again along with the pool's space accounting (used blocks fall;
//! exclusive and shared blocks by `thinly ls`, as the real `thin_ls` counts them), and the
//! stopped pool's metadata passes the real `thin_check`. Replay a failure with `THINLY_SEED=N`.
//! Needs root, FUSE, loop devices, nbdfuse and e2fsprogs: skips loudly without them,
//! fails under `CI`.

mod attach_support;

use attach_support::{host_can_attach, ok, thinly, Lab};
use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Stdio};
use thinly_test_support::Rng;

/// The large sparse file each layer writes: its length and the pieces written into it.
const SPARSE_BYTES: u64 = 64 << 20;
const SPARSE_PIECE_BYTES: usize = 4096;
const MODES: [u32; 5] = [0o600, 0o640, 0o755, 0o444, 0o4755];

/// What the seed says one regular file holds.
#[derive(Clone, Debug)]
struct FileModel {
    mode: u32,
    len: u64,
    /// Non-zero pieces at offsets; the rest reads as zeros.
    pieces: Vec<(u64, Vec<u8>)>,
}

impl FileModel {
    fn dense(bytes: Vec<u8>) -> FileModel {
        FileModel { mode: 0o644, len: bytes.len() as u64, pieces: vec![(0, bytes)] }
    }
    fn contents(&self) -> Vec<u8> {
        let mut out = vec![0; self.len as usize];
        for (off, b) in &self.pieces {
            out[*off as usize..*off as usize + b.len()].copy_from_slice(b);
        }
        out
    }
}

/// The model of one filesystem image: files by path, and hard-link pairs (never changed
/// after linking, so the model need not follow shared inodes).
#[derive(Clone, Debug, Default)]
struct Image {
    files: BTreeMap<String, FileModel>,
    links: Vec<(String, String)>,
}

impl Image {
    fn linked(&self) -> BTreeSet<&str> {
        self.links.iter().flat_map(|(a, b)| [a.as_str(), b.as_str()]).collect()
    }
    /// A random file that no hard link involves.
    fn pick(&self, rng: &mut Rng) -> Option<String> {
        let linked = self.linked();
        let free: Vec<&String> =
            self.files.keys().filter(|p| !linked.contains(p.as_str())).collect();
        (!free.is_empty()).then(|| free[rng.below(free.len() as u64) as usize].clone())
    }
}

/// Applies one layer's changes, chosen by `rng`, to the mounted filesystem at `root` and
/// to the model alike.
fn apply_layer(root: &Path, img: &mut Image, rng: &mut Rng, tag: &str) {
    let at = |p: &str| root.join(p);
    std::fs::create_dir_all(at(tag)).expect("mkdir");
    std::fs::create_dir_all(at("common")).expect("mkdir");
    for k in 0..20 {
        let dir = if rng.below(3) == 0 { "common" } else { tag };
        let path = format!("{dir}/{tag}-f{k}");
        let len = rng.below(48 << 10) as usize;
        let f = FileModel::dense(rng.bytes(len));
        write_file(&at(&path), &f);
        img.files.insert(path, f);
    }
    for _ in 0..3 {
        let Some(p) = img.pick(rng) else { break };
        let f = img.files.get_mut(&p).expect("picked");
        let mut bytes = f.contents();
        let off = rng.below(bytes.len() as u64 + 1) as usize;
        let n = 1 + rng.below(8192) as usize;
        let new = rng.bytes(n);
        bytes.truncate(off);
        bytes.extend_from_slice(&new);
        let mode = f.mode;
        *f = FileModel { mode, ..FileModel::dense(bytes) };
        write_file(&at(&p), f);
    }
    for _ in 0..2 {
        let Some(p) = img.pick(rng) else { break };
        std::fs::remove_file(at(&p)).expect("delete");
        img.files.remove(&p);
    }
    if let Some(p) = img.pick(rng) {
        let to = format!("{tag}/renamed-{}", p.replace('/', "_"));
        std::fs::rename(at(&p), at(&to)).expect("rename");
        let f = img.files.remove(&p).expect("picked");
        img.files.insert(to, f);
    }
    if let Some(p) = img.pick(rng) {
        let to = format!("{tag}/link-{}", p.replace('/', "_"));
        std::fs::hard_link(at(&p), at(&to)).expect("hard link");
        let f = img.files[&p].clone();
        img.files.insert(to.clone(), f);
        img.links.push((p, to));
    }
    let mut sparse = FileModel { mode: 0o640, len: SPARSE_BYTES, pieces: vec![] };
    for _ in 0..3 {
        let off = rng.below(SPARSE_BYTES / 4096) * 4096;
        sparse.pieces.push((off, rng.bytes(SPARSE_PIECE_BYTES)));
    }
    sparse.pieces.sort_by_key(|(o, _)| *o);
    sparse.pieces.dedup_by_key(|(o, _)| *o);
    write_file(&at(&format!("{tag}/sparse")), &sparse);
    img.files.insert(format!("{tag}/sparse"), sparse);
    for _ in 0..2 {
        let Some(p) = img.pick(rng) else { break };
        let mode = MODES[rng.below(MODES.len() as u64) as usize];
        std::fs::set_permissions(at(&p), std::fs::Permissions::from_mode(mode)).expect("chmod");
        img.files.get_mut(&p).expect("picked").mode = mode;
    }
}

/// Writes `f` at `path`: its length by set_len (holes stay holes), its pieces by pwrite.
fn write_file(path: &Path, f: &FileModel) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::File::create(path).expect("create");
    file.set_len(f.len).expect("set_len");
    for (off, b) in &f.pieces {
        file.write_all_at(b, *off).expect("pwrite");
    }
    file.set_permissions(std::fs::Permissions::from_mode(f.mode)).expect("chmod");
}

/// (mode, size, sha256) by path.
type Manifest = BTreeMap<String, (u32, u64, String)>;

fn sha256_of(bytes: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("sha256sum");
    c.stdin.take().expect("stdin").write_all(bytes).expect("pipe");
    let out = c.wait_with_output().expect("sha256sum");
    String::from_utf8_lossy(&out.stdout).split_whitespace().next().unwrap_or("").to_string()
}

/// The manifest the model predicts.
fn expected(img: &Image) -> Manifest {
    let mut m = Manifest::new();
    for (p, f) in &img.files {
        m.insert(p.clone(), (f.mode, f.len, sha256_of(&f.contents())));
    }
    m
}

/// The manifest of the mounted filesystem at `root` (regular files; lost+found aside).
fn actual(root: &Path) -> Manifest {
    let mut files = Vec::new();
    let mut dirs = vec![root.to_path_buf()];
    while let Some(d) = dirs.pop() {
        for e in std::fs::read_dir(&d).expect("read_dir") {
            let e = e.expect("dir entry");
            let t = e.file_type().expect("file type");
            let rel = e.path().strip_prefix(root).expect("inside").to_string_lossy().into_owned();
            if t.is_dir() && rel != "lost+found" {
                dirs.push(e.path());
            } else if t.is_file() {
                files.push(rel);
            } else {
                assert!(t.is_dir(), "unexpected entry {rel}");
            }
        }
    }
    let mut m = Manifest::new();
    if files.is_empty() {
        return m;
    }
    let out = Command::new("sha256sum").args(&files).current_dir(root).output().expect("sha256sum");
    assert!(out.status.success(), "sha256sum: {}", String::from_utf8_lossy(&out.stderr));
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let (hash, name) = line.split_once("  ").expect("sha256sum line");
        let md = std::fs::metadata(root.join(name)).expect("stat");
        m.insert(name.to_string(), (md.mode() & 0o7777, md.len(), hash.to_string()));
    }
    m
}

/// The filesystem the image lives on.
#[derive(Clone, Copy, Debug)]
enum Fs {
    Ext4,
    Xfs,
}

impl Fs {
    fn mkfs(self, dev: &str) {
        match self {
            Fs::Ext4 => ok("mkfs.ext4", &["-q", "-F", dev], 300),
            Fs::Xfs => ok("mkfs.xfs", &["-q", "-f", dev], 300),
        };
    }
    /// Read-write mount options (ext4: no lazy inode-table zeroing behind the test's back).
    fn rw(self) -> &'static str {
        match self {
            Fs::Ext4 => "rw,noinit_itable",
            Fs::Xfs => "rw",
        }
    }
    /// Read-only mount options that write nothing, not even a journal replay.
    fn ro(self) -> &'static str {
        match self {
            Fs::Ext4 => "ro,noload",
            Fs::Xfs => "ro,norecovery",
        }
    }
    /// The filesystem's own read-only check of the unmounted device.
    fn check(self, dev: &str) {
        match self {
            Fs::Ext4 => ok("e2fsck", &["-fn", dev], 300),
            Fs::Xfs => ok("xfs_repair", &["-n", dev], 300),
        };
    }
}

/// Attaches `vol`, checks it (`e2fsck -fn` / `xfs_repair -n`), mounts it read-only and
/// compares it with `img`'s manifest (and its hard links with shared inodes); detaches.
fn verify(lab: &mut Lab, fs: Fs, vol: &str, img: &Image) {
    let dev = lab.attach(vol);
    fs.check(&dev);
    let mnt = lab.mount(&dev, &format!("verify-{vol}"), fs.ro());
    let (got, want) = (actual(&mnt), expected(img));
    for (p, w) in &want {
        assert_eq!(got.get(p), Some(w), "{vol}: {p}");
    }
    let extra: Vec<&String> = got.keys().filter(|p| !want.contains_key(*p)).collect();
    assert!(extra.is_empty(), "{vol}: files the model does not have: {extra:?}");
    for (a, b) in &img.links {
        let ino = |p: &str| std::fs::metadata(mnt.join(p)).expect("stat").ino();
        assert_eq!(ino(a), ino(b), "{vol}: {a} and {b} are one inode");
    }
    lab.umount(&mnt);
    lab.detach(vol);
}

/// Snapshots `from` as `to`, attaches and mounts it, applies a layer, and takes it down.
fn build(lab: &mut Lab, fs: Fs, from: &str, to: &str, img: &mut Image, seed: u64) {
    thinly(&["snapshot", from, to, "--pool", lab.pool()]);
    let dev = lab.attach(to);
    let mnt = lab.mount(&dev, &format!("build-{to}"), fs.rw());
    apply_layer(&mnt, img, &mut Rng(seed), to);
    lab.umount(&mnt);
    lab.detach(to);
}

fn used_data_blocks(lab: &Lab) -> u64 {
    let s: serde_json::Value =
        serde_json::from_str(&thinly(&["status", "--json", "--pool", lab.pool()])).expect("JSON");
    s["pool"]["used_data_blocks"].as_u64().expect("used_data_blocks")
}

/// Volume name by thin device id.
fn dev_ids(lab: &Lab) -> BTreeMap<u64, String> {
    let v: serde_json::Value =
        serde_json::from_str(&thinly(&["list", "--json", "--pool", lab.pool()])).expect("JSON");
    let vols = v.as_array().expect("a list");
    vols.iter()
        .map(|v| {
            let id = v["dev_id"].as_u64().expect("dev_id");
            (id, v["name"].as_str().expect("name").to_string())
        })
        .collect()
}

/// (mapped, exclusive, shared) data blocks by device, from `prog ls` (thinly's or the
/// real thin_ls).
fn sharing(prog: &str, pre: &[&str], meta: &Path) -> BTreeMap<u64, (u64, u64, u64)> {
    let fields = "DEV,MAPPED_BLOCKS,EXCLUSIVE_BLOCKS,SHARED_BLOCKS";
    let m = meta.to_str().expect("UTF-8");
    let mut args = pre.to_vec();
    args.extend(["-o", fields, "--no-headers", m]);
    let out = ok(prog, &args, 120);
    out.lines()
        .map(|l| {
            let n: Vec<u64> = l.split_whitespace().map(|w| w.parse().expect("a number")).collect();
            assert_eq!(n.len(), 4, "{prog}: {l}");
            (n[0], (n[1], n[2], n[3]))
        })
        .collect()
}

/// The space accounting of the stopped pool: every block of a volume is exclusive or
/// shared; each container has blocks of its own and shares the image's; the top layer
/// shares with the containers; the real thin_ls agrees.
fn check_sharing(meta: &Path, ids: &BTreeMap<u64, String>) {
    let ours = sharing(&attach_support::thinly_bin(), &["ls"], meta);
    assert_eq!(ours.keys().collect::<Vec<_>>(), ids.keys().collect::<Vec<_>>());
    for (id, (mapped, excl, shared)) in &ours {
        let name = &ids[id];
        assert_eq!(excl + shared, *mapped, "{name}: exclusive + shared = mapped");
        if name.starts_with("container") {
            assert!(*excl > 0 && *shared > 0, "{name}: own blocks and shared ones");
        }
        if name == "layer5" {
            assert!(*shared > 0, "{name}: shares with the containers");
        }
    }
    if let Some(tl) = thinly_test_support::require_tool("thin_ls") {
        assert_eq!(sharing(tl.to_str().expect("UTF-8"), &[], meta), ours, "thin_ls agrees");
    }
}

#[test]
fn five_layers_and_three_containers_keep_their_files_through_snapshots_and_deletes() {
    if host_can_attach() {
        layer_flow(Fs::Ext4);
    }
}

#[test]
fn the_same_layer_flow_on_xfs_keeps_every_file() {
    if host_can_attach() && thinly_test_support::require_tools(&["mkfs.xfs", "xfs_repair"]) {
        layer_flow(Fs::Xfs);
    }
}

fn layer_flow(fs: Fs) {
    let seed: u64 = std::env::var("THINLY_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or(17);
    eprintln!("layers on {fs:?}: THINLY_SEED={seed}");
    let mut lab = Lab::new("4G");
    thinly(&["create", "base", "--size", "10G", "--pool", lab.pool()]);
    let dev = lab.attach("base");
    fs.mkfs(&dev);
    let mnt = lab.mount(&dev, "base", fs.rw());
    lab.umount(&mnt);
    lab.detach("base");

    let mut images = vec![("base".to_string(), Image::default())];
    for i in 1..=5u64 {
        let (from, mut img) = images.last().cloned().expect("a lower layer");
        let name = format!("layer{i}");
        build(&mut lab, fs, &from, &name, &mut img, seed.wrapping_mul(1000).wrapping_add(i));
        images.push((name, img));
    }
    let top = images.last().cloned().expect("the top layer");
    for j in 1..=3u64 {
        let mut img = top.1.clone();
        let name = format!("container{j}");
        build(&mut lab, fs, &top.0, &name, &mut img, seed.wrapping_mul(1000).wrapping_add(100 + j));
        images.push((name, img));
    }
    for (vol, img) in &images {
        verify(&mut lab, fs, vol, img);
    }

    let before = used_data_blocks(&lab);
    thinly(&["delete", "layer3", "--force", "--pool", lab.pool()]);
    thinly(&["delete", "container2", "--pool", lab.pool()]);
    let after = used_data_blocks(&lab);
    assert!(after < before, "deleting container2 frees its own blocks ({before} -> {after})");
    images.retain(|(v, _)| v != "layer3" && v != "container2");
    for (vol, img) in &images {
        verify(&mut lab, fs, vol, img);
    }

    let ids = dev_ids(&lab);
    lab.stop_server();
    let meta = lab.dir.join("metadata");
    check_sharing(&meta, &ids);
    thinly(&["check", meta.to_str().expect("UTF-8")]);
    if let Some(tc) = thinly_test_support::require_tool("thin_check") {
        ok(tc.to_str().expect("UTF-8"), &[meta.to_str().expect("UTF-8")], 120);
    }
}

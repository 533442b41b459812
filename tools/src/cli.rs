//! The command line: one clap argument struct per tool, shared by `thinly <tool>` and the
//! `thin_<tool>` program names. New `thinly` subcommands (serve, create, …) go beside
//! these in [`ThinlyCommand`].

use std::ffi::OsString;
use std::path::PathBuf;

use clap::{ArgGroup, Args, Parser, Subcommand, ValueEnum};

use thinly_engine::fsck::metadata_size::{self, Unit};

use crate::commands;
use crate::exit;
use crate::pool;
use thinly_lab::bench;

/// The metadata tools.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tool {
    Check,
    Dump,
    Restore,
    Repair,
    Ls,
    Delta,
    Rmap,
    Trim,
    MetadataSize,
}

impl Tool {
    pub const ALL: [(Tool, &'static str, &'static str); 9] = [
        (Tool::Check, "thin_check", "check"),
        (Tool::Dump, "thin_dump", "dump"),
        (Tool::Restore, "thin_restore", "restore"),
        (Tool::Repair, "thin_repair", "repair"),
        (Tool::Ls, "thin_ls", "ls"),
        (Tool::Delta, "thin_delta", "delta"),
        (Tool::Rmap, "thin_rmap", "rmap"),
        (Tool::Trim, "thin_trim", "trim"),
        (Tool::MetadataSize, "thin_metadata_size", "metadata-size"),
    ];

    /// The tool a program name (argv[0]'s file name, or the first argument of a
    /// multi-call binary such as `thinly thin_check …`, 1.x's `pdata_tools thin_check …`)
    /// stands for: the thin_* name it ends with.
    pub fn from_program_name(name: &str) -> Option<Tool> {
        Tool::ALL.iter().find(|t| name.ends_with(t.1)).map(|t| t.0)
    }

    fn from_subcommand(name: &str) -> Option<Tool> {
        Tool::ALL.iter().find(|t| t.2 == name).map(|t| t.0)
    }
}

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The thin-provisioning-tools release whose behaviour the thin_* tools implement. LVM
/// and scripts read `thin_check -V` to decide which options they may pass (1.x's
/// `--auto-repair`, `--clear-needs-check-flag` that mends leaks), so the tools answer
/// with this, followed by thinly's own version.
pub const TOOLS_VERSION: &str = "1.3.0";

/// What `-V`/`--version` prints under a tool's name: `1.3.0 (thinly 0.1.0)`, which
/// parses as `%u.%u.%u` the way lvm2 reads it.
pub fn tools_version_line() -> String {
    format!("{TOOLS_VERSION} (thinly {VERSION})")
}

/// `thin_check`: validates thin provisioning metadata on a device or file.
#[derive(Debug, Parser)]
#[command(version = VERSION, about = "Validates thin provisioning metadata on a device or file.")]
pub struct CheckArgs {
    /// Suppress output messages, return only exit code.
    #[arg(short, long)]
    pub quiet: bool,
    /// Only check the superblock.
    #[arg(long)]
    pub super_block_only: bool,
    /// Don't check the mapping trees (nor the space maps).
    #[arg(long)]
    pub skip_mappings: bool,
    /// Only return a non-zero exit code if a fatal error is found.
    #[arg(long)]
    pub ignore_non_fatal_errors: bool,
    /// Repair trivial problems (leaked blocks: counts above the references) and clear
    /// needs_check; fatal problems still fail (use thin_repair).
    #[arg(long, conflicts_with_all = ["metadata_snap", "skip_mappings", "super_block_only", "ignore_non_fatal_errors"])]
    pub auto_repair: bool,
    /// Repairs leaked blocks, as --auto-repair does, and clears the 'needs_check' flag in
    /// the superblock (when the check then passes).
    #[arg(long = "clear-needs-check-flag", conflicts_with = "metadata_snap")]
    pub clear_needs_check: bool,
    /// Check the metadata snapshot on a live pool.
    #[arg(short = 'm', long = "metadata-snapshot", visible_alias = "metadata-snap")]
    pub metadata_snap: bool,
    /// Check the mapping tree at this block instead of the superblock's.
    #[arg(long, value_name = "BLOCKNR")]
    pub override_mapping_root: Option<u64>,
    /// Check the device details tree at this block instead of the superblock's.
    #[arg(long, value_name = "BLOCKNR")]
    pub override_details_root: Option<u64>,
    /// Read metadata that a running pool holds (it may change meanwhile; -m reads the
    /// stable metadata snapshot instead).
    #[arg(short = 'f', long)]
    pub force: bool,
    /// Specify the input device to check.
    pub input: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum DumpFormat {
    Xml,
    #[value(name = "human_readable")]
    HumanReadable,
}

/// Values that replace what the metadata says (restore, repair, dump --repair).
#[derive(Debug, Args, Clone, Copy)]
pub struct OverrideArgs {
    /// Override the transaction id.
    #[arg(long, value_name = "NUM")]
    pub transaction_id: Option<u64>,
    /// Override the data block size (sectors).
    #[arg(long, value_name = "SECTORS")]
    pub data_block_size: Option<u32>,
    /// Override the number of data blocks.
    #[arg(long, value_name = "NUM")]
    pub nr_data_blocks: Option<u64>,
}

/// `thin_dump`: dumps thin-provisioning metadata to stdout in XML or human-readable form.
#[derive(Debug, Parser)]
#[command(version = VERSION, about = "Dump thin-provisioning metadata to stdout in XML format")]
pub struct DumpArgs {
    /// Choose the output format.
    #[arg(short, long, value_enum, default_value = "xml")]
    pub format: DumpFormat,
    /// Repair the metadata whilst dumping it.
    #[arg(short, long)]
    pub repair: bool,
    /// Access the metadata snapshot on a live pool (optionally at BLOCK: -m=BLOCK).
    #[arg(short = 'm', long = "metadata-snap", num_args = 0..=1, require_equals = true, value_name = "BLOCK")]
    pub metadata_snap: Option<Option<u64>>,
    /// Specify the output file rather than stdout.
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Dump only the device with this id.
    #[arg(long, value_name = "ID")]
    pub dev_id: Option<u32>,
    /// Do not dump the mappings.
    #[arg(long)]
    pub skip_mappings: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Read metadata that a running pool holds (it may change meanwhile; -m reads the
    /// stable metadata snapshot instead).
    #[arg(long)]
    pub force: bool,
    /// Specify the input device to dump.
    pub input: PathBuf,
}

/// `thin_restore`: converts XML into binary metadata.
#[derive(Debug, Parser)]
#[command(version = VERSION, about = "Convert XML format metadata to binary.")]
pub struct RestoreArgs {
    /// Specify the input xml.
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,
    /// Specify the output device (an existing, pre-sized file or block device).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Suppress output messages.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
}

/// `thin_repair`: repairs binary metadata into a new device or file.
#[derive(Debug, Parser)]
#[command(version = VERSION, about = "Repair thin-provisioning metadata, and write it to different device or file")]
pub struct RepairArgs {
    /// Specify the input device.
    #[arg(short, long, value_name = "FILE")]
    pub input: PathBuf,
    /// Specify the output device (an existing, pre-sized file or block device).
    #[arg(short, long, value_name = "FILE")]
    pub output: PathBuf,
    /// Suppress output messages.
    #[arg(short, long)]
    pub quiet: bool,
    #[command(flatten)]
    pub overrides: OverrideArgs,
    /// Empty arguments, ignored: `lvconvert --repair` passes its `thin_repair_options`,
    /// `[ "" ]` by default. Anything else here is a usage error.
    #[arg(hide = true, value_parser = empty_argument)]
    pub empty: Vec<String>,
}

fn empty_argument(s: &str) -> Result<String, String> {
    if s.is_empty() {
        Ok(String::new())
    } else {
        Err(format!("unexpected argument '{s}'"))
    }
}

/// `thin_ls`: lists thin devices.
#[derive(Debug, Parser)]
#[command(version = VERSION, about = "List thin volumes within a pool")]
pub struct LsArgs {
    /// Comma-separated fields: DEV, MAPPED_BLOCKS, EXCLUSIVE_BLOCKS, SHARED_BLOCKS,
    /// MAPPED_SECTORS, EXCLUSIVE_SECTORS, SHARED_SECTORS, MAPPED_BYTES, EXCLUSIVE_BYTES,
    /// SHARED_BYTES, MAPPED, EXCLUSIVE, SHARED, TRANSACTION, CREATE_TIME, SNAP_TIME,
    /// HIGHEST_BLOCK, HIGHEST_SECTOR, HIGHEST_BYTE, HIGHEST_MAPPED.
    #[arg(short = 'o', long = "format", value_name = "FIELDS")]
    pub format: Option<String>,
    /// Don't output headers.
    #[arg(long)]
    pub no_headers: bool,
    /// Use the metadata snapshot rather than the current superblock.
    #[arg(short = 'm', long = "metadata-snap")]
    pub metadata_snap: bool,
    /// Read metadata that a running pool holds (it may change meanwhile; -m reads the
    /// stable metadata snapshot instead).
    #[arg(long)]
    pub force: bool,
    /// Specify the input device.
    pub input: PathBuf,
}

/// `thin_delta`: prints the differences between two thin devices' mappings.
#[derive(Debug, Parser)]
#[command(version = VERSION, about = "Print the differences in the mappings between two thin devices")]
#[command(group(ArgGroup::new("left").required(true).args(["snap1", "root1"])))]
#[command(group(ArgGroup::new("right").required(true).args(["snap2", "root2"])))]
pub struct DeltaArgs {
    /// The first device (snapshot).
    #[arg(long = "snap1", visible_alias = "thin1", value_name = "ID")]
    pub snap1: Option<u64>,
    /// The second device (snapshot).
    #[arg(long = "snap2", visible_alias = "thin2", value_name = "ID")]
    pub snap2: Option<u64>,
    /// The root block of the first thin device's mapping tree (instead of --snap1).
    #[arg(long = "root1", value_name = "BLOCKNR")]
    pub root1: Option<u64>,
    /// The root block of the second thin device's mapping tree (instead of --snap2).
    #[arg(long = "root2", value_name = "BLOCKNR")]
    pub root2: Option<u64>,
    /// Use the metadata snapshot (optionally at BLOCK: -m=BLOCK).
    #[arg(short = 'm', long = "metadata-snap", num_args = 0..=1, require_equals = true, value_name = "BLOCK")]
    pub metadata_snap: Option<Option<u64>>,
    /// Print the data blocks of each range.
    #[arg(long)]
    pub verbose: bool,
    /// Read metadata that a running pool holds (it may change meanwhile; -m reads the
    /// stable metadata snapshot instead).
    #[arg(long)]
    pub force: bool,
    /// Specify the input device.
    pub input: PathBuf,
}

/// `thin_rmap`: which thin blocks map a range of data blocks.
#[derive(Debug, Parser)]
#[command(version = VERSION, about = "Output reverse map of a thin provisioned region of blocks")]
pub struct RmapArgs {
    /// A data block range BEGIN..END (END excluded); may be repeated.
    #[arg(long = "region", value_name = "BLOCK_RANGE", required = true)]
    pub regions: Vec<String>,
    /// Read metadata that a running pool holds (it may change meanwhile; -m reads the
    /// stable metadata snapshot instead).
    #[arg(long)]
    pub force: bool,
    /// Specify the input device.
    pub input: PathBuf,
}

/// `thin_trim`: discards the data blocks no thin device maps.
#[derive(Debug, Parser)]
#[command(version = VERSION, about = "Issue discard requests for free pool space (offline tool).")]
pub struct TrimArgs {
    /// The pool's metadata device or file.
    #[arg(long = "metadata-dev", value_name = "FILE")]
    pub metadata_dev: PathBuf,
    /// The pool's data device or file.
    #[arg(long = "data-dev", value_name = "FILE")]
    pub data_dev: PathBuf,
    /// Print the ranges that would be discarded, discard nothing.
    #[arg(long)]
    pub dry_run: bool,
}

/// `thin_metadata_size`: estimates the metadata device size (1.x's options and output).
#[derive(Debug, Parser)]
#[command(
    version = VERSION,
    about = "Estimate the size of the metadata device needed for a given configuration."
)]
pub struct MetadataSizeArgs {
    /// Specify the data block size (a number of sectors, or with a unit: 64k, 1m).
    #[arg(short, long, value_name = "SIZE[bskmg]", value_parser = size_bytes)]
    pub block_size: u64,
    /// Specify the size of pool device (sectors, or with a unit: 1t).
    #[arg(short = 's', long, value_name = "SIZE[bskmgtp]", value_parser = size_bytes)]
    pub pool_size: u64,
    /// Maximum number of thin devices and snapshots.
    #[arg(short, long, value_name = "NUM")]
    pub max_thins: u64,
    /// Specify the output unit in {bskKmMgG} (or its name: sector, mebibyte …).
    #[arg(short, long, value_name = "UNIT", default_value = "sector", value_parser = unit)]
    pub unit: Unit,
    /// Output numeric value only (=short: with the unit letter, =long: with its name).
    #[arg(short, long, value_name = "OPT", num_args = 0..=1, require_equals = true,
          default_missing_value = "", value_parser = ["", "short", "long"], hide_possible_values = true)]
    pub numeric_only: Option<String>,
}

fn size_bytes(s: &str) -> Result<u64, String> {
    metadata_size::parse_size(s).map_err(|e| e.to_string())
}

fn unit(s: &str) -> Result<Unit, String> {
    s.parse::<Unit>().map_err(|e| e.to_string())
}

/// `thinly`: the thinly command.
#[derive(Debug, Parser)]
#[command(name = "thinly", version = VERSION, about = "thinly: userspace dm-thin and its metadata tools")]
struct Thinly {
    #[command(subcommand)]
    command: ThinlyCommand,
}

#[derive(Debug, Subcommand)]
enum ThinlyCommand {
    /// Validate thin metadata (thin_check).
    Check(CheckArgs),
    /// Dump thin metadata as XML or text (thin_dump).
    Dump(DumpArgs),
    /// Write binary metadata from XML (thin_restore).
    Restore(RestoreArgs),
    /// Rebuild damaged metadata into a new file (thin_repair).
    Repair(RepairArgs),
    /// List thin devices (thin_ls).
    Ls(LsArgs),
    /// Compare two thin devices' mappings (thin_delta).
    Delta(DeltaArgs),
    /// Reverse map of data blocks (thin_rmap).
    Rmap(RmapArgs),
    /// Discard unused data blocks (thin_trim).
    Trim(TrimArgs),
    /// Estimate the metadata size of a pool (thin_metadata_size).
    #[command(name = "metadata-size", disable_help_flag = true, disable_version_flag = true)]
    MetadataSize {
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<OsString>,
    },
    /// Serve every volume of a pool over NBD (creating ./thinly-pool with a 10 GiB vol0 if
    /// there is no pool yet).
    Serve(pool::serve::ServeArgs),
    /// Benchmark thinly against qemu-nbd and nbdkit with fio (tables and plots in --out).
    Bench(bench::BenchArgs),
    /// Pool-wide commands: create, status, extend.
    #[command(subcommand)]
    Pool(PoolCommand),
    /// Create a thin volume.
    Create {
        name: String,
        /// Virtual size (bytes, or with a unit: 128s sectors, 64K, 10G, 1T).
        #[arg(long, value_parser = pool::size_arg)]
        size: u64,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// Snapshot a volume (or a snapshot), O(1) at any depth.
    Snapshot {
        origin: String,
        name: String,
        /// Export the snapshot read-only.
        #[arg(long)]
        read_only: bool,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// Delete a volume, freeing what no other volume shares. Refused while a client has it
    /// open or snapshots were taken of it, unless --force.
    Delete {
        name: String,
        /// Delete it anyway: close its clients' connections first; its snapshots then show
        /// their origin as deleted.
        #[arg(long, short = 'f')]
        force: bool,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// Grow or shrink a volume (shrinking discards past the new end: refused unless --force).
    Resize {
        name: String,
        #[arg(long, value_parser = pool::size_arg)]
        size: u64,
        /// Shrink it anyway.
        #[arg(long, short = 'f')]
        force: bool,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// The pool (Data%, Meta%) and its volumes (size, Data%, mapped, exclusive and shared
    /// bytes, origin), as lvs shows them.
    List {
        /// JSON: the volume objects (with -o: only the chosen fields).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        table: pool::TableArgs,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// The pool's status (the kernel's thin-pool fields, labelled) and its volumes.
    Status {
        #[command(flatten)]
        format: StatusFormat,
        #[command(flatten)]
        table: pool::TableArgs,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// Send a dm-thin pool message: "create_thin ID", "create_snap ID ORIGIN", "delete ID",
    /// "set_transaction_id OLD NEW", "reserve_metadata_snap", "release_metadata_snap".
    Message {
        text: String,
        /// Print the reply as JSON (the new export's name for create_thin/create_snap).
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// The byte ranges where volume B's data differs from volume A's (changed data blocks,
    /// as thin_delta sees them): "OFFSET LENGTH" lines; online or offline.
    Diff {
        /// The older volume (e.g. the previous backup's snapshot).
        a: String,
        /// The newer volume.
        b: String,
        /// JSON: an array of {"offset", "length"} (with --stat: the totals).
        #[arg(long)]
        json: bool,
        /// Only the totals: changed bytes and extents.
        #[arg(long)]
        stat: bool,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// Print the dmsetup commands that activate the pool under the kernel's dm-thin.
    KernelScript(crate::kernel::KernelScriptArgs),
    /// Make the thin_* names (thin_check, thin_dump, …) links to this binary.
    InstallLinks(crate::install_links::InstallLinksArgs),
    /// Attach a served volume as a local block device (prints the device's path).
    Attach(crate::attach::AttachArgs),
    /// Detach a volume (by name or device) that `attach` attached, flushing it first.
    Detach(crate::attach::DetachArgs),
}

/// How `status` and `pool status` print.
#[derive(Debug, Clone, Copy, Args)]
struct StatusFormat {
    /// Print the status as JSON.
    #[arg(long, conflicts_with = "raw")]
    json: bool,
    /// Print only the kernel's thin-pool status line (`dmsetup status` fields, unlabelled),
    /// for scripts.
    #[arg(long, visible_alias = "kernel")]
    raw: bool,
}

#[derive(Debug, Subcommand)]
enum PoolCommand {
    /// Create a pool directory (metadata, sparse data file, pool.json).
    Create(pool::PoolCreateArgs),
    /// The pool's status (the kernel's thin-pool status fields, labelled).
    Status {
        #[command(flatten)]
        format: StatusFormat,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
    /// Grow the data file.
    Extend {
        /// The new data size (bytes, or with a unit: 128s sectors, 64K, 10G, 1T).
        #[arg(long, value_parser = pool::size_arg)]
        size: u64,
        #[command(flatten)]
        pool: pool::PoolArgs,
    },
}

/// `thinly <subcommand> …`: each metadata tool re-parses its own arguments so that
/// `thinly check …` and `thin_check …` behave the same.
pub fn run_thinly(args: &[OsString]) -> u8 {
    if let Some(sub) = args.get(1).and_then(|a| a.to_str()) {
        if let Some(tool) = Tool::from_subcommand(sub) {
            let prog = format!("thinly {sub}");
            return commands::run(tool, &prog, &args[2..]);
        }
        // The multi-call form: `thinly thin_check ARGS`, as `pdata_tools thin_check ARGS`.
        let name = std::path::Path::new(sub).file_name().and_then(|n| n.to_str());
        if let Some((tool, name)) = name.and_then(|n| Some((Tool::from_program_name(n)?, n))) {
            return commands::run(tool, name, &args[2..]);
        }
    }
    match exit::parse::<Thinly>("thinly", args.get(1..).unwrap_or_default()) {
        Ok(t) => match run_pool_command(t.command) {
            Ok(()) => exit::SUCCESS,
            Err(e) => {
                eprintln!("thinly: {e:#}");
                exit::COMMAND_FAILED
            }
        },
        Err(code) => code,
    }
}

/// The pool commands (the metadata tools were dispatched by name already).
fn run_pool_command(cmd: ThinlyCommand) -> anyhow::Result<()> {
    use pool::control::Request;
    use pool::show;
    let (dir, req, human): (_, _, fn(&serde_json::Value) -> String) = match cmd {
        // serve sets up its own logging (--log-format).
        ThinlyCommand::Serve(a) => return pool::serve::run(&a),
        ThinlyCommand::Bench(a) => return bench::run(&a),
        ThinlyCommand::Pool(PoolCommand::Create(a)) => return pool::pool_create(&a),
        ThinlyCommand::KernelScript(a) => return crate::kernel::run(&a),
        ThinlyCommand::InstallLinks(a) => return crate::install_links::run(&a),
        ThinlyCommand::Attach(a) => return crate::attach::run_attach(&a),
        ThinlyCommand::Detach(a) => return crate::attach::run_detach(&a),
        ThinlyCommand::Pool(PoolCommand::Status { format, pool }) => {
            return print_status(&pool.dir(), format, None)
        }
        ThinlyCommand::Status { format, table, pool } => {
            return print_status(&pool.dir(), format, Some(&table))
        }
        ThinlyCommand::Pool(PoolCommand::Extend { size, pool }) => {
            (pool.dir(), Request::Extend { size_bytes: size }, |v| {
                let p = &v["pool"];
                let blocks = p["total_data_blocks"].as_u64().unwrap_or(0);
                let bs = p["data_block_size_bytes"].as_u64().unwrap_or(0);
                let size = pool::size::format_size(blocks.saturating_mul(bs));
                format!("extended the pool's data to {size} ({blocks} blocks)")
            })
        }
        ThinlyCommand::Create { name, size, pool } => {
            (pool.dir(), Request::Create { name, size_bytes: size }, |v| {
                show::volume_line("created volume", v)
            })
        }
        ThinlyCommand::Snapshot { origin, name, read_only, pool } => {
            (pool.dir(), Request::Snapshot { origin, name, read_only }, |v| {
                show::volume_line("created snapshot", v)
            })
        }
        ThinlyCommand::Delete { name, force, pool } => {
            let req = Request::Delete { name: name.clone(), force };
            let r = pool::run_request(&pool.dir(), &req)?;
            return pool::print_response(r, false, |_| format!("deleted volume {name}"));
        }
        ThinlyCommand::Resize { name, size, force, pool } => {
            (pool.dir(), Request::Resize { name, size_bytes: size, force }, |v| {
                show::volume_line("resized volume", v)
            })
        }
        ThinlyCommand::List { json, table, pool } => return print_list(&pool.dir(), json, &table),
        ThinlyCommand::Diff { a, b, json, stat, pool } => {
            return pool::diff::run(&pool.dir(), &a, &b, json, stat);
        }
        ThinlyCommand::Message { text, json, pool } => return run_message(&pool.dir(), text, json),
        _ => anyhow::bail!("internal error: a metadata tool reached the pool commands"),
    };
    let r = pool::run_request(&dir, &req)?;
    pool::print_response(r, false, human)
}

/// `list`: the lvs-style table of the pool and its volumes (`pool::report`), or JSON.
fn print_list(dir: &std::path::Path, json: bool, t: &pool::TableArgs) -> anyhow::Result<()> {
    let fields = t.fields()?;
    let mut r = pool::run_request(dir, &pool::control::Request::Status)?;
    crate::attach::annotate(dir, &mut r.result["volumes"]);
    if json {
        // Without -o: the volume objects, as the control socket's `list` gives them.
        let v = match &t.fields {
            Some(_) => pool::report::json_rows(&r.result, &fields),
            None => r.result["volumes"].take(),
        };
        r.result = v;
        return pool::print_response(r, true, |_| String::new());
    }
    let units = t.units();
    pool::print_response(r, false, |v| {
        format!("{}{}", pool::report::table(v, &fields, units), crate::attach::table(dir))
    })
}

/// `status` (with the volumes) and `pool status` (without): labelled, `--json` or `--raw`.
fn print_status(
    dir: &std::path::Path,
    f: StatusFormat,
    volumes: Option<&pool::TableArgs>,
) -> anyhow::Result<()> {
    let mut r = pool::run_request(dir, &pool::control::Request::Status)?;
    if volumes.is_some() {
        crate::attach::annotate(dir, &mut r.result["volumes"]);
    }
    if f.raw {
        return pool::print_response(r, false, |v| {
            v["kernel_status"].as_str().unwrap_or("").to_string()
        });
    }
    let table = match volumes {
        Some(t) => Some((t.fields()?, t.units())),
        None => None,
    };
    pool::print_response(r, f.json, |v| match table {
        Some((fields, units)) => format!(
            "{}\n\n{}{}",
            pool::show::status_text(v),
            pool::report::table(v, &fields, units),
            crate::attach::table(dir)
        ),
        None => pool::show::status_text(v),
    })
}

/// `thinly message`: the kernel's vocabulary; a new device's export is named and sized.
fn run_message(dir: &std::path::Path, text: String, json: bool) -> anyhow::Result<()> {
    use pool::control::Request;
    let r = pool::run_request(dir, &Request::Message { text: text.clone() })?;
    if json || !r.ok {
        return pool::print_response(r, json, |_| String::new());
    }
    let reply = r.result.as_str().unwrap_or("").to_string();
    let creates = matches!(text.split_whitespace().next(), Some("create_thin" | "create_snap"));
    // The export list is only looked up for a create, and a failure to list only costs the
    // size in the message: the device was made.
    let volumes = match creates {
        true => pool::run_request(dir, &Request::List).ok().filter(|l| l.ok).map(|l| l.result),
        false => None,
    };
    pool::print_response(r, false, |_| pool::show::message_text(&text, &reply, volumes.as_ref()))
}

//! `thin_dump`: XML (0.9.0's layout) or human-readable text; `--repair` dumps what
//! repair salvages.

use anyhow::{Context, Result};
use thinly_engine::fsck::dump::{dump, DumpOptions};
use thinly_engine::fsck::human::human_dump_writer;
use thinly_engine::fsck::ir::MetadataVisitor;
use thinly_engine::fsck::repair::{salvage, SalvageOptions};
use thinly_engine::fsck::restore::Overrides;
use thinly_engine::fsck::xml::{dump_writer, Dialect};

use super::live;
use crate::cli::{DumpArgs, DumpFormat, OverrideArgs};
use crate::exit;
use crate::files::{open_input, output, Progress};

pub fn overrides(o: &OverrideArgs) -> Overrides {
    Overrides {
        transaction_id: o.transaction_id,
        data_block_size: o.data_block_size,
        nr_data_blocks: o.nr_data_blocks,
    }
}

pub fn run(a: &DumpArgs) -> Result<u8> {
    live::may_read("thin_dump", &a.input, a.force, a.metadata_snap.is_some())?;
    let dev = open_input(&a.input, false)?;
    let out = output(a.output.as_deref())?;
    let mut writer: Box<dyn MetadataVisitor> = match a.format {
        DumpFormat::Xml => Box::new(dump_writer(out, Dialect::V09)),
        DumpFormat::HumanReadable => Box::new(human_dump_writer(out)),
    };
    let (_p, dev) = Progress::metadata("dumping metadata", dev);
    if a.repair {
        let opts = SalvageOptions {
            overrides: overrides(&a.overrides),
            dev_id: a.dev_id,
            skip_mappings: a.skip_mappings,
        };
        salvage(dev, &opts, &mut *writer)
            .with_context(|| format!("repairing {}", a.input.display()))?;
    } else {
        let opts = DumpOptions {
            metadata_snap: a.metadata_snap,
            dev_id: a.dev_id,
            skip_mappings: a.skip_mappings,
            overrides: overrides(&a.overrides),
        };
        dump(dev, &opts, &mut *writer).with_context(|| format!("dumping {}", a.input.display()))?;
    }
    Ok(exit::SUCCESS)
}

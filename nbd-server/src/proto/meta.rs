//! Metadata contexts we serve (§8) and how LIST/SET queries match them.

use crate::limits::MAX_STRING_BYTES;

/// A metadata context a client can select with `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetaContext {
    /// `base:allocation`: HOLE/ZERO bits (§8.2).
    BaseAllocation,
    /// `qemu:allocation-depth`: 0 unallocated, 1 local, 2 shared (§8.3).
    AllocationDepth,
    /// A context the export offers besides these (`Export::extra_meta_contexts`), such as
    /// `qemu:dirty-bitmap:NAME`; its status comes from `Export::extra_meta_status`.
    Extra {
        /// Connection-local id: `FIRST_EXTRA_ID` + its index in the export's list when
        /// selected (0 in LIST replies, which carry no ids).
        id: u32,
        /// The full name, `namespace:leaf`.
        name: String,
    },
}

/// Ids of extra contexts start here, above the fixed ids of the built-in ones.
pub const FIRST_EXTRA_ID: u32 = 16;

impl MetaContext {
    /// Every built-in context, in the order LIST with no query returns them.
    pub const ALL: [MetaContext; 2] = [MetaContext::BaseAllocation, MetaContext::AllocationDepth];

    /// The context name on the wire.
    pub fn name(&self) -> &str {
        match self {
            MetaContext::BaseAllocation => "base:allocation",
            MetaContext::AllocationDepth => "qemu:allocation-depth",
            MetaContext::Extra { name, .. } => name,
        }
    }

    /// Connection-local id, unique within a connection's selection.
    pub fn id(&self) -> u32 {
        match self {
            MetaContext::BaseAllocation => 1,
            MetaContext::AllocationDepth => 2,
            MetaContext::Extra { id, .. } => *id,
        }
    }

    /// The built-in contexts and then the export's `extras` (valid names only).
    fn candidates(extras: &[String]) -> impl Iterator<Item = MetaContext> + '_ {
        let extra =
            extras.iter().enumerate().filter(|(_, n)| valid_extra(n)).map(|(i, n)| {
                MetaContext::Extra { id: FIRST_EXTRA_ID + i as u32, name: n.clone() }
            });
        Self::ALL.into_iter().chain(extra)
    }

    /// Contexts a LIST query matches: the exact name, or every name under a query that
    /// ends in `:` (`base:`, `qemu:`, `qemu:dirty-bitmap:` are wildcards, as in qemu);
    /// unknown namespaces and leaves match nothing. Ids are 0 (LIST carries none).
    pub fn list_matches(query: &str, extras: &[String]) -> Vec<MetaContext> {
        if !query.contains(':') {
            return Vec::new();
        }
        Self::candidates(extras)
            .filter(|c| c.name() == query || (query.ends_with(':') && c.name().starts_with(query)))
            .map(Self::without_id)
            .collect()
    }

    /// Every context, for a LIST with no query (ids 0).
    pub fn list_all(extras: &[String]) -> Vec<MetaContext> {
        Self::candidates(extras).map(Self::without_id).collect()
    }

    fn without_id(self) -> MetaContext {
        match self {
            MetaContext::Extra { name, .. } => MetaContext::Extra { id: 0, name },
            builtin => builtin,
        }
    }

    /// The context a SET query selects: exact names only; empty leaves select nothing.
    pub fn set_match(query: &str, extras: &[String]) -> Option<MetaContext> {
        Self::candidates(extras).find(|c| c.name() == query)
    }
}

/// An extra context name we can put on the wire: `namespace:leaf`, both non-empty, not
/// one of ours, at most `MAX_STRING_BYTES`.
fn valid_extra(name: &str) -> bool {
    let builtin = MetaContext::ALL.iter().any(|c| c.name() == name);
    let shaped = name.split_once(':').is_some_and(|(ns, leaf)| !ns.is_empty() && !leaf.is_empty());
    shaped && !builtin && name.len() <= MAX_STRING_BYTES
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_leaf_is_a_wildcard_in_list_and_selects_nothing_in_set() {
        assert_eq!(MetaContext::list_matches("base:", &[]), vec![MetaContext::BaseAllocation]);
        assert_eq!(MetaContext::list_matches("qemu:", &[]), vec![MetaContext::AllocationDepth]);
        assert_eq!(MetaContext::set_match("base:", &[]), None);
        assert_eq!(
            MetaContext::set_match("base:allocation", &[]),
            Some(MetaContext::BaseAllocation)
        );
    }

    #[test]
    fn unknown_namespaces_and_leaves_are_ignored() {
        assert!(MetaContext::list_matches("x-other:thing", &[]).is_empty());
        assert!(MetaContext::list_matches("base:other", &[]).is_empty());
        assert!(MetaContext::list_matches("nocolon", &[]).is_empty());
        assert_eq!(MetaContext::set_match("qemu:dirty-bitmap:b0", &[]), None);
    }

    #[test]
    fn extra_contexts_match_by_prefix_in_list_and_exactly_in_set() {
        let extras: Vec<String> =
            ["qemu:dirty-bitmap:s1", "qemu:dirty-bitmap:s2", "base:allocation", "bad", "x:"]
                .iter()
                .map(|s| s.to_string())
                .collect();
        let names =
            |v: Vec<MetaContext>| v.iter().map(|c| c.name().to_string()).collect::<Vec<_>>();
        assert_eq!(
            names(MetaContext::list_matches("qemu:dirty-bitmap:", &extras)),
            ["qemu:dirty-bitmap:s1", "qemu:dirty-bitmap:s2"]
        );
        assert_eq!(
            names(MetaContext::list_matches("qemu:", &extras)),
            ["qemu:allocation-depth", "qemu:dirty-bitmap:s1", "qemu:dirty-bitmap:s2"]
        );
        assert_eq!(names(MetaContext::list_all(&extras)).len(), 4);
        assert!(MetaContext::list_matches("qemu:dirty-bitmap:s", &extras).is_empty());
        let s2 = MetaContext::set_match("qemu:dirty-bitmap:s2", &extras);
        assert_eq!(
            s2,
            Some(MetaContext::Extra {
                id: FIRST_EXTRA_ID + 1,
                name: "qemu:dirty-bitmap:s2".into()
            })
        );
        assert_eq!(MetaContext::set_match("qemu:dirty-bitmap:", &extras), None);
        assert_eq!(MetaContext::set_match("x:", &extras), None);
    }
}

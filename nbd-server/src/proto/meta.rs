//! Metadata contexts we serve (§8) and how LIST/SET queries match them.

/// A metadata context a client can select with `NBD_OPT_SET_META_CONTEXT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MetaContext {
    /// `base:allocation`: HOLE/ZERO bits (§8.2).
    BaseAllocation,
    /// `qemu:allocation-depth`: 0 unallocated, 1 local, 2 shared (§8.3).
    AllocationDepth,
}

impl MetaContext {
    /// Every context, in the order LIST with no query returns them.
    pub const ALL: [MetaContext; 2] = [MetaContext::BaseAllocation, MetaContext::AllocationDepth];

    /// The context name on the wire.
    pub fn name(self) -> &'static str {
        match self {
            MetaContext::BaseAllocation => "base:allocation",
            MetaContext::AllocationDepth => "qemu:allocation-depth",
        }
    }

    /// Connection-local id. Fixed per context, so unique within a connection.
    pub fn id(self) -> u32 {
        match self {
            MetaContext::BaseAllocation => 1,
            MetaContext::AllocationDepth => 2,
        }
    }

    /// Contexts a LIST query matches: an empty leaf (`base:`, `qemu:`) is a wildcard
    /// for its namespace; unknown namespaces and leaves match nothing.
    pub fn list_matches(query: &str) -> Vec<MetaContext> {
        let Some((ns, leaf)) = query.split_once(':') else {
            return Vec::new();
        };
        Self::ALL
            .into_iter()
            .filter(|c| {
                let (cns, cleaf) = c.name().split_once(':').unwrap_or(("", ""));
                cns == ns && (leaf.is_empty() || cleaf == leaf)
            })
            .collect()
    }

    /// The context a SET query selects: exact names only; empty leaves select nothing.
    pub fn set_match(query: &str) -> Option<MetaContext> {
        Self::ALL.into_iter().find(|c| c.name() == query)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_leaf_is_a_wildcard_in_list_and_selects_nothing_in_set() {
        assert_eq!(MetaContext::list_matches("base:"), vec![MetaContext::BaseAllocation]);
        assert_eq!(MetaContext::list_matches("qemu:"), vec![MetaContext::AllocationDepth]);
        assert_eq!(MetaContext::set_match("base:"), None);
        assert_eq!(MetaContext::set_match("base:allocation"), Some(MetaContext::BaseAllocation));
    }

    #[test]
    fn unknown_namespaces_and_leaves_are_ignored() {
        assert!(MetaContext::list_matches("x-other:thing").is_empty());
        assert!(MetaContext::list_matches("base:other").is_empty());
        assert!(MetaContext::list_matches("nocolon").is_empty());
        assert_eq!(MetaContext::set_match("qemu:dirty-bitmap:b0"), None);
    }
}

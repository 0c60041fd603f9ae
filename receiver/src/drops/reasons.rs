//! Drop reason names, read from the running kernel's BTF.
//!
//! The kernel numbers its drop reasons in `enum skb_drop_reason`
//! (include/net/dropreason-core.h) and renumbers them between versions as
//! reasons are added, so a copied table would name the wrong reason on
//! another kernel. The names come from the running kernel's own BTF
//! instead: each enumerator `SKB_DROP_REASON_X` is reason `X`. Values the
//! enum does not name (a subsystem's reasons, `SKB_DROP_REASON_SUBSYS_*`
//! in the upper 16 bits, or a kernel newer than its BTF) are reported as
//! `UNKNOWN_<value>`.

use std::collections::HashMap;
use std::sync::Arc;

use crate::btf::{Btf, BtfError};

/// The enum the kernel's `kfree_skb` tracepoint passes.
pub const ENUM: &str = "skb_drop_reason";
/// The prefix every drop reason's enumerator has.
pub const PREFIX: &str = "SKB_DROP_REASON_";

/// Reason value -> name without its prefix.
#[derive(Clone, Debug, Default)]
pub struct DropReasons {
    names: HashMap<u32, Arc<str>>,
}

impl DropReasons {
    /// The running kernel's reasons.
    pub fn from_sys_fs() -> Result<Self, BtfError> {
        Self::from_btf(&Btf::from_sys_fs()?)
    }

    pub fn from_btf(btf: &Btf) -> Result<Self, BtfError> {
        let mut names = HashMap::new();
        for (name, value) in btf.enumerators(ENUM)? {
            // SKB_NOT_DROPPED_YET and SKB_CONSUMED have no prefix and are
            // not drops; SKB_DROP_REASON_MAX and the SUBSYS_ values are
            // bounds and masks, not reasons.
            let Some(reason) = name.strip_prefix(PREFIX) else {
                continue;
            };
            if reason == "MAX" || reason.starts_with("SUBSYS_") {
                continue;
            }
            if let Ok(v) = u32::try_from(value) {
                names.insert(v, Arc::from(reason));
            }
        }
        Ok(Self { names })
    }

    /// The name of reason `value`.
    pub fn name(&self, value: u32) -> Arc<str> {
        match self.names.get(&value) {
            Some(n) => n.clone(),
            None => Arc::from(format!("UNKNOWN_{value}")),
        }
    }

    /// The value of reason `name` (without its prefix), if this kernel has
    /// it.
    pub fn value(&self, name: &str) -> Option<u32> {
        self.names
            .iter()
            .find(|(_, n)| &***n == name)
            .map(|(v, _)| *v)
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }

    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernel_names_its_reasons() {
        let r = DropReasons::from_sys_fs().unwrap();
        // Every kernel with drop reasons has these; the values are the
        // kernel's, whatever they are.
        for name in ["NOT_SPECIFIED", "NO_SOCKET", "NETFILTER_DROP"] {
            let v = r.value(name).unwrap_or_else(|| panic!("{name} missing"));
            assert_eq!(&*r.name(v), name);
        }
        assert!(r.value("MAX").is_none());
        assert!(r.len() > 50, "{} reasons", r.len());
        assert_eq!(&*r.name(u32::MAX), "UNKNOWN_4294967295");
    }
}

//! Buckets the servers derive from their view (`voiyd_names`, `voiyd_mesh`): what to
//! write so that the stored keys say what is wanted.

use std::collections::BTreeMap;

/// What turns `stored` into `wanted`.
#[derive(Debug, PartialEq, Eq)]
pub struct Changes<V> {
    /// Keys to write, with their values.
    pub put: Vec<(String, V)>,
    /// Keys to remove.
    pub delete: Vec<String>,
}

impl<V> Default for Changes<V> {
    fn default() -> Self {
        Changes {
            put: Vec::new(),
            delete: Vec::new(),
        }
    }
}

/// The writes that make the bucket (`stored`) say `wanted`: only the difference.
pub fn changes<V: PartialEq + Clone>(
    stored: &BTreeMap<String, V>,
    wanted: &BTreeMap<String, V>,
) -> Changes<V> {
    Changes {
        put: wanted
            .iter()
            .filter(|(k, v)| stored.get(*k) != Some(*v))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect(),
        delete: stored
            .keys()
            .filter(|k| !wanted.contains_key(*k))
            .cloned()
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_write_only_the_difference() {
        let map = |pairs: &[(&str, u32)]| -> BTreeMap<String, u32> {
            pairs.iter().map(|(k, v)| (k.to_string(), *v)).collect()
        };
        let stored = map(&[("a", 1), ("b", 2)]);
        let wanted = map(&[("a", 1), ("b", 3), ("c", 4)]);
        let c = changes(&stored, &wanted);
        assert_eq!(c.put, vec![("b".to_string(), 3), ("c".to_string(), 4)]);
        assert!(c.delete.is_empty());
        let c = changes(&wanted, &stored);
        assert_eq!(c.delete, vec!["c".to_string()]);
        assert_eq!(changes(&wanted, &wanted), Changes::default());
    }
}

//! Container subnets: each node gets its own block (a /24 by default) of the cluster CIDR
//! (default `10.69.0.0/16`), so no two nodes hand out the same task addresses.
//!
//! Allocation is a CAS create of `net.<subnet>` in bucket `voiyd_subnets` (one owner per
//! subnet, whichever server wins), then `node.<node>` records the result for the node to
//! read. Deleting a node releases both. The choice itself is the pure [`allocate`].

use crate::error::{BoxError, ServerError};
use async_nats::jetstream::kv;
use futures::TryStreamExt;
use std::collections::HashSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;
use voiyd_nats::names;

/// An IPv4 network: base address and prefix length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Cidr {
    /// The network address (host bits zero).
    pub base: u32,
    /// Prefix length, 0..=32.
    pub len: u8,
}

/// A CIDR that does not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{0}` is not an IPv4 network: use ADDRESS/LENGTH, e.g. 10.69.0.0/16")]
pub struct CidrError(pub String);

fn mask(len: u8) -> u32 {
    if len == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(len))
    }
}

impl FromStr for Cidr {
    type Err = CidrError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || CidrError(s.to_string());
        let (addr, len) = s.trim().split_once('/').ok_or_else(err)?;
        let addr: Ipv4Addr = addr.parse().map_err(|_| err())?;
        let len: u8 = len.parse().map_err(|_| err())?;
        if len > 32 {
            return Err(err());
        }
        Ok(Cidr {
            base: u32::from(addr) & mask(len),
            len,
        })
    }
}

impl fmt::Display for Cidr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", Ipv4Addr::from(self.base), self.len)
    }
}

impl Cidr {
    /// How many blocks of `/prefix` the network holds (0 when `prefix` is shorter).
    pub fn blocks(&self, prefix: u8) -> u64 {
        if prefix < self.len || prefix > 32 {
            0
        } else {
            1u64 << (prefix - self.len)
        }
    }

    /// The `i`-th block of `/prefix`.
    pub fn block(&self, prefix: u8, i: u64) -> Option<Cidr> {
        if i >= self.blocks(prefix) {
            return None;
        }
        let step = 1u64 << (32 - u32::from(prefix));
        Some(Cidr {
            base: (u64::from(self.base) + i * step) as u32,
            len: prefix,
        })
    }
}

/// The first `/prefix` block of `cluster` not in `taken`, or `None` when all are.
pub fn allocate(cluster: Cidr, prefix: u8, taken: &HashSet<Cidr>) -> Option<Cidr> {
    (0..cluster.blocks(prefix))
        .filter_map(|i| cluster.block(prefix, i))
        .find(|c| !taken.contains(c))
}

/// Reads a subnet back from its claim key (`net.10-69-3-0-24`).
pub fn parse_claim_key(key: &str) -> Option<Cidr> {
    let rest = key.strip_prefix("net.")?;
    let parts: Vec<&str> = rest.split('-').collect();
    if parts.len() != 5 {
        return None;
    }
    format!(
        "{}.{}.{}.{}/{}",
        parts[0], parts[1], parts[2], parts[3], parts[4]
    )
    .parse()
    .ok()
}

/// The allocator over bucket `voiyd_subnets`.
#[derive(Clone)]
pub struct Subnets {
    kv: kv::Store,
    cluster: Cidr,
    prefix: u8,
    /// What a block is, in logs and errors ("container subnet", "virtual IP").
    what: &'static str,
}

impl Subnets {
    /// Allocates `/prefix` blocks of `cluster` in `kv`.
    pub fn new(kv: kv::Store, cluster: Cidr, prefix: u8) -> Result<Self, String> {
        check_node_prefix(cluster, prefix)?;
        Ok(Subnets {
            kv,
            cluster,
            prefix,
            what: "container subnet",
        })
    }

    /// Allocates single addresses of `range` in `kv` (sets' virtual IPs), owned by
    /// `vip=<set>` (no node name holds `=`), so that no owner is ever mistaken for a node. The range must not
    /// overlap `cluster` (the node subnets).
    pub fn addresses(kv: kv::Store, range: Cidr, cluster: Cidr) -> Result<Self, String> {
        check_vip_range(range, cluster)?;
        Ok(Subnets {
            kv,
            cluster: range,
            prefix: 32,
            what: "virtual IP",
        })
    }

    /// The owner a set's virtual IP is claimed for.
    pub fn vip_owner(set: &str) -> String {
        format!("vip={set}")
    }

    /// The address part of a block (`10.68.0.5/32` -> `10.68.0.5`).
    pub fn address(block: &str) -> &str {
        block.split_once('/').map_or(block, |(a, _)| a)
    }

    /// The subnet of `node`, allocating one if it has none.
    pub async fn ensure(&self, node: &str) -> Result<String, ServerError> {
        let node_key = names::node_subnet_key(node);
        if let Some(v) = self.kv.get(&node_key).await.map_err(internal)? {
            let s = String::from_utf8_lossy(&v).to_string();
            if !s.is_empty() {
                return Ok(s);
            }
        }
        let mut taken = HashSet::new();
        let mut mine = None;
        for (cidr, owner) in self.claims().await? {
            if owner == node && mine.is_none() {
                mine = Some(cidr);
            }
            taken.insert(cidr);
        }
        if self.prefix == 32 {
            // Single addresses: not the range's network address.
            taken.insert(Cidr {
                base: self.cluster.base,
                len: 32,
            });
        }
        // A claim without its node key: an earlier attempt stopped half-way.
        let chosen = match mine {
            Some(c) => c,
            None => loop {
                let Some(c) = allocate(self.cluster, self.prefix, &taken) else {
                    return Err(ServerError::unavailable(format!(
                        "no free {} left in {}: delete unused ones or use a larger range (--cluster-cidr, --vip-cidr)",
                        self.what, self.cluster
                    )));
                };
                match self
                    .kv
                    .create(
                        &names::subnet_claim_key(&c.to_string()),
                        node.to_string().into(),
                    )
                    .await
                {
                    Ok(_) => break c,
                    Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                        taken.insert(c);
                    }
                    Err(e) => return Err(internal(e)),
                }
            },
        };
        let subnet = chosen.to_string();
        // The owner's key is created, not overwritten: servers that raced for the same
        // owner each won a different claim, and only one may stand; the others give theirs
        // back and take the winner's.
        match self.kv.create(&node_key, subnet.clone().into()).await {
            Ok(_) => {}
            Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {
                let theirs = self
                    .kv
                    .get(&node_key)
                    .await
                    .map_err(internal)?
                    .map(|v| String::from_utf8_lossy(&v).to_string())
                    .unwrap_or_default();
                if theirs.is_empty() {
                    self.kv
                        .put(&node_key, subnet.clone().into())
                        .await
                        .map_err(internal)?;
                } else {
                    if theirs != subnet {
                        self.kv
                            .delete(names::subnet_claim_key(&subnet))
                            .await
                            .map_err(internal)?;
                    }
                    return Ok(theirs);
                }
            }
            Err(e) => return Err(internal(e)),
        }
        tracing::info!(owner = %node, %subnet, what = self.what, "allocated");
        Ok(subnet)
    }

    /// Frees every subnet held by `node`.
    pub async fn release(&self, node: &str) -> Result<(), ServerError> {
        for (cidr, owner) in self.claims().await? {
            if owner == node {
                self.kv
                    .delete(names::subnet_claim_key(&cidr.to_string()))
                    .await
                    .map_err(internal)?;
            }
        }
        self.kv
            .delete(names::node_subnet_key(node))
            .await
            .map_err(internal)?;
        Ok(())
    }

    /// The owners of the claims in this allocator's range.
    pub async fn owners(&self) -> Result<Vec<String>, ServerError> {
        let range = self.cluster;
        Ok(self
            .claims()
            .await?
            .into_iter()
            .filter(|(c, _)| c.base & mask(range.len) == range.base)
            .map(|(_, owner)| owner)
            .collect())
    }

    /// Every claimed subnet with its owner.
    async fn claims(&self) -> Result<Vec<(Cidr, String)>, ServerError> {
        let keys: Vec<String> = self
            .kv
            .keys()
            .await
            .map_err(internal)?
            .try_collect()
            .await
            .map_err(internal)?;
        let mut out = Vec::new();
        for key in keys {
            let Some(cidr) = parse_claim_key(&key) else {
                continue;
            };
            if let Some(v) = self.kv.get(&key).await.map_err(internal)? {
                out.push((cidr, String::from_utf8_lossy(&v).to_string()));
            }
        }
        Ok(out)
    }
}

/// Whether node subnets of `/prefix` fit in `cluster` (checked before anything starts).
pub fn check_node_prefix(cluster: Cidr, prefix: u8) -> Result<(), String> {
    if cluster.blocks(prefix) == 0 || prefix > 30 {
        return Err(format!(
            "node subnets of /{prefix} do not fit in the cluster CIDR {cluster}: use a prefix between {} and 30",
            cluster.len
        ));
    }
    Ok(())
}

/// Whether `range` can hold sets' virtual IPs beside node subnets of `cluster`.
pub fn check_vip_range(range: Cidr, cluster: Cidr) -> Result<(), String> {
    let overlap = range.base & mask(range.len.min(cluster.len))
        == cluster.base & mask(range.len.min(cluster.len));
    if overlap {
        return Err(format!(
            "the virtual IP range {range} overlaps the cluster CIDR {cluster}: choose another --vip-cidr"
        ));
    }
    if range.len > 30 {
        return Err(format!(
            "the virtual IP range {range} is too small: use a prefix of 30 or less"
        ));
    }
    Ok(())
}

fn internal(e: impl Into<BoxError>) -> ServerError {
    ServerError::failed("subnet store", e)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Servers run the set controller side by side: two allocators on their own
    /// connections, asked at once for the same owners, end with one address per owner.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn racing_servers_leave_one_claim_per_owner() {
        let nats = voiyd_testkit::nats::TestNats::start().await;
        let mut stores = Vec::new();
        for _ in 0..2 {
            let js = async_nats::jetstream::new(async_nats::connect(nats.url()).await.unwrap());
            let kv = js
                .create_key_value(kv::Config {
                    bucket: names::BUCKET_SUBNETS.to_string(),
                    history: 1,
                    ..Default::default()
                })
                .await
                .unwrap();
            let range: Cidr = "10.68.0.0/24".parse().unwrap();
            let cluster: Cidr = "10.69.0.0/16".parse().unwrap();
            stores.push(std::sync::Arc::new(
                Subnets::addresses(kv, range, cluster).unwrap(),
            ));
        }
        for round in 0..20 {
            let owner = Subnets::vip_owner(&format!("set{round}"));
            let calls: Vec<_> = (0..6)
                .map(|i| {
                    let (store, owner) = (stores[i % 2].clone(), owner.clone());
                    tokio::spawn(async move { store.ensure(&owner).await.unwrap() })
                })
                .collect();
            let mut got = HashSet::new();
            for c in calls {
                got.insert(c.await.unwrap());
            }
            assert_eq!(got.len(), 1, "{owner}: {got:?}");
            let claims: Vec<Cidr> = stores[0]
                .claims()
                .await
                .unwrap()
                .into_iter()
                .filter(|(_, o)| *o == owner)
                .map(|(c, _)| c)
                .collect();
            assert_eq!(claims.len(), 1, "{owner}: {claims:?}");
            assert_eq!(claims[0].to_string(), *got.iter().next().unwrap());
        }
    }

    #[test]
    fn parses_and_shows() {
        let c: Cidr = "10.69.1.7/16".parse().unwrap();
        assert_eq!(c.to_string(), "10.69.0.0/16");
        assert!("10.69.0.0".parse::<Cidr>().is_err());
        assert!("10.69.0.0/33".parse::<Cidr>().is_err());
        assert_eq!(c.blocks(24), 256);
        assert_eq!(c.block(24, 3).unwrap().to_string(), "10.69.3.0/24");
        assert_eq!(c.block(24, 256), None);
        let key = names::subnet_claim_key("10.69.3.0/24");
        assert_eq!(parse_claim_key(&key).unwrap().to_string(), "10.69.3.0/24");
    }

    #[test]
    fn allocates_first_free_and_runs_out() {
        let c: Cidr = "10.0.0.0/23".parse().unwrap();
        let mut taken = HashSet::new();
        let a = allocate(c, 24, &taken).unwrap();
        assert_eq!(a.to_string(), "10.0.0.0/24");
        taken.insert(a);
        let b = allocate(c, 24, &taken).unwrap();
        assert_eq!(b.to_string(), "10.0.1.0/24");
        taken.insert(b);
        assert_eq!(allocate(c, 24, &taken), None);
    }

    proptest! {
        #[test]
        fn allocation_is_inside_and_free(len in 8u8..24, prefix_extra in 0u8..6, taken_idx in proptest::collection::hash_set(0u64..64, 0..20)) {
            let cluster = Cidr { base: 0x0a00_0000 & mask(len), len };
            let prefix = len + prefix_extra;
            let taken: HashSet<Cidr> = taken_idx.iter().filter_map(|&i| cluster.block(prefix, i)).collect();
            match allocate(cluster, prefix, &taken) {
                Some(c) => {
                    prop_assert!(!taken.contains(&c));
                    prop_assert_eq!(c.len, prefix);
                    prop_assert_eq!(c.base & mask(cluster.len), cluster.base);
                }
                None => prop_assert_eq!(taken.len() as u64, cluster.blocks(prefix)),
            }
        }
    }
}

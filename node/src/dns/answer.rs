//! What to answer a query with, decided from the cluster's names alone.

use super::names::Names;
use crate::network::CLUSTER_DOMAIN;
use std::net::Ipv4Addr;

/// The decision for one question.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A cluster name: these addresses (A).
    Addresses(Vec<Ipv4Addr>),
    /// A cluster name asked for another type (AAAA, MX...): no records, no error.
    NoData,
    /// Under the cluster domain but no such name.
    NoSuchName,
    /// Not ours: ask the upstream resolvers.
    Forward,
}

/// Whether a query type asks for IPv4 addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wants {
    /// A.
    V4,
    /// Anything else.
    Other,
}

/// Decides for `qname` (as asked, any case, with or without the final dot): `NAME.voiyd`
/// is ours, found or not; a bare `NAME` is ours when known and forwarded otherwise (a
/// host's search domains may know it); anything else is forwarded.
pub fn decide(qname: &str, wants: Wants, names: &Names) -> Answer {
    let name = qname.trim_end_matches('.').to_ascii_lowercase();
    let (label, in_domain) = match name.strip_suffix(CLUSTER_DOMAIN) {
        Some("") => return no_data_or(wants, Vec::new()),
        Some(rest) if rest.ends_with('.') => (rest.trim_end_matches('.').to_string(), true),
        _ => (name.clone(), false),
    };
    if label.contains('.') || label.is_empty() {
        return if in_domain {
            Answer::NoSuchName
        } else {
            Answer::Forward
        };
    }
    match names.lookup(&label) {
        Some(ips) => no_data_or(wants, ips),
        None if in_domain => Answer::NoSuchName,
        None => Answer::Forward,
    }
}

fn no_data_or(wants: Wants, ips: Vec<Ipv4Addr>) -> Answer {
    match wants {
        Wants::V4 if !ips.is_empty() => Answer::Addresses(ips),
        _ => Answer::NoData,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use voiyd_nats::names::NameKind;

    fn names() -> Names {
        let mut n = Names::default();
        n.set(NameKind::Task, "db", vec![Ipv4Addr::new(10, 69, 1, 5)]);
        n.set(
            NameKind::Set,
            "web",
            vec![Ipv4Addr::new(10, 69, 1, 7), Ipv4Addr::new(10, 69, 2, 9)],
        );
        n.set(NameKind::Task, "web", vec![Ipv4Addr::new(10, 69, 9, 9)]);
        n
    }

    #[test]
    fn cluster_names_with_and_without_the_domain() {
        let n = names();
        let db = Answer::Addresses(vec![Ipv4Addr::new(10, 69, 1, 5)]);
        assert_eq!(decide("db", Wants::V4, &n), db);
        assert_eq!(decide("DB.voiyd.", Wants::V4, &n), db);
        assert_eq!(decide("db.voiyd", Wants::Other, &n), Answer::NoData);
        // A set's name wins over a task of the same name.
        assert_eq!(
            decide("web.voiyd", Wants::V4, &n),
            Answer::Addresses(vec![
                Ipv4Addr::new(10, 69, 1, 7),
                Ipv4Addr::new(10, 69, 2, 9)
            ])
        );
    }

    #[test]
    fn unknown_names_are_forwarded_unless_in_the_domain() {
        let n = names();
        assert_eq!(decide("cache.voiyd", Wants::V4, &n), Answer::NoSuchName);
        assert_eq!(decide("a.b.voiyd", Wants::V4, &n), Answer::NoSuchName);
        assert_eq!(decide("cache", Wants::V4, &n), Answer::Forward);
        assert_eq!(decide("example.com.", Wants::V4, &n), Answer::Forward);
        assert_eq!(decide("db.example.com", Wants::V4, &n), Answer::Forward);
        assert_eq!(decide("notvoiyd", Wants::V4, &n), Answer::Forward);
        assert_eq!(decide("voiyd.", Wants::V4, &n), Answer::NoData);
    }
}

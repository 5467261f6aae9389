//! The node's DNS server: UDP and TCP on the bridge's gateway address, port 53.
//!
//! Sockets are bound with `IP_FREEBIND`: the bridge takes its gateway address only
//! when the first task is attached, and the server must be there before that task's
//! first query. Cluster names are answered from [`super::names`]; everything else is
//! relayed byte for byte to the first upstream resolver that answers.

use super::answer::{decide, Answer, Wants};
use super::names::{Names, SharedNames};
use super::TTL;
use hickory_proto::op::{Message, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};
use std::net::{SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

/// How long an upstream resolver gets to answer before the next is asked.
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a TCP client may stay silent before its connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Largest UDP answer to a client that did not say it takes more (RFC 1035).
const UDP_CLASSIC: usize = 512;

/// What the server needs.
#[derive(Clone)]
pub struct DnsConfig {
    /// The node's network, which knows the container subnet once the server assigned it.
    pub network: Arc<crate::network::Network>,
    /// Resolvers for names that are not the cluster's.
    pub upstreams: Vec<SocketAddr>,
}

/// Serves cluster DNS for the life of the node: waits for the node's subnet, then
/// answers on its gateway address.
pub async fn run(cfg: DnsConfig, names: SharedNames) {
    // As soon as the subnet is known: its first task may ask at once.
    let subnet = cfg.network.wait_subnet().await;
    let Some(ip) = crate::network::gateway(&subnet) else {
        tracing::error!(%subnet, "no gateway address in the node's subnet: no cluster DNS");
        return;
    };
    let addr = SocketAddrV4::new(ip, 53);
    let upstreams = Arc::new(cfg.upstreams);
    let (udp, tcp) = match (bind_udp(addr), bind_tcp(addr)) {
        (Ok(u), Ok(t)) => (u, t),
        (Err(e), _) | (_, Err(e)) => {
            // Tasks then get the host's resolvers, as with --cluster-dns false.
            cfg.network.no_cluster_dns();
            tracing::error!(%addr, error = %e, "cannot serve cluster DNS (another DNS server on port 53?): tasks get the host's resolvers and no cluster names");
            return;
        }
    };
    tracing::info!(%addr, upstreams = ?upstreams, "serving cluster DNS");
    let tcp_task = tokio::spawn(serve_tcp(tcp, names.clone(), upstreams.clone()));
    serve_udp(Arc::new(udp), names, upstreams).await;
    tcp_task.abort();
}

fn bind_udp(addr: SocketAddrV4) -> std::io::Result<UdpSocket> {
    let fd = freebind_socket(rustix::net::SocketType::DGRAM, addr)?;
    UdpSocket::from_std(std::net::UdpSocket::from(fd))
}

fn bind_tcp(addr: SocketAddrV4) -> std::io::Result<TcpListener> {
    let fd = freebind_socket(rustix::net::SocketType::STREAM, addr)?;
    rustix::net::listen(&fd, 128)?;
    TcpListener::from_std(std::net::TcpListener::from(fd))
}

/// A non-blocking socket bound to `addr`, which need not be local yet.
fn freebind_socket(
    kind: rustix::net::SocketType,
    addr: SocketAddrV4,
) -> std::io::Result<std::os::fd::OwnedFd> {
    use rustix::net::{sockopt, AddressFamily, SocketFlags};
    let fd = rustix::net::socket_with(
        AddressFamily::INET,
        kind,
        SocketFlags::NONBLOCK | SocketFlags::CLOEXEC,
        None,
    )?;
    sockopt::set_ip_freebind(&fd, true)?;
    // A restarted agent takes its TCP port back at once; UDP needs no help, and two
    // live servers sharing one address is what must fail.
    if kind == rustix::net::SocketType::STREAM {
        sockopt::set_socket_reuseaddr(&fd, true)?;
    }
    rustix::net::bind(&fd, &addr)?;
    Ok(fd)
}

impl std::fmt::Debug for DnsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DnsConfig")
            .field("upstreams", &self.upstreams)
            .finish_non_exhaustive()
    }
}

async fn serve_udp(sock: Arc<UdpSocket>, names: SharedNames, upstreams: Arc<Vec<SocketAddr>>) {
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, peer) = match sock.recv_from(&mut buf).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "DNS receive failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let query = buf[..n].to_vec();
        let (sock, names, upstreams) = (sock.clone(), names.clone(), upstreams.clone());
        tokio::spawn(async move {
            if let Some(r) = reply(&query, &names, &upstreams, Transport::Udp).await {
                let _ = sock.send_to(&r, peer).await;
            }
        });
    }
}

async fn serve_tcp(listener: TcpListener, names: SharedNames, upstreams: Arc<Vec<SocketAddr>>) {
    loop {
        let Ok((conn, _)) = listener.accept().await else {
            tokio::time::sleep(Duration::from_millis(100)).await;
            continue;
        };
        let (names, upstreams) = (names.clone(), upstreams.clone());
        tokio::spawn(async move {
            let _ = tcp_connection(conn, names, upstreams).await;
        });
    }
}

async fn tcp_connection(
    mut conn: TcpStream,
    names: SharedNames,
    upstreams: Arc<Vec<SocketAddr>>,
) -> std::io::Result<()> {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, read_framed(&mut conn)).await {
            Ok(Ok(q)) => q,
            _ => return Ok(()),
        };
        match reply(&query, &names, &upstreams, Transport::Tcp).await {
            Some(r) => write_framed(&mut conn, &r).await?,
            None => return Ok(()),
        }
    }
}

/// How a query came, and so how it is relayed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Tcp,
}

/// The reply to one query: the cluster's answer, else the upstreams', else SERVFAIL
/// (`None`: the query does not even parse).
async fn reply(
    query: &[u8],
    names: &SharedNames,
    upstreams: &[SocketAddr],
    how: Transport,
) -> Option<Vec<u8>> {
    let local = local_reply(
        query,
        &names.read().expect("names lock"),
        how == Transport::Udp,
    );
    if local.is_some() {
        return local;
    }
    let relayed = match how {
        Transport::Udp => forward_udp(query, upstreams).await,
        Transport::Tcp => forward_tcp(query, upstreams).await,
    };
    relayed.or_else(|| failure(query))
}

async fn read_framed(conn: &mut TcpStream) -> std::io::Result<Vec<u8>> {
    let len = conn.read_u16().await?;
    let mut buf = vec![0u8; usize::from(len)];
    conn.read_exact(&mut buf).await?;
    Ok(buf)
}

async fn write_framed(conn: &mut TcpStream, msg: &[u8]) -> std::io::Result<()> {
    let len = u16::try_from(msg.len()).map_err(std::io::Error::other)?;
    let mut out = Vec::with_capacity(msg.len() + 2);
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(msg);
    conn.write_all(&out).await
}

/// The answer to `query` when it is the cluster's to give (`None`: forward it). Over
/// UDP, an answer too big for the client is truncated, so that it asks again over TCP.
pub fn local_reply(query: &[u8], names: &Names, udp: bool) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let q = msg.queries.first()?.clone();
    let wants = if q.query_type() == RecordType::A {
        Wants::V4
    } else {
        Wants::Other
    };
    let answer = decide(&q.name().to_ascii(), wants, names);
    if answer == Answer::Forward {
        return None;
    }
    let mut r = Message::response(msg.metadata.id, msg.metadata.op_code);
    r.metadata.recursion_desired = msg.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.authoritative = true;
    r.add_query(q.clone());
    match answer {
        Answer::Addresses(ips) => {
            for ip in ips {
                r.add_answer(Record::from_rdata(q.name().clone(), TTL, RData::A(A(ip))));
            }
        }
        Answer::NoSuchName => r.metadata.response_code = ResponseCode::NXDomain,
        Answer::NoData | Answer::Forward => {}
    }
    let bytes = r.to_vec().ok()?;
    let limit = msg.edns.as_ref().map_or(UDP_CLASSIC, |e| {
        usize::from(e.max_payload()).max(UDP_CLASSIC)
    });
    if udp && bytes.len() > limit {
        return r.truncate().to_vec().ok();
    }
    Some(bytes)
}

/// SERVFAIL for a query no upstream answered (`None` when it does not even parse).
fn failure(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut r = Message::error_msg(
        msg.metadata.id,
        msg.metadata.op_code,
        ResponseCode::ServFail,
    );
    r.metadata.recursion_desired = msg.metadata.recursion_desired;
    r.add_queries(msg.queries.iter().cloned());
    r.to_vec().ok()
}

/// Relays a query to each upstream in turn until one answers it.
async fn forward_udp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let local: SocketAddr = if up.is_ipv4() {
            ([0, 0, 0, 0], 0).into()
        } else {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        };
        let Ok(sock) = UdpSocket::bind(local).await else {
            continue;
        };
        if sock.connect(up).await.is_err() || sock.send(query).await.is_err() {
            continue;
        }
        let mut buf = vec![0u8; 65535];
        // The first datagram with the query's id is the answer.
        let got = tokio::time::timeout(UPSTREAM_TIMEOUT, async {
            loop {
                let n = sock.recv(&mut buf).await.ok()?;
                if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
                    return Some(buf[..n].to_vec());
                }
            }
        })
        .await;
        if let Ok(Some(reply)) = got {
            return Some(reply);
        }
        tracing::debug!(upstream = %up, "upstream resolver did not answer");
    }
    None
}

/// Relays a query over TCP to each upstream in turn until one answers it.
async fn forward_tcp(query: &[u8], upstreams: &[SocketAddr]) -> Option<Vec<u8>> {
    for up in upstreams {
        let attempt = async {
            let mut conn = TcpStream::connect(up).await?;
            write_framed(&mut conn, query).await?;
            read_framed(&mut conn).await
        };
        if let Ok(Ok(reply)) = tokio::time::timeout(UPSTREAM_TIMEOUT, attempt).await {
            return Some(reply);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::net::Ipv4Addr;
    use std::str::FromStr;
    use voiyd_nats::names::NameKind;

    fn query(name: &str, t: RecordType) -> Vec<u8> {
        let mut m = Message::query();
        m.metadata.recursion_desired = true;
        m.add_query(Query::query(Name::from_str(name).unwrap(), t));
        m.to_vec().unwrap()
    }

    #[test]
    fn answers_cluster_names_and_leaves_the_rest() {
        let mut names = Names::default();
        names.set(NameKind::Task, "db", vec![Ipv4Addr::new(10, 69, 1, 5)]);
        let r = Message::from_vec(
            &local_reply(&query("db.voiyd.", RecordType::A), &names, true).unwrap(),
        )
        .unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert_eq!(r.answers.len(), 1);
        assert_eq!(r.answers[0].data, RData::A(A(Ipv4Addr::new(10, 69, 1, 5))));
        let r = Message::from_vec(
            &local_reply(&query("nope.voiyd.", RecordType::A), &names, true).unwrap(),
        )
        .unwrap();
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
        let r =
            Message::from_vec(&local_reply(&query("db.", RecordType::AAAA), &names, true).unwrap())
                .unwrap();
        assert_eq!(
            (r.metadata.response_code, r.answers.len()),
            (ResponseCode::NoError, 0)
        );
        assert!(local_reply(&query("example.com.", RecordType::A), &names, true).is_none());
    }

    #[test]
    fn big_udp_answers_are_truncated() {
        let mut names = Names::default();
        let ips = (1..=60).map(|i| Ipv4Addr::new(10, 69, 1, i)).collect();
        names.set(NameKind::Set, "web", ips);
        let q = query("web.voiyd.", RecordType::A);
        let udp = Message::from_vec(&local_reply(&q, &names, true).unwrap()).unwrap();
        assert!(udp.metadata.truncation);
        let tcp = Message::from_vec(&local_reply(&q, &names, false).unwrap()).unwrap();
        assert_eq!(tcp.answers.len(), 60);
    }
}

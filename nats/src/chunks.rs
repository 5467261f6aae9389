//! Lists larger than one NATS message: the reply to a `list` request is a sequence of
//! messages ("chunks") sent to the request's reply subject.
//!
//! Every list reply is a protobuf message whose only field is `repeated items = 1`, so
//! any run of encoded items is itself a valid, smaller list. A server splits a list at
//! item boundaries into chunks of at most [`chunk_limit`] bytes; each chunk carries the
//! header `Voiyd-Chunk: i/n` (1-based). A client that can collect chunks says so with the
//! request header `Voiyd-Accept-Chunks: 1`; to one that does not, a list that needs more
//! than one chunk is refused as too large instead of being cut short silently. A list
//! that fits one message is a plain reply, which every client reads.

use bytes::{Bytes, BytesMut};
use prost::Message;

/// Request header: the client collects chunked replies.
pub const ACCEPT_CHUNKS: &str = "Voiyd-Accept-Chunks";
/// Reply header: `i/n`, this is chunk `i` of `n`.
pub const CHUNK: &str = "Voiyd-Chunk";

/// The largest chunk a server sends through a NATS server whose max payload is
/// `max_payload`: half of it (headers and slack), at most 512 KiB so that the first
/// rows reach a client early.
pub fn chunk_limit(max_payload: usize) -> usize {
    (max_payload / 2).clamp(16 * 1024, 512 * 1024)
}

/// Encodes `items` as field 1 of a list message, split into chunks of at most `limit`
/// bytes (an item bigger than that gets a chunk of its own). Always at least one chunk.
pub fn split<M: Message>(items: &[M], limit: usize) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut buf = BytesMut::new();
    for item in items {
        let len = prost::encoding::message::encoded_len(1, item);
        if !buf.is_empty() && buf.len() + len > limit {
            chunks.push(buf.split().freeze());
        }
        prost::encoding::message::encode(1, item, &mut buf);
    }
    if !buf.is_empty() || chunks.is_empty() {
        chunks.push(buf.freeze());
    }
    chunks
}

/// The `Voiyd-Chunk` value of chunk `index` (0-based) of `count`.
pub fn header_value(index: usize, count: usize) -> String {
    format!("{}/{count}", index + 1)
}

/// Parses a `Voiyd-Chunk` value into (0-based index, count).
pub fn parse_header(value: &str) -> Option<(usize, usize)> {
    let (i, n) = value.split_once('/')?;
    let (i, n): (usize, usize) = (i.trim().parse().ok()?, n.trim().parse().ok()?);
    (i >= 1 && i <= n).then(|| (i - 1, n))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Clone, PartialEq, prost::Message)]
    struct Item {
        #[prost(string, tag = "1")]
        name: String,
    }
    #[derive(Clone, PartialEq, prost::Message)]
    struct List {
        #[prost(message, repeated, tag = "1")]
        items: Vec<Item>,
    }

    fn items(n: usize) -> Vec<Item> {
        (0..n)
            .map(|i| Item {
                name: format!("item-{i:05}"),
            })
            .collect()
    }

    #[test]
    fn chunks_are_lists_whose_concatenation_is_the_whole_list() {
        let all = items(1000);
        let whole = List { items: all.clone() }.encode_to_vec();
        let chunks = split(&all, 1024);
        assert!(chunks.len() > 10, "{}", chunks.len());
        let mut joined = Vec::new();
        let mut decoded = Vec::new();
        for c in &chunks {
            assert!(c.len() <= 1024, "{}", c.len());
            joined.extend_from_slice(c);
            decoded.extend(List::decode(c.clone()).unwrap().items);
        }
        assert_eq!(joined, whole);
        assert_eq!(decoded, all);
    }

    #[test]
    fn empty_and_oversized() {
        let empty = split::<Item>(&[], 1024);
        assert_eq!(empty.len(), 1);
        assert!(List::decode(empty[0].clone()).unwrap().items.is_empty());
        let big = vec![Item {
            name: "x".repeat(5000),
        }];
        let chunks = split(&big, 1024);
        assert_eq!(chunks.len(), 1);
        assert_eq!(List::decode(chunks[0].clone()).unwrap().items, big);
    }

    #[test]
    fn headers() {
        assert_eq!(header_value(0, 3), "1/3");
        assert_eq!(parse_header("1/3"), Some((0, 3)));
        assert_eq!(parse_header("3/3"), Some((2, 3)));
        assert_eq!(parse_header("0/3"), None);
        assert_eq!(parse_header("4/3"), None);
        assert_eq!(parse_header("x"), None);
        assert_eq!(chunk_limit(1024 * 1024), 512 * 1024);
        assert_eq!(chunk_limit(64 * 1024), 32 * 1024);
    }
}

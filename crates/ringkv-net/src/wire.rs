//! The wire protocol: one versioned enum of requests and one of replies,
//! postcard-encoded in length-prefixed frames, one request and one reply per
//! QUIC stream.
//!
//! ```text
//! | len: u32 BE | version: u16 BE | postcard body: len - 2 bytes |
//! ```
//!
//! The version sits outside the postcard body so that a node can tell a
//! client from the future ("unsupported protocol version") from garbage
//! ("malformed frame") before trying to decode anything. Enum variants are
//! only ever appended, and any change of shape, an appended variant
//! included, raises the protocol version: there is no negotiation, so a peer
//! on another version gets a clear refusal rather than a decoding error.

use std::net::SocketAddr;

use bytes::Bytes;
use ringkv_core::scan::Listed;
use ringkv_core::update::{Answer, Update};
use ringkv_core::{Consistency, Deadline, Entry, Epoch, KeyTtl, KvError, Limits, Timestamp, Version, encoded_len};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Deserializer, Serialize};

use crate::NetError;

/// Raised whenever a message changes shape. 2: repair digests, partition
/// streams, transfer status, leave and fault injection. 3: batched replica
/// requests. 4: batched reads, deferred replies, read counts in the status,
/// crash and clock-skew injection, client sessions. 5: request deadlines (in
/// sessions, and the error refusing a late request), the touch of
/// versions, the clock request of `clear`, and repair's key/version lists
/// paged after a cursor. 6: the gossip keyring and refused datagrams in
/// the status. 7: `KvError::Forbidden`, the refusal naming the role a
/// request needs. 8: the memory bound in the status, and
/// `KvError::OutOfMemory`. 9: read-modify-writes at the leading replica
/// (`ReplicaRequest::Update`, `KvError::Update`). 10: scans
/// (`ReplicaRequest::Keys`), and the updates behind `RENAME`, `COPY` and
/// `MSETNX`. 11: the join a member claims (`MemberClaim::join`). 12: hints
/// marked as such in `ReplicaRequest::Deliver`. 13: `Request::Time`, the
/// members' clock check.
pub const PROTOCOL_VERSION: u16 = 13;
pub const FRAME_HEADER_LEN: usize = 6;

/// The largest frame a node accepts from another node (a node certificate),
/// in either direction: a maximal key and value under the configuration's
/// caps, plus room for the message around them. Clients get the configured
/// limit instead. Nodes trust each other, and what one node stores (under
/// larger limits, or before this node's limits were lowered) must still
/// move between them: refusing it would stall a transfer, repair or handoff
/// for good.
pub const MAX_PEER_FRAME_BYTES: usize = Limits::KEY_CAP + Limits::VALUE_CAP + 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    Ping,
    Put {
        key: Bytes,
        value: Bytes,
        ttl_ms: Option<u64>,
        consistency: Consistency,
    },
    Get {
        key: Bytes,
        consistency: Consistency,
    },
    Delete {
        key: Bytes,
        consistency: Consistency,
    },
    Exists {
        key: Bytes,
        consistency: Consistency,
    },
    Ttl {
        key: Bytes,
        consistency: Consistency,
    },
    Expire {
        key: Bytes,
        ttl_ms: u64,
        consistency: Consistency,
    },
    Persist {
        key: Bytes,
        consistency: Consistency,
    },
    Clear,
    /// Replica-level operations between nodes; refused unless the caller
    /// presents the node certificate of a current member.
    Replica(ReplicaRequest),
    /// The membership and ring parameters, so that clients can route.
    Members,
    /// This node's own state, for `ringkv status`.
    Status,
    /// Where a key lives and what each of its replicas holds.
    Explain {
        key: Bytes,
    },
    /// Hand this node's partitions off and exit. Answered once leaving has
    /// begun. Needs an operator certificate.
    Leave,
    /// Fault injection, refused unless the node runs with
    /// `fault_injection = true`: drop all traffic (replica requests and
    /// gossip, both directions) to and from these addresses. An empty list
    /// heals.
    Fault {
        blocked: Vec<SocketAddr>,
    },
    /// Fault injection, refused unless the node runs with
    /// `fault_injection = true`: this partition's actor fails the way a bug
    /// in it would, with a panic.
    Crash {
        partition: u16,
    },
    /// Fault injection, refused unless the node runs with
    /// `fault_injection = true`: from now on the node's clock reads this
    /// many milliseconds off the true time (0 heals).
    Skew {
        offset_ms: i64,
    },
    /// A client request carrying the highest clock reading the client has
    /// been told (its session). The coordinator absorbs it into its hybrid
    /// logical clock before it stamps anything, so a write always orders
    /// after everything the client saw before it, however slow the
    /// coordinator's clock. Answered with `Reply::Session`. Sessions do not
    /// nest and do not wrap replica requests.
    ///
    /// `deadline` is when the client gives up on this attempt: a node whose
    /// clock shows it passed refuses the request with
    /// `KvError::DeadlineExpired` instead of starting it, so a request that
    /// sat in a stopped node's buffers while the client went elsewhere is
    /// never applied after the fact.
    Session {
        seen: Timestamp,
        deadline: Option<Deadline>,
        #[serde(deserialize_with = "nested")]
        request: Box<Request>,
    },
    /// What this node gossips of itself (its generation, address, status,
    /// epoch, partition count, fences), asked over mutual TLS by a member
    /// that checks the certificate names the node id before it believes
    /// the same from gossip (ARCHITECTURE.md, *Membership bound to
    /// certificates*).
    Claim,
    /// This node's wall clock: members ask each other, so that a node whose
    /// clock strays from the majority's stops serving (`clock_check.rs` in
    /// ringkv-node).
    Time,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ReplicaRequest {
    /// Merge an entry into a partition. `hint_for` names the preferred
    /// replica this node stands in for: the entry is kept as a hint for it
    /// instead of in this node's shard. No deadline: the coordinator keeps
    /// the client's (it stamps in time or not at all), and an entry stamped
    /// in time is harmless to apply late, since its version orders it.
    Apply {
        partition: u16,
        key: Bytes,
        entry: Entry,
        condition: Option<Version>,
        hint_for: Option<String>,
    },
    Read {
        partition: u16,
        key: Bytes,
    },
    Truncate {
        epoch: Epoch,
    },
    /// Entries merged in one batch: hints handed back to their owner,
    /// repair, and partition transfers. `hinted` marks hints: the owner
    /// drops those older than its tombstone grace, since it may have purged
    /// the tombstone that overruled them after the holder last checked
    /// their age (simulator seed 265, third search).
    Deliver {
        entries: Vec<(u16, Bytes, Entry)>,
        hinted: bool,
    },
    /// A partition's repair digest: with `branches` unset, the hash of each
    /// group of leaves; otherwise the leaves of those groups, in order. If
    /// `root` is the caller's root and it matches, the answer is empty: a
    /// partition in sync costs a few bytes.
    Digest {
        partition: u16,
        branches: Option<Vec<u16>>,
        root: Option<u64>,
    },
    /// The key and version of each entry of a partition that falls into
    /// the given digest leaves, in the shard's order after the key `after`:
    /// repair compares these before it moves any value. The answer stops
    /// where a batch's bytes are full; the caller asks again after the last
    /// key it received until an answer comes back empty.
    Versions {
        partition: u16,
        leaves: Vec<u16>,
        after: Option<Bytes>,
    },
    /// The stored entries (dead or alive) of these keys of a partition, in
    /// the order asked, leaving out keys not stored. The answer stops where
    /// a batch's bytes are full; the caller asks again for the keys after
    /// the last one answered.
    ReadMany {
        partition: u16,
        keys: Vec<Bytes>,
    },
    /// Up to `limit` entries of a partition after the key `after`, in the
    /// shard's order, and no more than a batch's bytes: resumable partition
    /// transfer.
    Stream {
        partition: u16,
        after: Option<Bytes>,
        limit: u32,
    },
    /// Several requests on one stream, run concurrently; answered with
    /// `Reply::Batch`, one response per request in the same order. Batches
    /// do not nest.
    Batch(#[serde(deserialize_with = "nested")] Vec<ReplicaRequest>),
    /// The node's hybrid logical clock, advanced: `clear` orders its
    /// epoch after every member's answer, so after every write any of them
    /// stamped or acknowledged before.
    Clock,
    /// A read-modify-write, sent to the key's leading replica (its first
    /// replica that is up), which runs it in the partition's actor and
    /// replicates the result; answered with `Reply::Updated`. Run where it
    /// lands, never forwarded again.
    Update {
        partition: u16,
        key: Bytes,
        update: Update,
    },
    /// A page of a partition's keys for a scan: up to `limit` keys whose
    /// hash is `from` or more, in the shard's order, with their versions
    /// and liveness (`ringkv_core::scan`); answered with `Reply::Keys`,
    /// whose `full` says whether the page stopped at the limit.
    Keys {
        partition: u16,
        from: u64,
        limit: u32,
    },
}

impl Request {
    /// A client's data operation (not a session around one): what any
    /// certificate may send, and what a node serves only from a standing
    /// it can trust.
    pub fn is_data(&self) -> bool {
        matches!(
            self,
            Request::Put { .. }
                | Request::Get { .. }
                | Request::Delete { .. }
                | Request::Exists { .. }
                | Request::Ttl { .. }
                | Request::Expire { .. }
                | Request::Persist { .. }
                | Request::Clear
        )
    }

    /// Name for logs and metrics.
    pub fn kind(&self) -> &'static str {
        match self {
            Request::Ping => "ping",
            Request::Put { .. } => "put",
            Request::Get { .. } => "get",
            Request::Delete { .. } => "delete",
            Request::Exists { .. } => "exists",
            Request::Ttl { .. } => "ttl",
            Request::Expire { .. } => "expire",
            Request::Persist { .. } => "persist",
            Request::Clear => "clear",
            Request::Replica(ReplicaRequest::Apply { .. }) => "replica-apply",
            Request::Replica(ReplicaRequest::Read { .. }) => "replica-read",
            Request::Replica(ReplicaRequest::Truncate { .. }) => "replica-truncate",
            Request::Replica(ReplicaRequest::Deliver { .. }) => "replica-deliver",
            Request::Replica(ReplicaRequest::Digest { .. }) => "replica-digest",
            Request::Replica(ReplicaRequest::Versions { .. }) => "replica-versions",
            Request::Replica(ReplicaRequest::ReadMany { .. }) => "replica-read-many",
            Request::Replica(ReplicaRequest::Stream { .. }) => "replica-stream",
            Request::Replica(ReplicaRequest::Batch(_)) => "replica-batch",
            Request::Replica(ReplicaRequest::Clock) => "replica-clock",
            Request::Replica(ReplicaRequest::Update { .. }) => "replica-update",
            Request::Replica(ReplicaRequest::Keys { .. }) => "replica-keys",
            Request::Members => "members",
            Request::Status => "status",
            Request::Explain { .. } => "explain",
            Request::Leave => "leave",
            Request::Fault { .. } => "fault",
            Request::Crash { .. } => "crash",
            Request::Skew { .. } => "skew",
            Request::Claim => "claim",
            Request::Time => "time",
            Request::Session { request, .. } => request.kind(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Reply {
    Pong {
        node_id: String,
        version: String,
    },
    Done,
    Value(Option<Bytes>),
    Flag(bool),
    Ttl(KeyTtl),
    /// A replica applied (or already had) an entry.
    Applied {
        was_live: bool,
    },
    /// A conditional apply found something newer.
    Conflict,
    Entry(Option<Entry>),
    Digest(Vec<u64>),
    Versions(Vec<(Bytes, Version)>),
    Entries(Vec<(Bytes, Entry)>),
    Members(Members),
    Status(Box<NodeStatus>),
    Explain(Explanation),
    Batch(#[serde(deserialize_with = "nested")] Vec<Response>),
    /// In a batch's reply, in place of the answer to a read that did not fit
    /// in the reply's frame: the read was not answered, and the sender asks
    /// again with the read alone, where any answer fits.
    Deferred,
    /// The answer to `Request::Session`: the coordinator's clock after the
    /// request (at or above any version it wrote or read), for the client
    /// to carry forward.
    Session {
        clock: Timestamp,
        #[serde(deserialize_with = "nested")]
        reply: Box<Reply>,
    },
    /// The answer to `ReplicaRequest::Clock`.
    Clock(Timestamp),
    /// The answer to `Request::Claim`: the node's own claim first, then
    /// the claims of the other members it has proven (it vouches for them,
    /// so that a member that is down now is still known by its last proven
    /// state).
    Claim(Vec<MemberClaim>),
    /// The answer to `Request::Time`: the node's wall clock, in ms since the
    /// Unix epoch, read as it answered.
    Time {
        wall_ms: u64,
    },
    /// The answer to `ReplicaRequest::Update`.
    Updated(Answer),
    /// The answer to `ReplicaRequest::Keys`.
    Keys {
        keys: Vec<Listed>,
        full: bool,
    },
}

/// What a clustered node gossips of itself, as it says so over mutual TLS.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberClaim {
    pub node_id: String,
    /// The chitchat generation of this run.
    pub generation: u64,
    /// The QUIC address it advertises.
    pub addr: SocketAddr,
    pub partitions: u16,
    pub status: MemberStatus,
    pub epoch: Epoch,
    /// The members it fences.
    pub fences: Vec<String>,
    /// Wall-clock ms it was last alive before this start (0: none).
    pub alive_before: u64,
    /// Which join of this node id it is in (0: none since it started): a
    /// member fenced while joining stays fenced until it begins a new join.
    pub join: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum MemberStatus {
    /// New to the ring: takes writes for the partitions it is gaining and
    /// pulls their contents, but serves nothing until it has them.
    Joining,
    Serving,
    /// Handing its partitions off before it exits; still serves meanwhile.
    Leaving,
    /// A member restarting with its data: keeps its place in the ring, but
    /// serves nothing until it has learnt the cluster's state.
    Recovering,
    /// Has handed its partitions off and is about to exit.
    Left,
}

impl MemberStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Joining => "joining",
            MemberStatus::Serving => "serving",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Recovering => "recovering",
            MemberStatus::Left => "left",
        }
    }

    pub fn parse(s: &str) -> Option<MemberStatus> {
        match s {
            "joining" => Some(MemberStatus::Joining),
            "serving" => Some(MemberStatus::Serving),
            "leaving" => Some(MemberStatus::Leaving),
            "recovering" => Some(MemberStatus::Recovering),
            "left" => Some(MemberStatus::Left),
            _ => None,
        }
    }

    /// Answers client requests and replica reads.
    pub fn serves(self) -> bool {
        matches!(self, MemberStatus::Serving | MemberStatus::Leaving)
    }

    /// Counts in the ring that places data now (reads, quorums).
    pub fn in_current_ring(self) -> bool {
        matches!(self, MemberStatus::Serving | MemberStatus::Leaving | MemberStatus::Recovering)
    }

    /// Counts in the ring that rebalancing moves towards.
    pub fn in_next_ring(self) -> bool {
        matches!(self, MemberStatus::Serving | MemberStatus::Joining | MemberStatus::Recovering)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberInfo {
    pub node_id: String,
    pub addr: SocketAddr,
    pub status: MemberStatus,
    pub live: bool,
    /// In the ring: live, or dead for less than the grace period.
    pub in_ring: bool,
}

/// Everything a client needs to compute placement exactly as the nodes do.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Members {
    pub cluster_id: String,
    pub partitions: u16,
    pub replication: u8,
    pub vnodes: u32,
    pub members: Vec<MemberInfo>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NodeStatus {
    pub node_id: String,
    pub status: MemberStatus,
    /// Partitions this node is a preferred replica of.
    pub partitions_owned: u32,
    /// Stored entries (including dead markers) and live values.
    pub entries: u64,
    pub values: u64,
    /// Hints held for other nodes, per node.
    pub hints: Vec<(String, u64)>,
    pub hints_dropped: u64,
    pub epoch: Epoch,
    pub repair: RepairStatus,
    pub transfers: TransferStatus,
    pub replication: ReplicationStatus,
    /// A clustered node's gossip keyring and refused datagrams; `None`
    /// standalone.
    pub gossip: Option<GossipStatus>,
    pub memory: MemoryStatus,
    /// The majority's clocks minus this node's, in ms, while the clock
    /// check finds them too far apart (the node then serves nothing).
    pub clock_off_ms: Option<i64>,
}

/// The memory bound as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryStatus {
    /// Bytes the node's shards hold, as the bound counts them.
    pub used: u64,
    /// `maxmemory`; 0 is no limit.
    pub limit: u64,
    pub policy: String,
    /// Keys this node evicted (as the leader of their partition), and
    /// writes it refused for memory, since start.
    pub evictions: u64,
    pub refused: u64,
}

/// Sealed gossip as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct GossipStatus {
    /// The id of the key this node seals gossip with.
    pub primary_key: String,
    /// The ids of the other keys it opens gossip with.
    pub accepted_keys: Vec<String>,
    /// Datagrams refused since start: not sealed under a key of the
    /// keyring, altered, of an unknown format, or another cluster's.
    pub rejected: u64,
    /// Node ids gossiped by key holders but not proven by a certificate
    /// naming them: listed here, never placed in the ring.
    pub unproven: Vec<String>,
}

/// Replica writes and reads this node sent to peers as coordinator, since
/// start.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicationStatus {
    pub writes: Sent,
    pub reads: Sent,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Sent {
    pub items: u64,
    /// The requests (streams) they took; fewer than `items` when batched.
    pub requests: u64,
}

/// Partition transfers of a joining or leaving node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransferStatus {
    /// "joining" or "leaving" while transfers run.
    pub phase: Option<String>,
    pub partitions_done: u32,
    pub partitions_total: u32,
    /// The partition being moved and the peer on the other end.
    pub current: Option<(u16, String)>,
    pub keys_moved: u64,
    pub bytes_moved: u64,
}

/// Anti-entropy as one node sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepairStatus {
    /// Completed passes over every (partition, peer) pair since start.
    pub passes: u64,
    /// Pairs compared in the pass under way, of how many.
    pub progress: Option<(u32, u32)>,
    pub last_pass_ms: Option<u64>,
    /// Keys received or sent because replicas differed, since start.
    pub keys_exchanged: u64,
    /// Digest and entry bytes sent and received, since start.
    pub bytes_exchanged: u64,
    pub last_divergence: Option<Divergence>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Divergence {
    /// Wall-clock milliseconds when it was found.
    pub at_ms: u64,
    pub partition: u16,
    pub peer: String,
    pub keys: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ReplicaView {
    pub node_id: String,
    /// What the replica holds for the key, or why it could not be asked.
    pub entry: Result<Option<Entry>, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Explanation {
    pub partition: u16,
    pub replicas: Vec<ReplicaView>,
}

pub type Response = Result<Reply, KvError>;

/// Bytes of a batch reply's frame besides its responses: the length prefix,
/// the version, the `Ok` and `Batch` tags and the count (a varint of at
/// most five bytes), rounded up.
const BATCH_REPLY_OVERHEAD: usize = 16;

/// Whether a batch may answer with `Reply::Deferred` instead: only a read's
/// entry, the one answer that can be large, and one that costs nothing to
/// ask for again.
fn is_deferrable(response: &Response) -> bool {
    matches!(response, Ok(Reply::Entry(_)))
}

/// Fits a batch's responses into one frame of at most `max_frame` bytes.
/// Entries read are kept in order while they fit and replaced by
/// [`Reply::Deferred`] from the first that does not; every other answer
/// (writes have happened; errors and acknowledgements are a few bytes) is
/// kept.
pub fn fit_batch(responses: Vec<Response>, max_frame: usize) -> Vec<Response> {
    let deferrable: Vec<bool> = responses.iter().map(is_deferrable).collect();
    // A batch of writes has nothing to defer and is not measured at all.
    if !deferrable.contains(&true) {
        return responses;
    }
    let deferred_len = encoded_len(&Ok::<Reply, KvError>(Reply::Deferred));
    let sizes: Vec<usize> = responses.iter().map(encoded_len).collect();
    let fixed: usize = sizes.iter().zip(&deferrable).filter(|(_, d)| !**d).map(|(s, _)| s).sum();
    let reads = deferrable.iter().filter(|d| **d).count();
    // Room for every read's placeholder is set aside first, so deferring a
    // read never pushes the frame over.
    let mut room = max_frame.saturating_sub(BATCH_REPLY_OVERHEAD + fixed + reads * deferred_len);
    let mut full = false;
    responses
        .into_iter()
        .zip(sizes)
        .zip(deferrable)
        .map(|((response, size), deferrable)| {
            if !deferrable {
                return response;
            }
            let extra = size.saturating_sub(deferred_len);
            if full || extra > room {
                full = true;
                return Ok(Reply::Deferred);
            }
            room -= extra;
            response
        })
        .collect()
}

/// Bytes of a frame besides the items of the batch it carries: the length
/// prefix, the version, the tags of the message, and its other fields (a
/// partition, a vector's length), rounded up generously.
const BATCH_ENVELOPE: usize = 256;

/// Encoded bytes beyond which batches are cut even when frames are larger:
/// past this, per-request costs are already negligible, and a smaller page
/// stays well within a replica timeout.
const BATCH_TARGET: usize = 1 << 20;

/// The encoded bytes of items (entries, keys, key/version pairs) one batch
/// may carry to a node that refuses frames over `max_frame`. Batches cut to
/// this with [`ringkv_core::fitting`] always fit, and since `max_frame`
/// leaves 4 KiB beyond a maximal key and value, so does a batch of one
/// maximal entry.
pub fn batch_budget(max_frame: usize) -> usize {
    max_frame.saturating_sub(BATCH_ENVELOPE).min(BATCH_TARGET)
}

/// How deep messages may wrap one another in a frame. Sessions and
/// batches do not nest, so the protocol uses two levels (a session's reply
/// around a batch at most); the limit only has to stop a hostile frame of
/// sessions in sessions, or batches in batches, from recursing the decoder
/// through a worker thread's stack, which aborts the whole node.
pub const MAX_NESTING: u32 = 4;

thread_local! {
    /// Levels of [`nested`] being decoded on this thread. Decoding never
    /// awaits, so a thread-local depth is the frame's depth.
    static NESTING: std::cell::Cell<u32> = const { std::cell::Cell::new(0) };
    /// Whether the last decode on this thread stopped at the limit: postcard
    /// drops the text of a custom error, so [`decode`] names it from this.
    static TOO_DEEP: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn too_deep() -> String {
    format!("messages nest more than {MAX_NESTING} deep (sessions and batches do not nest)")
}

/// One level of nesting, left when dropped (also on error and unwind).
struct Nesting;

impl Nesting {
    fn enter<E: serde::de::Error>() -> Result<Nesting, E> {
        NESTING.with(|depth| {
            if depth.get() >= MAX_NESTING {
                TOO_DEEP.with(|flag| flag.set(true));
                return Err(E::custom(too_deep()));
            }
            depth.set(depth.get() + 1);
            Ok(Nesting)
        })
    }
}

impl Drop for Nesting {
    fn drop(&mut self) {
        NESTING.with(|depth| depth.set(depth.get() - 1));
    }
}

/// Decodes a message that wraps others (a session's request or reply, a
/// batch), refusing to go deeper than [`MAX_NESTING`].
fn nested<'de, D: Deserializer<'de>, T: Deserialize<'de>>(deserializer: D) -> Result<T, D::Error> {
    let _level = Nesting::enter::<D::Error>()?;
    T::deserialize(deserializer)
}

/// Encodes a message as one frame.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, NetError> {
    let mut buf = vec![0u8; FRAME_HEADER_LEN];
    buf[4..6].copy_from_slice(&PROTOCOL_VERSION.to_be_bytes());
    let mut buf = postcard::to_extend(message, buf).map_err(|e| NetError::Malformed(format!("cannot encode: {e}")))?;
    let len = u32::try_from(buf.len() - 4)
        .map_err(|_| NetError::FrameTooLarge { len: buf.len() as u64, max: u32::MAX as usize })?;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Ok(buf)
}

/// Reads the length prefix, refusing frames over `max` before reading them.
pub fn frame_len(header: [u8; 4], max: usize) -> Result<usize, NetError> {
    let len = u32::from_be_bytes(header) as usize;
    if len > max {
        return Err(NetError::FrameTooLarge { len: len as u64, max });
    }
    if len < 2 {
        return Err(NetError::Malformed(format!("frame of {len} bytes is too short to hold a version")));
    }
    Ok(len)
}

/// Decodes a frame body (everything after the length prefix).
pub fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, NetError> {
    let (version, payload) =
        body.split_at_checked(2).ok_or_else(|| NetError::Malformed("frame has no version".into()))?;
    let version = u16::from_be_bytes([version[0], version[1]]);
    if version != PROTOCOL_VERSION {
        return Err(NetError::UnsupportedVersion { found: version, supported: PROTOCOL_VERSION });
    }
    TOO_DEEP.with(|flag| flag.set(false));
    let (message, rest) = postcard::take_from_bytes(payload).map_err(|e| match TOO_DEEP.with(|flag| flag.get()) {
        true => NetError::Malformed(too_deep()),
        false => NetError::Malformed(e.to_string()),
    })?;
    if !rest.is_empty() {
        return Err(NetError::Malformed(format!("{} trailing bytes after the message", rest.len())));
    }
    Ok(message)
}

/// Splits a whole frame (as read from a finished stream) and decodes it.
pub fn decode_frame<T: DeserializeOwned>(frame: &[u8], max: usize) -> Result<T, NetError> {
    let (header, body) =
        frame.split_at_checked(4).ok_or_else(|| NetError::Malformed("frame shorter than its length prefix".into()))?;
    let len = frame_len(header.try_into().expect("4 bytes"), max)?;
    if body.len() != len {
        return Err(NetError::Malformed(format!("length prefix says {len} bytes, the stream carried {}", body.len())));
    }
    decode(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_rejections() {
        let req = Request::Put {
            key: Bytes::from("k"),
            value: Bytes::from("v"),
            ttl_ms: Some(5),
            consistency: Consistency::All,
        };
        let frame = encode(&req).unwrap();
        assert_eq!(decode_frame::<Request>(&frame, 1024).unwrap(), req);
        assert!(matches!(decode_frame::<Request>(&frame, 4), Err(NetError::FrameTooLarge { .. })));

        let mut future = frame.clone();
        future[4..6].copy_from_slice(&(PROTOCOL_VERSION + 1).to_be_bytes());
        assert!(matches!(
            decode_frame::<Request>(&future, 1024),
            Err(NetError::UnsupportedVersion { found, supported: PROTOCOL_VERSION }) if found == PROTOCOL_VERSION + 1
        ));

        let mut garbage = frame.clone();
        garbage[6] = 0xee;
        assert!(matches!(decode_frame::<Request>(&garbage, 1024), Err(NetError::Malformed(_))));
        assert!(matches!(decode_frame::<Request>(&frame[..frame.len() - 1], 1024), Err(NetError::Malformed(_))));
    }

    fn read(value_len: usize) -> Response {
        let entry = Entry { version: Version::ZERO, value: Some(Bytes::from(vec![7u8; value_len])), expires_at: None };
        Ok(Reply::Entry(Some(entry)))
    }

    #[test]
    fn batch_replies_fit_their_frame() {
        let max = 8_000;
        let responses = vec![
            read(3_000),
            Ok(Reply::Applied { was_live: true }),
            read(3_000),
            read(3_000),
            Err(KvError::Busy { what: "partition-3".into(), capacity: 1024 }),
            read(10),
        ];
        let deferrable = [true, false, true, true, false, true];
        assert_eq!(responses.iter().map(super::is_deferrable).collect::<Vec<_>>(), deferrable, "only entries read");
        let fitted = fit_batch(responses.clone(), max);
        assert_eq!(fitted.len(), responses.len());
        assert_eq!(&fitted[..3], &responses[..3]);
        // The third read does not fit; the small one after it is deferred too,
        // so that answers come back as a prefix of the reads, in order.
        assert_eq!(fitted[3], Ok(Reply::Deferred));
        assert_eq!(fitted[4], responses[4]);
        assert_eq!(fitted[5], Ok(Reply::Deferred));
        let frame = encode(&Ok::<Reply, KvError>(Reply::Batch(fitted))).unwrap();
        assert!(frame.len() - 4 <= max, "{} bytes over {max}", frame.len() - 4);

        // With room for everything nothing changes.
        assert_eq!(fit_batch(responses.clone(), 1 << 20), responses);
        // Writes are kept even when nothing else fits.
        let fitted = fit_batch(responses, 100);
        assert_eq!(fitted[1], Ok(Reply::Applied { was_live: true }));
        assert!(fitted.iter().zip(deferrable).all(|(r, d)| !d || *r == Ok(Reply::Deferred)));
    }

    #[test]
    fn batches_cut_to_the_budget_fit_their_frame_and_one_maximal_entry_always_does() {
        let (max_key, max_value) = (1024, 65_536);
        // As a node computes its frame limit.
        let max_frame = max_key + max_value + 4096;
        let entry = |len: usize| Entry::value(Version::ZERO, Bytes::from(vec![1u8; len]), Some(u64::MAX));
        let alone = vec![(u16::MAX, Bytes::from(vec![b'k'; max_key]), entry(max_value))];
        assert_eq!(ringkv_core::fitting(&alone, batch_budget(max_frame)), 1);
        let frame = encode(&Request::Replica(ReplicaRequest::Deliver { entries: alone, hinted: false })).unwrap();
        assert!(frame.len() - 4 <= max_frame, "{} bytes over {max_frame}", frame.len() - 4);

        let many: Vec<(Bytes, Entry)> = (0..100).map(|i| (Bytes::from(format!("key-{i}")), entry(3_000))).collect();
        let fit = ringkv_core::fitting(&many, batch_budget(max_frame));
        assert!(fit > 1 && fit < many.len(), "{fit} of {}", many.len());
        let reply: Response = Ok(Reply::Entries(many[..fit].to_vec()));
        let frame = encode(&reply).unwrap();
        assert!(frame.len() - 4 <= max_frame, "{} bytes over {max_frame}", frame.len() - 4);
    }

    /// A frame of `prefix`, then `depth` messages each wrapping the next
    /// (`wrapper` is the postcard bytes before the inner message), then
    /// `innermost`.
    fn nested_frame(prefix: &[u8], wrapper: &[u8], depth: usize, innermost: &[u8]) -> Vec<u8> {
        let mut body = PROTOCOL_VERSION.to_be_bytes().to_vec();
        body.extend_from_slice(prefix);
        for _ in 0..depth {
            body.extend_from_slice(wrapper);
        }
        body.extend_from_slice(innermost);
        let mut frame = (body.len() as u32).to_be_bytes().to_vec();
        frame.extend(body);
        frame
    }

    /// Decodes on a thread with a tokio worker's stack (2 MiB), as a node
    /// decodes every request and reply.
    fn decode_on_worker_stack<T: DeserializeOwned + Send + 'static>(frame: Vec<u8>) -> Result<T, NetError> {
        std::thread::Builder::new()
            .stack_size(2 << 20)
            .spawn(move || decode_frame::<T>(&frame, usize::MAX))
            .unwrap()
            .join()
            .expect("the decoder must not overflow its stack")
    }

    // Found with the wire_frame and wire_reply fuzz targets, which decode on
    // a small stack (inputs in fuzz/regressions/wire_*/nested-*): a client
    // could nest sessions (a peer batches, a node replies) until decoding
    // overflowed the worker thread's stack, which aborts the whole node.
    #[test]
    fn deeply_nested_messages_are_refused_not_a_stack_overflow() {
        // Request::Session { seen: 0, deadline: None, request: .. } around a Ping.
        let err = decode_on_worker_stack::<Request>(nested_frame(&[], &[17, 0, 0], 200_000, &[0])).unwrap_err();
        assert!(err.to_string().contains("nest"), "{err}");
        // Request::Replica(Batch(vec![Batch(vec![..])])) around a Clock.
        let err = decode_on_worker_stack::<Request>(nested_frame(&[9], &[8, 1], 200_000, &[9])).unwrap_err();
        assert!(err.to_string().contains("nest"), "{err}");
        // Ok(Reply::Session { clock: 0, reply: .. }) around Done, and
        // Ok(Reply::Batch(vec![Ok(..)])) around Done.
        let err = decode_on_worker_stack::<Response>(nested_frame(&[0], &[16, 0], 200_000, &[1])).unwrap_err();
        assert!(err.to_string().contains("nest"), "{err}");
        let err = decode_on_worker_stack::<Response>(nested_frame(&[0], &[14, 1, 0], 200_000, &[1])).unwrap_err();
        assert!(err.to_string().contains("nest"), "{err}");

        // What the protocol uses decodes: a session around a request, a
        // batch of reads, and their replies.
        let session = Request::Session {
            seen: Timestamp(1),
            deadline: None,
            request: Box::new(Request::Get { key: Bytes::from("k"), consistency: Consistency::One }),
        };
        assert_eq!(decode_frame::<Request>(&encode(&session).unwrap(), 1024).unwrap(), session);
        let batch = Request::Replica(ReplicaRequest::Batch(vec![ReplicaRequest::Clock, ReplicaRequest::Clock]));
        assert_eq!(decode_frame::<Request>(&encode(&batch).unwrap(), 1024).unwrap(), batch);
        let reply: Response = Ok(Reply::Session {
            clock: Timestamp(2),
            reply: Box::new(Reply::Batch(vec![Ok(Reply::Done), Err(KvError::EmptyKey)])),
        });
        assert_eq!(decode_frame::<Response>(&encode(&reply).unwrap(), 1024).unwrap(), reply);
    }

    #[test]
    fn errors_cross_the_wire_intact() {
        let resp: Response = Err(KvError::KeyTooLarge { len: 10, max: 5 });
        assert_eq!(decode_frame::<Response>(&encode(&resp).unwrap(), 1024).unwrap(), resp);
    }
}

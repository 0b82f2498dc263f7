//! Roles on the QUIC port: which certificate may send which request. A pure
//! decision, taken before a request is run; see ARCHITECTURE.md, *Roles on
//! the QUIC port*.
//!
//! | request | needs |
//! |---|---|
//! | data (get, put, delete, exists, ttl, expire, persist, clear) and read-only admin (ping, members, status, explain, claim) | any certificate of the cluster CA |
//! | replica (writes, reads, transfer streams, repair, hints, truncate, clock) | the node certificate of a current member |
//! | fault injection (fault, skew, crash), only with `fault_injection = true` | the node certificate of a current member, or the operator certificate |
//! | leave | the operator certificate |

use ringkv_core::KvError;
use ringkv_net::tls::Role;
use ringkv_net::wire::Request;

/// What a request needs of the certificate that sent it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Needs {
    /// Any certificate of the cluster CA.
    Any,
    /// The node certificate of a current member (in the topology, any
    /// status).
    Member,
    /// A member's node certificate or the operator certificate.
    MemberOrOperator,
    Operator,
}

impl Needs {
    pub(crate) fn of(request: &Request) -> Needs {
        // Exhaustive on purpose: a new kind of request must be given a role
        // here (data requests are the ones `Request::is_data` names).
        match request {
            Request::Ping
            | Request::Put { .. }
            | Request::Get { .. }
            | Request::Delete { .. }
            | Request::Exists { .. }
            | Request::Ttl { .. }
            | Request::Expire { .. }
            | Request::Persist { .. }
            | Request::Clear
            | Request::Members
            | Request::Status
            | Request::Explain { .. }
            | Request::Claim
            | Request::Time => Needs::Any,
            Request::Replica(_) => Needs::Member,
            Request::Fault { .. } | Request::Skew { .. } | Request::Crash { .. } => Needs::MemberOrOperator,
            Request::Leave => Needs::Operator,
            // A session wraps a client request: it needs what that does.
            Request::Session { request, .. } => Needs::of(request),
        }
    }

    fn describe(self) -> &'static str {
        match self {
            Needs::Any => "a certificate of the cluster CA",
            Needs::Member => "the node certificate of a current member",
            Needs::MemberOrOperator => "the node certificate of a current member or the operator certificate",
            Needs::Operator => "the operator certificate",
        }
    }
}

/// Whether `role` may send `request`; `is_member` says whether a node id
/// is a member of the cluster as this node sees it now.
pub(crate) fn authorize(request: &Request, role: &Role, is_member: impl Fn(&str) -> bool) -> Result<(), KvError> {
    let needs = Needs::of(request);
    let member = matches!(role, Role::Node(id) if is_member(id));
    let operator = matches!(role, Role::Operator(_));
    let allowed = match needs {
        Needs::Any => true,
        Needs::Member => member,
        Needs::MemberOrOperator => member || operator,
        Needs::Operator => operator,
    };
    if allowed {
        return Ok(());
    }
    let presented = match role {
        Role::Node(id) if !is_member(id) => format!("{}, which is not a member", role.describe()),
        _ => role.describe(),
    };
    Err(KvError::Forbidden { request: request.kind().into(), needed: needs.describe().into(), presented })
}

#[cfg(test)]
mod tests {
    use bytes::Bytes;
    use ringkv_core::Consistency;
    use ringkv_net::wire::ReplicaRequest;

    use super::*;

    fn requests() -> Vec<Request> {
        let key = Bytes::from_static(b"k");
        let c = Consistency::Quorum;
        vec![
            Request::Ping,
            Request::Put { key: key.clone(), value: key.clone(), ttl_ms: None, consistency: c },
            Request::Get { key: key.clone(), consistency: c },
            Request::Delete { key: key.clone(), consistency: c },
            Request::Exists { key: key.clone(), consistency: c },
            Request::Ttl { key: key.clone(), consistency: c },
            Request::Expire { key: key.clone(), ttl_ms: 5, consistency: c },
            Request::Persist { key: key.clone(), consistency: c },
            Request::Clear,
            Request::Members,
            Request::Status,
            Request::Explain { key: key.clone() },
            Request::Claim,
            Request::Time,
            Request::Replica(ReplicaRequest::Read { partition: 0, key: key.clone() }),
            Request::Replica(ReplicaRequest::Stream { partition: 0, after: None, limit: 10 }),
            Request::Replica(ReplicaRequest::Deliver { entries: Vec::new(), hinted: false }),
            Request::Replica(ReplicaRequest::Clock),
            Request::Fault { blocked: Vec::new() },
            Request::Skew { offset_ms: 1 },
            Request::Crash { partition: 0 },
            Request::Leave,
        ]
    }

    /// Which requests each role may send: one row per role, one letter per
    /// request of `requests()` (y allowed, - refused).
    #[test]
    fn the_roles_table() {
        let member = |id: &str| id == "n1";
        let table = [
            (Role::Client, "yyyyyyyyyyyyyy--------"),
            (Role::Operator("ops".into()), "yyyyyyyyyyyyyy----yyyy"),
            (Role::Node("n1".into()), "yyyyyyyyyyyyyyyyyyyyy-"),
            (Role::Node("n9".into()), "yyyyyyyyyyyyyy--------"),
        ];
        for (role, expected) in table {
            let got: String =
                requests().iter().map(|r| if authorize(r, &role, member).is_ok() { 'y' } else { '-' }).collect();
            assert_eq!(got, expected, "{role:?}");
        }
    }

    #[test]
    fn a_session_needs_what_its_request_needs() {
        let wrap = |request| Request::Session { seen: Default::default(), deadline: None, request: Box::new(request) };
        assert_eq!(Needs::of(&wrap(Request::Leave)), Needs::Operator);
        assert_eq!(Needs::of(&wrap(Request::Status)), Needs::Any);
    }

    #[test]
    fn a_refusal_names_the_role_needed_and_the_one_presented() {
        let err = authorize(&Request::Leave, &Role::Client, |_| true).unwrap_err();
        assert_eq!(
            err.to_string(),
            "leave needs the operator certificate; this connection presented a client certificate"
        );
        let write = Request::Replica(ReplicaRequest::Clock);
        let err = authorize(&write, &Role::Node("n9".into()), |id| id == "n1").unwrap_err();
        assert_eq!(
            err.to_string(),
            "replica-clock needs the node certificate of a current member; this connection presented the node \
             certificate of n9, which is not a member"
        );
        assert!(matches!(err, KvError::Forbidden { .. }));
    }
}

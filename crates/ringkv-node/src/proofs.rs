//! Membership bound to certificates: which gossiped members are proven.
//!
//! Anyone holding the gossip key can gossip any node id with any state, so
//! gossip alone is not believed. A member's state (generation, address,
//! partition count, status, truncate epoch, fences, when it was last alive)
//! is believed only as the member itself states it over mutual TLS
//! (`Request::Claim`), answered under a certificate of the cluster CA that
//! names exactly that node id; or as a member so proven vouches for it (its
//! own proven view, which keeps a member that is down now known by its last
//! proven state). Gossip then says only that something changed (a probe is
//! due when the newest gossiped state differs from the proven one) and who
//! is live.
//!
//! [`Proofs`] is the pure bookkeeping: the proven claims, and when to ask
//! whom. The membership task runs the probes (`membership.rs`).

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use ringkv_core::ring::NodeName;
use ringkv_net::wire::MemberClaim;
use tokio::time::Instant;

/// Asks the node at an address for its claims (`Request::Claim`) and
/// checks that the certificate that answered names the node id asked for:
/// `Ok` holds that node's own claim first, then the claims it vouches for.
pub(crate) type Prover = Arc<
    dyn Fn(NodeName, SocketAddr) -> Pin<Box<dyn Future<Output = Result<Vec<MemberClaim>, String>> + Send>>
        + Send
        + Sync,
>;

/// Probes running at once, at most.
pub(crate) const MAX_PROBES: usize = 8;
/// How long one probe (connect, `Request::Claim`) may take.
pub(crate) const PROBE_TIMEOUT: Duration = Duration::from_secs(3);
/// The first retry after a failed or unconvincing probe; it doubles up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(10);

#[derive(Debug, Clone, PartialEq)]
struct Proven {
    claim: MemberClaim,
    /// Stated by the member itself (rather than vouched for by another).
    direct: bool,
}

#[derive(Debug, Default)]
struct Probing {
    in_flight: bool,
    failures: u32,
    next_at: Option<Instant>,
}

/// The proven claims, by node id, and the probe schedule.
#[derive(Debug, Default)]
pub(crate) struct Proofs {
    proven: HashMap<NodeName, Proven>,
    probing: HashMap<NodeName, Probing>,
    in_flight: usize,
}

impl Proofs {
    /// The claim this node believes for `name`, if proven.
    pub(crate) fn believed(&self, name: &str) -> Option<&MemberClaim> {
        self.proven.get(name).map(|p| &p.claim)
    }

    /// Every proven claim, for vouching.
    pub(crate) fn all(&self) -> impl Iterator<Item = &MemberClaim> {
        self.proven.values().map(|p| &p.claim)
    }

    /// Whether to ask `name` now, given what gossip newest says of it: not
    /// if that is what is proven already, nor while a probe of it runs or
    /// waits out its backoff, nor beyond [`MAX_PROBES`] at once.
    pub(crate) fn due(&self, name: &str, gossiped: &MemberClaim, now: Instant) -> bool {
        if self.believed(name) == Some(gossiped) || self.in_flight >= MAX_PROBES {
            return false;
        }
        match self.probing.get(name) {
            Some(p) => !p.in_flight && p.next_at.is_none_or(|at| now >= at),
            None => true,
        }
    }

    /// A probe of `name` starts.
    pub(crate) fn start(&mut self, name: &NodeName) {
        let p = self.probing.entry(name.clone()).or_default();
        if !p.in_flight {
            p.in_flight = true;
            self.in_flight += 1;
        }
    }

    /// A probe of `name`, started for the `gossiped` state, answered. A
    /// failure proves nothing and changes nothing proven (a member does not
    /// flap because one probe failed); it backs off. An answer proves the
    /// member's own claim (the prover checked the certificate) and the
    /// claims it vouches for, which fill in members not proven since a
    /// newer generation. Returns whether what is believed changed.
    pub(crate) fn record(
        &mut self,
        name: &NodeName,
        gossiped: &MemberClaim,
        result: Result<Vec<MemberClaim>, String>,
        me: &str,
        now: Instant,
    ) -> bool {
        let p = self.probing.entry(name.clone()).or_default();
        if p.in_flight {
            p.in_flight = false;
            self.in_flight -= 1;
        }
        let mut changed = false;
        let convinced = match result {
            Ok(claims) => {
                let mut claims = claims.into_iter();
                match claims.next().filter(|own| *own.node_id == **name) {
                    Some(own) => {
                        let convinced = own == *gossiped;
                        changed |= self.prove(own, true);
                        for vouched in claims.filter(|c| c.node_id != me && *c.node_id != **name) {
                            changed |= self.prove(vouched, false);
                        }
                        convinced
                    }
                    None => false,
                }
            }
            Err(reason) => {
                tracing::debug!(node = %name, %reason, "cannot prove a gossiped member");
                false
            }
        };
        let p = self.probing.entry(name.clone()).or_default();
        if convinced {
            p.failures = 0;
            p.next_at = None;
        } else {
            p.failures = p.failures.saturating_add(1);
            let backoff = FIRST_BACKOFF.saturating_mul(1 << p.failures.min(10).saturating_sub(1)).min(MAX_BACKOFF);
            p.next_at = Some(now + backoff);
        }
        changed
    }

    /// A member's own word replaces whatever is proven of it; a vouched
    /// claim only fills in a member not proven at that generation or later
    /// by its own word, and never takes it back to an older generation.
    fn prove(&mut self, claim: MemberClaim, direct: bool) -> bool {
        let name = NodeName::from(claim.node_id.as_str());
        let keep = match self.proven.get(&name) {
            None => false,
            Some(p) if direct => p.direct && p.claim == claim,
            Some(p) => {
                p.claim == claim
                    || p.claim.generation > claim.generation
                    || (p.direct && p.claim.generation == claim.generation)
            }
        };
        if keep {
            return false;
        }
        self.proven.insert(name, Proven { claim, direct });
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringkv_core::{Epoch, Timestamp};
    use ringkv_net::wire::MemberStatus;

    fn claim(id: &str, generation: u64, status: MemberStatus, epoch: u64) -> MemberClaim {
        MemberClaim {
            node_id: id.into(),
            generation,
            addr: "127.0.0.1:7000".parse().unwrap(),
            partitions: 64,
            status,
            epoch: Epoch(Timestamp(epoch)),
            fences: Vec::new(),
            alive_before: 0,
            join: 0,
        }
    }

    fn n(name: &str) -> NodeName {
        NodeName::from(name)
    }

    #[tokio::test(start_paused = true)]
    async fn nothing_gossiped_is_believed_until_the_member_itself_says_so() {
        let mut proofs = Proofs::default();
        let now = Instant::now();
        let gossiped = claim("n2", 1, MemberStatus::Serving, 0);
        assert!(proofs.believed("n2").is_none());
        assert!(proofs.due("n2", &gossiped, now));
        proofs.start(&n("n2"));
        assert!(!proofs.due("n2", &gossiped, now), "one probe at a time per member");
        assert!(proofs.record(&n("n2"), &gossiped, Ok(vec![gossiped.clone()]), "n1", now));
        assert_eq!(proofs.believed("n2"), Some(&gossiped));
        assert!(!proofs.due("n2", &gossiped, now), "proven: no more probes while gossip agrees");

        // A new status or epoch in gossip is believed only once the member
        // states it.
        let serving_cleared = claim("n2", 1, MemberStatus::Serving, 99);
        assert!(proofs.due("n2", &serving_cleared, now));
        proofs.start(&n("n2"));
        assert!(!proofs.record(&n("n2"), &serving_cleared, Ok(vec![gossiped.clone()]), "n1", now));
        assert_eq!(proofs.believed("n2"), Some(&gossiped), "the member itself says epoch 0");
    }

    #[tokio::test(start_paused = true)]
    async fn a_wrong_certificate_or_a_failure_proves_nothing_and_backs_off() {
        let mut proofs = Proofs::default();
        let now = Instant::now();
        let real = claim("n2", 1, MemberStatus::Serving, 0);
        proofs.start(&n("n2"));
        proofs.record(&n("n2"), &real, Ok(vec![real.clone()]), "n1", now);

        // A key holder gossips n2 under a newer generation with an epoch:
        // the answer (the prover found a certificate not naming n2, or n2
        // itself still at generation 1) changes nothing proven.
        let forged = claim("n2", 2, MemberStatus::Joining, 1_000);
        for (i, answer) in [Err("the certificate names n9".to_string()), Ok(vec![real.clone()])].into_iter().enumerate()
        {
            let at = now + MAX_BACKOFF * (i as u32 + 1);
            assert!(proofs.due("n2", &forged, at));
            proofs.start(&n("n2"));
            assert!(!proofs.record(&n("n2"), &forged, answer, "n1", at));
            assert_eq!(proofs.believed("n2"), Some(&real), "no flapping, no forged state");
            assert!(!proofs.due("n2", &forged, at), "backing off");
        }
        // An answer whose first claim is another node's is no proof.
        let stranger = claim("n9", 5, MemberStatus::Serving, 1_000);
        let at = now + MAX_BACKOFF * 3;
        proofs.start(&n("n7"));
        assert!(!proofs.record(&n("n7"), &stranger, Ok(vec![stranger.clone()]), "n1", at));
        assert!(proofs.believed("n7").is_none() && proofs.believed("n9").is_none());

        // A restart under a new generation is proven in one round trip.
        let restarted = claim("n2", 3, MemberStatus::Recovering, 0);
        let at = now + MAX_BACKOFF * 4;
        assert!(proofs.due("n2", &restarted, at));
        proofs.start(&n("n2"));
        assert!(proofs.record(&n("n2"), &restarted, Ok(vec![restarted.clone()]), "n1", at));
        assert_eq!(proofs.believed("n2"), Some(&restarted));
    }

    #[tokio::test(start_paused = true)]
    async fn backoff_doubles_and_is_bounded_and_probes_are_bounded() {
        let mut proofs = Proofs::default();
        let mut now = Instant::now();
        let gossiped = claim("n2", 1, MemberStatus::Serving, 0);
        let mut waits = Vec::new();
        for _ in 0..12 {
            proofs.start(&n("n2"));
            proofs.record(&n("n2"), &gossiped, Err("unreachable".into()), "n1", now);
            let mut wait = Duration::ZERO;
            while !proofs.due("n2", &gossiped, now + wait) {
                wait += Duration::from_millis(50);
            }
            waits.push(wait);
            now += wait;
        }
        assert_eq!(waits[0], FIRST_BACKOFF);
        assert_eq!(waits[1], FIRST_BACKOFF * 2);
        assert_eq!(*waits.last().unwrap(), MAX_BACKOFF);

        let mut proofs = Proofs::default();
        for i in 0..MAX_PROBES {
            proofs.start(&n(&format!("m{i}")));
        }
        assert!(!proofs.due("other", &claim("other", 1, MemberStatus::Serving, 0), now), "at most MAX_PROBES");
    }

    #[tokio::test(start_paused = true)]
    async fn vouched_claims_fill_in_members_that_are_down_but_never_override_their_own_word() {
        let mut proofs = Proofs::default();
        let now = Instant::now();
        let n2 = claim("n2", 1, MemberStatus::Serving, 0);
        let n3_old = claim("n3", 1, MemberStatus::Serving, 0);
        let n3_new = claim("n3", 2, MemberStatus::Recovering, 0);
        let me = claim("n1", 1, MemberStatus::Serving, 0);
        proofs.start(&n("n2"));
        proofs.record(&n("n2"), &n2, Ok(vec![n2.clone(), n3_old.clone(), me.clone()]), "n1", now);
        assert_eq!(proofs.believed("n3"), Some(&n3_old), "n3 is down: n2 vouches for its last state");
        assert!(proofs.believed("n1").is_none(), "this node never takes another's word for itself");

        proofs.start(&n("n3"));
        proofs.record(&n("n3"), &n3_new, Ok(vec![n3_new.clone()]), "n1", now);
        proofs.start(&n("n2"));
        proofs.record(&n("n2"), &n2, Ok(vec![n2.clone(), n3_old.clone()]), "n1", now);
        assert_eq!(proofs.believed("n3"), Some(&n3_new), "its own newer word stands");

        // Nor does a stale voucher take a vouched member back a generation.
        let n4_old = claim("n4", 1, MemberStatus::Serving, 0);
        let n4_new = claim("n4", 2, MemberStatus::Serving, 0);
        proofs.start(&n("n2"));
        proofs.record(&n("n2"), &n2, Ok(vec![n2.clone(), n4_new.clone()]), "n1", now);
        proofs.start(&n("n3"));
        proofs.record(&n("n3"), &n3_new, Ok(vec![n3_new.clone(), n4_old]), "n1", now);
        assert_eq!(proofs.believed("n4"), Some(&n4_new));
    }
}

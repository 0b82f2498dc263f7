//! Fail-stop for the node's actors (and its log: `Supervisor::fail`). A
//! partition actor that fails (a panic in
//! its handler) has lost its shard's in-memory state, and the only correct
//! way to rebuild it is the recovery a restart runs: snapshot and log, then
//! hints and repair from the peers. Serving on without it would leave the
//! node up in gossip yet failing every request for that partition, so peers
//! would neither hint its writes nor stop asking it. Instead any failed actor
//! makes the node stop: peers see it die and cover for it, and the process
//! exits with an error so that whatever runs it restarts it.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use ractor::{Actor, ActorCell, ActorId, ActorProcessingErr, ActorRef, SupervisionEvent};
use tokio::sync::watch;

use crate::NodeError;

/// The parent of the node's actors, and what it has seen fail.
pub(crate) struct Supervisor {
    actor: ActorRef<()>,
    names: Names,
    failed: watch::Receiver<Option<String>>,
    fail: watch::Sender<Option<String>>,
}

type Names = Arc<Mutex<HashMap<ActorId, String>>>;

impl Supervisor {
    pub(crate) async fn start() -> Result<Supervisor, NodeError> {
        let (failed_tx, failed) = watch::channel(None);
        let names = Names::default();
        let state = SupervisorState { names: names.clone(), failed: failed_tx.clone() };
        let (actor, _) = Actor::spawn(None, SupervisorActor, state)
            .await
            .map_err(|e| NodeError::Actor { name: "the supervisor".into(), reason: e.to_string() })?;
        Ok(Supervisor { actor, names, failed, fail: failed_tx })
    }

    pub(crate) fn cell(&self) -> ActorCell {
        self.actor.get_cell()
    }

    /// Names a child for the failure message (actors are unnamed in ractor's
    /// registry, which is process-wide).
    pub(crate) fn name(&self, child: ActorId, name: &str) {
        self.names.lock().unwrap_or_else(|e| e.into_inner()).insert(child, name.to_owned());
    }

    /// Records a failure outside the actors (the write-ahead log's), which
    /// stops the node as an actor's would.
    pub(crate) fn fail(&self, reason: String) {
        record(&self.fail, reason);
    }

    /// Resolves with the first failure.
    pub(crate) fn failures(&self) -> watch::Receiver<Option<String>> {
        self.failed.clone()
    }

    pub(crate) fn stop(&self) {
        self.actor.stop(None);
    }
}

struct SupervisorActor;

struct SupervisorState {
    names: Names,
    failed: watch::Sender<Option<String>>,
}

impl Actor for SupervisorActor {
    type Msg = ();
    type State = SupervisorState;
    type Arguments = SupervisorState;

    async fn pre_start(&self, _: ActorRef<()>, state: SupervisorState) -> Result<SupervisorState, ActorProcessingErr> {
        Ok(state)
    }

    /// Children stopped on purpose (shutdown) are no news; a failure is
    /// recorded, the first one kept.
    async fn handle_supervisor_evt(
        &self,
        _: ActorRef<()>,
        event: SupervisionEvent,
        state: &mut SupervisorState,
    ) -> Result<(), ActorProcessingErr> {
        if let SupervisionEvent::ActorFailed(child, error) = event {
            let names = state.names.lock().unwrap_or_else(|e| e.into_inner());
            let name = names.get(&child.get_id()).cloned().unwrap_or_else(|| format!("actor {}", child.get_id()));
            record(&state.failed, format!("{name} failed: {error}"));
        }
        Ok(())
    }
}

/// Keeps the first failure.
fn record(failed: &watch::Sender<Option<String>>, reason: String) {
    tracing::error!(%reason, "the node stops");
    failed.send_if_modified(|failed| failed.is_none() && failed.replace(reason).is_none());
}

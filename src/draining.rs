//! Draining: a server that takes no new conference, lets the ones it runs end, and then exits,
//! so that a media node (or a whole server behind a load balancer) can be taken out of service
//! without cutting a call short.
//!
//! Started by SIGUSR1 or `POST /admin/drain` (an admin endpoint, like `/metrics`). From then
//! on:
//! - an INVITE to a conference that has no member here gets 503 (SIP); members of the
//!   conferences running here still join them;
//! - in a cluster the head places no new conference on a draining node (or on a draining
//!   head's own media), and a new invitation to a conference running there still names it;
//! - `/healthz` answers 503 "draining", so load balancers stop sending new work;
//! - once the last call has ended, or `[main] drain_timeout` seconds after the start (the
//!   calls still up then get the BYE of a shutdown), the server shuts down as on SIGTERM and
//!   exits 0.

use std::sync::Arc;
use std::time::Duration;

use crate::cluster::head::ClusterHead;
use crate::cluster::node::NodeLink;
use crate::conference::runtime::MediaRuntime;

/// The draining state of this server.
pub struct Draining {
    runtime: Arc<MediaRuntime>,
    node: Option<Arc<NodeLink>>,
    head: Option<Arc<ClusterHead>>,
    /// `[main] drain_timeout`; `None`: wait for the last call however long it takes.
    timeout: Option<Duration>,
}

impl std::fmt::Debug for Draining {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Draining")
            .field("draining", &self.runtime.is_draining())
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl Draining {
    pub fn new(
        runtime: Arc<MediaRuntime>,
        node: Option<Arc<NodeLink>>,
        head: Option<Arc<ClusterHead>>,
        timeout: Option<Duration>,
    ) -> Self {
        Draining {
            runtime,
            node,
            head,
            timeout,
        }
    }

    /// Starts draining (`why` is logged); a second call changes nothing. Returns the calls
    /// still up.
    pub fn start(&self, why: &str) -> usize {
        let calls = self.runtime.calls_up();
        if !self.runtime.start_draining() {
            return calls;
        }
        if let Some(node) = &self.node {
            node.set_draining();
        }
        if let Some(head) = &self.head {
            head.set_draining();
        }
        tracing::info!(
            calls,
            timeout_s = self.timeout.map(|t| t.as_secs()),
            "draining ({why}): no new conference starts here; exiting when the last call has ended"
        );
        calls
    }

    pub fn is_draining(&self) -> bool {
        self.runtime.is_draining()
    }

    /// Resolves once draining has started and then either the last call has ended or the
    /// drain timeout has passed (the server should shut down then).
    pub async fn done(&self) {
        self.runtime.draining_started().await;
        let idle = self.runtime.idle();
        match self.timeout {
            None => idle.await,
            Some(t) => {
                if tokio::time::timeout(t, idle).await.is_err() {
                    tracing::warn!(
                        calls = self.runtime.calls_up(),
                        "drain timeout: the calls still up are hung up"
                    );
                    return;
                }
            }
        }
        tracing::info!("drained: the last call has ended");
    }
}

//! Replacing the pool's gateways when a cluster's member list changes.

use super::*;

impl Pool {
    /// Makes `addresses` the gateways calls go to, in that order. A gateway
    /// still named keeps its connections and state; one no longer named
    /// takes no new call (calls in flight on its connections finish). An
    /// empty list changes nothing. Returns whether the list changed.
    pub(crate) fn set_addresses(&self, addresses: &[String]) -> bool {
        if addresses.is_empty() {
            return false;
        }
        let mut gateways = self
            .gateways
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        let same = gateways.len() == addresses.len()
            && gateways.iter().zip(addresses).all(|(g, a)| g.address == *a);
        if same {
            return false;
        }
        let next: Arc<[Arc<Gateway>]> = addresses
            .iter()
            .map(|address| {
                gateways
                    .iter()
                    .find(|g| g.address == *address)
                    .cloned()
                    .unwrap_or_else(|| Gateway::new(address))
            })
            .collect();
        tracing::debug!(
            gateways = ?addresses,
            "the client's gateways changed"
        );
        *gateways = next;
        true
    }

    /// Opens a stream on a gateway the pool already has a connection to,
    /// dialling none (a request that must not wait for a handshake with a
    /// gateway that may be gone); as [`Pool::open`] when there is none.
    pub(crate) async fn open_connected(
        self: &Arc<Self>,
        codec: Codec,
    ) -> Result<(FramedSend, PooledRecv), ClientError> {
        for gateway in self.order(None) {
            let lease = {
                let mut state = gateway.lock();
                self.prune(&gateway, &mut state);
                state.connections.iter().find_map(|conn| {
                    let permit = Arc::clone(&conn.permits).try_acquire_owned().ok()?;
                    Some(self.lease(&gateway, conn, permit))
                })
            };
            let Some(lease) = lease else { continue };
            if let Ok((send, recv)) = transport::open_bi(&lease.connection, codec).await {
                return Ok((
                    send,
                    PooledRecv {
                        recv,
                        _lease: lease,
                    },
                ));
            }
        }
        self.open(codec, None).await
    }

    /// Whether some gateway has a connection not yet seen closed.
    pub(crate) fn has_connection(&self) -> bool {
        self.gateways().iter().any(|gateway| {
            gateway
                .lock()
                .connections
                .iter()
                .any(|c| c.connection.close_reason().is_none())
        })
    }
}

//! Reading a call's result after its head: the same `Data`/`End`/`Error`
//! frames whether a gateway answers (a proxied call) or a node's direct
//! port does (a look-aside call), read as a whole or as a stream.

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use protocol::Message;
use transport::{FramedRecv, FramedSend, IoError};

use super::attempt;
use super::{CallResult, CallStream};
use crate::pool::PooledRecv;
use crate::{ClientError, ResultMeta, unexpected};

/// Where a result comes from: a pooled gateway stream, or a node's direct
/// port.
pub(crate) enum Source {
    /// A gateway's answer on a pooled connection.
    Gateway(PooledRecv),
    /// A node's answer on a direct connection.
    Node(DirectRecv),
}

/// The receiving half of a direct call's stream, and the node it reads
/// from (named in the error when the connection is lost).
pub(crate) struct DirectRecv {
    pub(crate) recv: FramedRecv,
    pub(crate) node_id: Arc<str>,
    pub(crate) address: Arc<str>,
}

impl Source {
    fn framed(&mut self) -> &mut FramedRecv {
        match self {
            Self::Gateway(recv) => recv,
            Self::Node(direct) => &mut direct.recv,
        }
    }

    /// `error` from reading a result: a lost connection is the gateway
    /// lost mid-call (proxied) or the node lost (direct).
    fn lost(&self, error: IoError) -> ClientError {
        match self {
            Self::Gateway(recv) => attempt::reading(error, recv.gateway()),
            Self::Node(direct) => direct_lost(error, &direct.node_id, &direct.address),
        }
    }

    fn stop(&mut self, code: u32) {
        self.framed().stop(code);
    }
}

/// `error` on a direct connection to `node` at `address`: a lost
/// connection reads as [`protocol::ErrorKind::NodeLost`] (the call may
/// have run).
pub(crate) fn direct_lost(error: IoError, node: &str, address: &str) -> ClientError {
    match error {
        IoError::ConnectionLost(_) => ClientError::Call {
            kind: protocol::ErrorKind::NodeLost,
            message: format!("direct connection to node {node} at {address} lost: {error}"),
            node_id: Some(node.to_string()),
            request_id: None,
        },
        other => other.into(),
    }
}

/// An answered call's open stream; cancels the call when dropped before its
/// result ended.
pub(crate) struct Open {
    pub(crate) send: FramedSend,
    pub(crate) recv: Source,
    /// Result bytes still to come, `None` for a streamed result.
    pub(crate) left: Option<u64>,
    pub(crate) done: bool,
}

impl Drop for Open {
    fn drop(&mut self) {
        if !self.done {
            self.send.reset(protocol::codes::reset::CANCELLED);
            self.recv.stop(protocol::codes::reset::CANCELLED);
        }
    }
}

impl Open {
    /// The next chunk, `None` at the result's end.
    pub(crate) async fn next(&mut self) -> Result<Option<Bytes>, ClientError> {
        if self.done {
            return Ok(None);
        }
        let frame = match self.left {
            Some(0) => {
                self.done = true;
                return Ok(None);
            }
            _ => self.recv.framed().recv().await,
        };
        let frame = match frame {
            Ok(frame) => frame,
            Err(e) => {
                self.done = true;
                return Err(self.recv.lost(e));
            }
        };
        match (frame, self.left.as_mut()) {
            (Some(Message::Data(chunk)), Some(left)) if chunk.len() as u64 <= *left => {
                *left -= chunk.len() as u64;
                Ok(Some(chunk))
            }
            (Some(Message::Data(chunk)), None) => Ok(Some(chunk)),
            (Some(Message::End(_)), None) => {
                self.done = true;
                Ok(None)
            }
            (Some(Message::Error(e)), None) => {
                self.done = true;
                Err(e.into())
            }
            (Some(other), _) => {
                self.done = true;
                Err(unexpected(&other))
            }
            (None, _) => {
                self.done = true;
                Err(ClientError::Protocol("result stream ended early".into()))
            }
        }
    }

    /// Reads the whole result of `meta`'s call, at most `max` bytes.
    pub(crate) async fn whole(
        mut self,
        meta: ResultMeta,
        max: u64,
    ) -> Result<CallResult, ClientError> {
        let data = match meta.payload_len {
            Some(len) => {
                let read = self.recv.framed().recv_payload(len, max).await;
                let data = read.map_err(|e| self.recv.lost(e))?;
                self.done = true;
                data
            }
            None => {
                let mut data = BytesMut::new();
                while let Some(chunk) = self.next().await? {
                    if (data.len() + chunk.len()) as u64 > max {
                        return Err(ClientError::Protocol(format!(
                            "result exceeds max_result_bytes ({max} bytes)"
                        )));
                    }
                    data.extend_from_slice(&chunk);
                }
                data.freeze()
            }
        };
        Ok(CallResult { meta, data })
    }

    /// The result of `meta`'s call as a stream of its chunks.
    pub(crate) fn into_stream(self, meta: ResultMeta) -> CallStream {
        let chunks = futures_util::stream::unfold(self, |mut open| async move {
            match open.next().await {
                Ok(Some(chunk)) => Some((Ok(chunk), open)),
                Ok(None) => None,
                Err(e) => Some((Err(e), open)),
            }
        });
        CallStream {
            meta,
            chunks: Box::pin(chunks),
        }
    }
}

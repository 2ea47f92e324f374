//! The data of a policy store: the (empty) WASI context, the resource limiter
//! and the `switchyard:policy/host` and `switchyard:policy/blocks` imports.

use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::NodeDirectory;
use crate::bindings::switchyard::policy::{host, types};
use crate::block_bindings::switchyard::policy::blocks;
use crate::limits::PolicyLimiter;
use crate::logging::{LogSink, LogStream, Stream};

/// What a policy's [`wasmtime::Store`] holds.
pub(crate) struct HostState {
    wasi: WasiCtx,
    table: ResourceTable,
    pub(crate) limiter: PolicyLimiter,
    nodes: Arc<dyn NodeDirectory>,
}

impl HostState {
    /// Fresh state for one instance: WASI with no capability at all (no
    /// preopens, env, args, stdin or network; stdout/stderr to `log`).
    pub(crate) fn new(
        nodes: Arc<dyn NodeDirectory>,
        log: &Arc<LogSink>,
        memory_limit: usize,
    ) -> Self {
        let wasi = WasiCtxBuilder::new()
            .stdout(LogStream::new(Arc::clone(log), Stream::Stdout))
            .stderr(LogStream::new(Arc::clone(log), Stream::Stderr))
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .socket_addr_check(deny_socket)
            .build();
        Self {
            wasi,
            table: ResourceTable::new(),
            limiter: PolicyLimiter::new(memory_limit),
            nodes,
        }
    }
}

fn deny_socket(
    _addr: SocketAddr,
    _use: SocketAddrUse,
) -> std::pin::Pin<Box<dyn Future<Output = bool> + Send + Sync>> {
    Box::pin(std::future::ready(false))
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for HostState {}

impl host::Host for HostState {
    fn node_info(&mut self, node: types::NodeKey) -> Option<types::NodeInfo> {
        self.nodes.node_info(node)
    }
}

/// Most nodes one `blocks.prefix-matched` call looks at (the rest answer 0):
/// a gateway offers far fewer candidates.
pub(crate) const MAX_MATCHED_NODES: usize = 4096;

impl blocks::Host for HostState {
    fn prefix_matched(
        &mut self,
        service: String,
        prefix_hashes: Vec<u64>,
        nodes: Vec<types::NodeKey>,
    ) -> Vec<u32> {
        let hashes = &prefix_hashes[..prefix_hashes.len().min(crate::MAX_PREFIX_HASHES)];
        nodes
            .iter()
            .enumerate()
            .map(|(i, &node)| {
                if i < MAX_MATCHED_NODES && !hashes.is_empty() {
                    self.nodes.prefix_matched(node, &service, hashes)
                } else {
                    0
                }
            })
            .collect()
    }
}

//! The data of a policy store: the (empty) WASI context, the resource limiter
//! and the `switchyard:policy/host` import.

use std::net::SocketAddr;
use std::sync::Arc;

use wasmtime::component::ResourceTable;
use wasmtime_wasi::sockets::SocketAddrUse;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};

use crate::NodeDirectory;
use crate::bindings::switchyard::policy::{host, types};
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

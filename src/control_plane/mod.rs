// placeholder until the reference control plane lands
use std::net::SocketAddr;
use std::path::PathBuf;
pub struct TlsFiles { pub cert: PathBuf, pub key: PathBuf }
pub struct ControlPlaneOptions { pub listen: SocketAddr, pub runner_tokens: Vec<String>, pub api_token: Option<String>, pub tls: Option<TlsFiles>, pub heartbeat_interval: std::time::Duration }
pub struct ControlPlaneHandle;
impl ControlPlaneHandle { pub fn local_addr(&self) -> SocketAddr { todo!() } pub async fn shutdown(self) {} }
pub async fn start(_o: ControlPlaneOptions) -> Result<ControlPlaneHandle, String> { todo!() }

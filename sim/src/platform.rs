//! The component's imports inside the simulation: sockets over turmoil TCP, the clock from
//! simulated time, WiFi from the scenario's timeline.

use std::sync::Arc;

use mqtt_host::stream_sockets::{socket_error, ConnectFuture, Connector, StreamSockets};
use mqtt_host::{Clock, LinkState, Platform, SocketError, TlsParams, Wifi};
use tokio::sync::Notify;

use crate::flash::SimFlash;
use crate::world::{now_ms, Shared};

/// Connects over turmoil's simulated TCP, honouring the timeline's DNS failures (the
/// devices' resolver; the observer sits next to the broker and is not affected).
pub struct TurmoilConnector {
    world: Shared,
    faults_apply: bool,
}

impl Connector for TurmoilConnector {
    type Stream = turmoil::net::TcpStream;

    fn connect(&mut self, host: &str, port: u16, tls: Option<TlsParams>) -> Result<ConnectFuture<Self::Stream>, SocketError> {
        if tls.is_some() {
            // The simulated network carries plain TCP; TLS is tested on the board.
            return Err(SocketError::TlsFailed);
        }
        if self.faults_apply {
            let mut w = self.world.lock();
            w.rec.connect_attempts += 1;
            if w.dns_fail {
                return Err(SocketError::DnsFailed);
            }
        }
        let addr = (host.to_string(), port);
        Ok(Box::pin(async move { turmoil::net::TcpStream::connect(addr).await.map_err(|e| socket_error(&e)) }))
    }
}

pub struct SimPlatform {
    world: Shared,
    wake: Arc<Notify>,
    sockets: StreamSockets<TurmoilConnector>,
    /// Devices follow the timeline's WiFi and DNS faults; the observer does not.
    faults_apply: bool,
    /// The device's flash, when the scenario gives it one.
    pub flash: Option<SimFlash>,
}

impl SimPlatform {
    /// A device's platform: WiFi and DNS as the timeline says.
    pub fn new(world: Shared, wake: Arc<Notify>) -> Self {
        Self::build(world, wake, true)
    }

    /// The observer's platform: wired next to the broker, link always up.
    pub fn for_observer(world: Shared, wake: Arc<Notify>) -> Self {
        Self::build(world, wake, false)
    }

    fn build(world: Shared, wake: Arc<Notify>, faults_apply: bool) -> Self {
        let sockets = StreamSockets::new(TurmoilConnector { world: world.clone(), faults_apply }, wake.clone());
        SimPlatform { world, wake, sockets, faults_apply, flash: None }
    }

    fn link(&self) -> LinkState {
        if self.faults_apply {
            self.world.lock().link
        } else {
            LinkState::Up
        }
    }
}

mqtt_host::forward_socket!(SimPlatform, sockets);

impl Clock for SimPlatform {
    fn now_ms(&mut self) -> u64 {
        now_ms()
    }
    fn wall_ms(&mut self) -> Option<u64> {
        turmoil::since_epoch().map(|d| d.as_millis() as u64)
    }
}

impl Wifi for SimPlatform {
    fn state(&mut self) -> LinkState {
        self.link()
    }
    fn connect(&mut self, _ssid: &str, _password: &str) -> Result<(), String> {
        // The scenario's timeline owns the link; joining succeeds when the timeline says so.
        Ok(())
    }
    fn disconnect(&mut self) {}
    fn rssi(&mut self) -> Option<i32> {
        match self.link() {
            LinkState::Up => Some(-60),
            _ => None,
        }
    }
}

impl Platform for SimPlatform {
    fn wakeup(&self) -> Option<Arc<Notify>> {
        Some(self.wake.clone())
    }
    fn storage(&mut self) -> Option<&mut dyn mqtt_host::Flash> {
        self.flash.as_mut().map(|f| f as &mut dyn mqtt_host::Flash)
    }
}

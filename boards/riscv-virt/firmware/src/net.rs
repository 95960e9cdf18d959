//! The network: virtio-net (QEMU's `virtio-net-device` on a virtio-mmio slot) under smoltcp's
//! TCP/IP, and the table of TCP connections behind the component's `socket` import.
//!
//! Addresses are the defaults of QEMU's user-mode network (slirp): this board is 10.0.2.15,
//! the gateway 10.0.2.2, which is also the machine QEMU runs on. There is no DNS and no TLS
//! yet: a broker is given by IPv4 address, in plain TCP.

use alloc::collections::BTreeMap;
use alloc::vec;
use alloc::vec::Vec;
use core::alloc::Layout;
use core::ptr::NonNull;

use smoltcp::iface::{Config, Interface, SocketHandle, SocketSet};
use smoltcp::phy::{self, DeviceCapabilities, Medium};
use smoltcp::socket::tcp;
use smoltcp::time::Instant;
use smoltcp::wire::{EthernetAddress, HardwareAddress, IpAddress, IpCidr, Ipv4Address};
use virtio_drivers::device::net::VirtIONet;
use virtio_drivers::transport::mmio::{MmioTransport, VirtIOHeader};
use virtio_drivers::transport::{DeviceType, Transport};
use virtio_drivers::{BufferDirection, Hal, PhysAddr, PAGE_SIZE};

use crate::machine;
use mqtt_device::{SocketError, SocketState};

const QUEUE_SIZE: usize = 16;
const RX_BUFFER: usize = 2048;
/// Per connection, each way: a few hundred 100-byte messages, and the whole of a large one.
const TCP_BUFFER: usize = 64 * 1024;
/// How long a closed connection waits for its peer to finish the close.
const CLOSE_TIMEOUT: smoltcp::time::Duration = smoltcp::time::Duration::from_secs(5);
/// Closes under way at most (see `Network::close`).
const MAX_CLOSING: usize = 4;
const ADDRESS: Ipv4Address = Ipv4Address::new(10, 0, 2, 15);
const GATEWAY: Ipv4Address = Ipv4Address::new(10, 0, 2, 2);
/// Offset of the device-specific configuration in a virtio-mmio slot, and of virtio-net's
/// `status` in it (after the 6-byte MAC).
const CONFIG_SPACE: usize = 0x100;
const NET_STATUS: usize = 6;

/// DMA for the virtqueues on a machine with no IOMMU and no MMU in use: physical addresses
/// are the addresses the firmware sees.
struct IdentityHal;

// SAFETY: memory from the global allocator, zeroed, page-aligned and never moved; addresses
// are identity-mapped (machine mode, no translation).
unsafe impl Hal for IdentityHal {
    fn dma_alloc(pages: usize, _direction: BufferDirection) -> (PhysAddr, NonNull<u8>) {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a DMA layout");
        // SAFETY: a non-zero size.
        let ptr = NonNull::new(unsafe { alloc::alloc::alloc_zeroed(layout) }).expect("memory for a virtqueue");
        (ptr.as_ptr() as PhysAddr, ptr)
    }

    unsafe fn dma_dealloc(_paddr: PhysAddr, vaddr: NonNull<u8>, pages: usize) -> i32 {
        let layout = Layout::from_size_align(pages * PAGE_SIZE, PAGE_SIZE).expect("a DMA layout");
        // SAFETY: allocated by `dma_alloc` with this layout.
        unsafe { alloc::alloc::dealloc(vaddr.as_ptr(), layout) };
        0
    }

    unsafe fn mmio_phys_to_virt(paddr: PhysAddr, _size: usize) -> NonNull<u8> {
        NonNull::new(paddr as *mut u8).expect("a non-null MMIO address")
    }

    unsafe fn share(buffer: NonNull<[u8]>, _direction: BufferDirection) -> PhysAddr {
        buffer.as_ptr().cast::<u8>() as PhysAddr
    }

    unsafe fn unshare(_paddr: PhysAddr, _buffer: NonNull<[u8]>, _direction: BufferDirection) {}
}

type Nic = VirtIONet<IdentityHal, MmioTransport<'static>, QUEUE_SIZE>;

/// smoltcp's view of the NIC.
struct Phy(Nic);

struct RxToken(Vec<u8>);
struct TxToken<'a>(&'a mut Nic);

impl phy::RxToken for RxToken {
    fn consume<R, F: FnOnce(&[u8]) -> R>(self, f: F) -> R {
        f(&self.0)
    }
}

impl phy::TxToken for TxToken<'_> {
    fn consume<R, F: FnOnce(&mut [u8]) -> R>(self, len: usize, f: F) -> R {
        let mut buffer = self.0.new_tx_buffer(len);
        let r = f(buffer.packet_mut());
        if let Err(e) = self.0.send(buffer) {
            // Lost like a frame on a wire: TCP sends it again.
            crate::println!("virtio-net: a frame not sent: {e:?}");
        }
        r
    }
}

impl phy::Device for Phy {
    type RxToken<'a> = RxToken;
    type TxToken<'a> = TxToken<'a>;

    fn receive(&mut self, _now: Instant) -> Option<(RxToken, TxToken<'_>)> {
        let buffer = self.0.receive().ok()?;
        // Copied out so that the buffer goes straight back to the device's queue.
        let frame = buffer.packet().to_vec();
        if let Err(e) = self.0.recycle_rx_buffer(buffer) {
            crate::println!("virtio-net: a receive buffer not given back: {e:?}");
        }
        Some((RxToken(frame), TxToken(&mut self.0)))
    }

    fn transmit(&mut self, _now: Instant) -> Option<TxToken<'_>> {
        self.0.can_send().then_some(TxToken(&mut self.0))
    }

    fn capabilities(&self) -> DeviceCapabilities {
        let mut caps = DeviceCapabilities::default();
        caps.medium = Medium::Ethernet;
        caps.max_transmission_unit = 1514;
        caps
    }
}

struct Connection {
    socket: SocketHandle,
    /// Whether the handshake ever completed: a connection that closes before it did was
    /// refused (or never answered), one that closes after was reset or closed.
    established: bool,
}

pub struct Network {
    phy: Phy,
    iface: Interface,
    sockets: SocketSet<'static>,
    connections: BTreeMap<u32, Connection>,
    /// Closed by the client, kept until the TCP close finishes.
    closing: Vec<SocketHandle>,
    next_handle: u32,
    next_port: u16,
    /// The device's configuration space, for the link status.
    config: usize,
}

impl Network {
    /// Finds the virtio-net device and brings the interface up.
    pub fn start() -> Result<Network, &'static str> {
        let (transport, slot) = find_nic().ok_or("no virtio-net device (start QEMU with -device virtio-net-device)")?;
        let base = machine::virtio_mmio(slot);
        let mut nic = Nic::new(transport, RX_BUFFER).map_err(|_| "virtio-net would not start")?;
        // A frame in, or one out, ends the hart's sleep (`machine::idle_until`).
        nic.enable_interrupts();
        machine::route_interrupt(machine::VIRTIO_IRQ_BASE + slot);
        let mac = nic.mac_address();
        let mut phy = Phy(nic);
        let mut config = Config::new(HardwareAddress::Ethernet(EthernetAddress(mac)));
        // For TCP's initial sequence numbers: the timer at start, which differs run to run.
        config.random_seed = machine::now_ms() ^ 0x9e37_79b9_7f4a_7c15;
        let mut iface = Interface::new(config, &mut phy, now());
        iface.update_ip_addrs(|a| a.push(IpCidr::new(IpAddress::Ipv4(ADDRESS), 24)).expect("room for one address"));
        iface.routes_mut().add_default_ipv4_route(GATEWAY).expect("room for one route");
        let next_port = 49152 + (machine::now_ms() % 8192) as u16;
        Ok(Network {
            phy,
            iface,
            sockets: SocketSet::new(Vec::new()),
            connections: BTreeMap::new(),
            closing: Vec::new(),
            next_handle: 1,
            next_port,
            config: base + CONFIG_SPACE,
        })
    }

    /// Moves frames between the NIC and the sockets; true if anything changed.
    pub fn poll(&mut self) -> bool {
        // The device's interrupt answered first, then the PLIC's: a frame that comes after
        // this is seen by the next poll, and wakes the hart if it sleeps first.
        self.phy.0.ack_interrupt();
        machine::settle_interrupts();
        let changed = self.iface.poll(now(), &mut self.phy, &mut self.sockets) == smoltcp::iface::PollResult::SocketStateChanged;
        let sockets = &mut self.sockets;
        self.closing.retain(|h| {
            let done = matches!(sockets.get::<tcp::Socket>(*h).state(), tcp::State::Closed | tcp::State::TimeWait);
            if done {
                sockets.remove(*h);
            }
            !done
        });
        changed
    }

    /// When smoltcp next has something to do of its own (a retransmission, a delayed ACK), in
    /// the machine timer's milliseconds; None: only when a frame comes.
    pub fn next_poll_ms(&mut self) -> Option<u64> {
        self.iface.poll_at(now(), &self.sockets).map(|at| at.total_millis().max(0) as u64)
    }

    /// Whether any connection has bytes to read or changed state the client has not seen.
    pub fn readable(&self) -> bool {
        self.connections.values().any(|c| {
            let s = self.sockets.get::<tcp::Socket>(c.socket);
            let connecting = matches!(s.state(), tcp::State::SynSent | tcp::State::SynReceived);
            s.can_recv() || (!s.may_recv() && !connecting) || (!c.established && s.state() == tcp::State::Established)
        })
    }

    /// The cable: QEMU's `set_link` turns it off and on.
    pub fn link_up(&self) -> bool {
        // SAFETY: virtio-net's `status` field in the device's configuration space.
        let status = unsafe { core::ptr::read_volatile((self.config + NET_STATUS) as *const u16) };
        status & 1 == 1
    }

    pub fn open(&mut self, address: Ipv4Address, port: u16) -> Result<u32, SocketError> {
        let socket = tcp::Socket::new(tcp::SocketBuffer::new(vec![0; TCP_BUFFER]), tcp::SocketBuffer::new(vec![0; TCP_BUFFER]));
        let handle = self.sockets.add(socket);
        let local = self.next_port;
        self.next_port = if local == u16::MAX { 49152 } else { local + 1 };
        let socket = self.sockets.get_mut::<tcp::Socket>(handle);
        socket.set_nagle_enabled(false);
        if socket.connect(self.iface.context(), (IpAddress::Ipv4(address), port), local).is_err() {
            self.sockets.remove(handle);
            return Err(SocketError::Unreachable);
        }
        let id = self.next_handle;
        self.next_handle = self.next_handle.wrapping_add(1).max(1);
        self.connections.insert(id, Connection { socket: handle, established: false });
        Ok(id)
    }

    pub fn status(&mut self, id: u32) -> Result<SocketState, SocketError> {
        let c = self.connections.get_mut(&id).ok_or(SocketError::BadHandle)?;
        match self.sockets.get::<tcp::Socket>(c.socket).state() {
            tcp::State::SynSent | tcp::State::SynReceived => Ok(SocketState::Connecting),
            tcp::State::Established => {
                c.established = true;
                Ok(SocketState::Open)
            }
            tcp::State::Closed if !c.established => Err(SocketError::Refused),
            tcp::State::Closed => Err(SocketError::Reset),
            // The peer sent FIN: what it sent before can still be read.
            tcp::State::CloseWait if c.established => Ok(SocketState::Open),
            _ => Err(SocketError::Closed),
        }
    }

    pub fn send(&mut self, id: u32, data: &[u8]) -> Result<u32, SocketError> {
        let c = self.connections.get(&id).ok_or(SocketError::BadHandle)?;
        let socket = self.sockets.get_mut::<tcp::Socket>(c.socket);
        if !socket.may_send() {
            return Err(ended(socket));
        }
        let n = socket.send_slice(data).map_err(|_| SocketError::Closed)?;
        Ok(n as u32)
    }

    pub fn recv(&mut self, id: u32, max: u32) -> Result<Vec<u8>, SocketError> {
        let c = self.connections.get(&id).ok_or(SocketError::BadHandle)?;
        let socket = self.sockets.get_mut::<tcp::Socket>(c.socket);
        if !socket.can_recv() {
            if !socket.may_recv() {
                return Err(ended(socket));
            }
            return Ok(Vec::new());
        }
        let mut data = vec![0; (max as usize).min(socket.recv_queue())];
        let n = socket.recv_slice(&mut data).map_err(|_| SocketError::Closed)?;
        data.truncate(n);
        Ok(data)
    }

    pub fn close(&mut self, id: u32) {
        let Some(c) = self.connections.remove(&id) else { return };
        let link = self.link_up();
        let socket = self.sockets.get_mut::<tcp::Socket>(c.socket);
        if link && matches!(socket.state(), tcp::State::Established | tcp::State::CloseWait) {
            // A FIN, and the peer's answer waited for, but not for ever.
            socket.set_timeout(Some(CLOSE_TIMEOUT));
            socket.close();
        } else {
            // Nothing to close gracefully, or no link to do it over: a reset.
            socket.abort();
        }
        self.closing.push(c.socket);
        // A socket and its buffers (128 KiB) each: bounded whatever the peers do. The oldest
        // close still waiting on its peer is cut short.
        while self.closing.len() > MAX_CLOSING {
            let oldest = self.closing.remove(0);
            self.sockets.remove(oldest);
        }
    }

    /// Connections open, and closes still under way: for the console.
    pub fn sockets(&self) -> (usize, usize) {
        (self.connections.len(), self.closing.len())
    }
}

/// Why a connection that can no longer carry data ended: reset (by the peer or an abort) or
/// closed.
fn ended(socket: &tcp::Socket) -> SocketError {
    if socket.state() == tcp::State::Closed {
        SocketError::Reset
    } else {
        SocketError::Closed
    }
}

fn now() -> Instant {
    Instant::from_millis(machine::now_ms() as i64)
}

/// The NIC's transport, and its virtio-mmio slot.
fn find_nic() -> Option<(MmioTransport<'static>, usize)> {
    (0..machine::VIRTIO_MMIO_SLOTS).find_map(|slot| {
        let header = NonNull::new(machine::virtio_mmio(slot) as *mut VirtIOHeader)?;
        // SAFETY: a virtio-mmio slot of `virt`, mapped for the firmware's whole life.
        let transport = unsafe { MmioTransport::new(header, machine::VIRTIO_MMIO_SIZE) }.ok()?;
        (transport.device_type() == DeviceType::Network).then_some((transport, slot))
    })
}

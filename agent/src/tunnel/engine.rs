//! The tunnel loop: TUN ⇄ one boringtun `Tunn` per site gateway ⇄ UDP on the gateway's fast
//! path (offloads, batches), timers every 100 ms, key reload, peer changes, status reports.
//!
//! Incoming datagrams are matched to their peer by the socket they arrive on: each peer has
//! its own UDP socket, `connect`ed to its gateway's endpoint, so the kernel delivers a
//! gateway's datagrams to that peer's socket only. This is chosen over one shared socket
//! demultiplexed by the receiver index of the WireGuard message because it needs no parsing
//! before decryption, cannot mistake one session's index for another's across a handshake or
//! a rekey (indexes change at each handshake, a handshake *initiation* carries none of ours),
//! drops a datagram from any other address in the kernel, and keeps the one-site path exactly
//! as it was (one connected socket, its batches). A gateway's endpoint is fixed (laptops dial
//! it), so the roaming a connected socket gives up is the gateway's, which never happens.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use sesame::fastpath::tun::{ReadError, TunReader, TunWriter};
use sesame::fastpath::udp::{self, Batch, BATCH};
use sesame::fastpath::OVERHEAD;
use x25519_dalek::{PublicKey, StaticSecret};

use super::peers::{self, PeerPlan, PeerSpec};
use super::tun::Tun;
use super::{log, Shared, RELOAD, STOP};
use crate::state::Paths;
use crate::status::{now_unix, SiteStatus, TunnelStatus};

const TIMER_TICK: Duration = Duration::from_millis(100);
const STATUS_TICK: Duration = Duration::from_millis(500);
/// What timers and handshakes write (at most an initiation, 148 bytes); packets are encrypted
/// and decrypted in the batches' own buffers.
const BUF: usize = 256;

/// One site's gateway: its session, its socket, its send batch.
struct Peer {
    spec: PeerSpec,
    udp: UdpSocket,
    tunn: Tunn,
    send: Box<Batch>,
    /// UDP GSO/GRO as the kernel accepted them on `udp`.
    offloads: udp::UdpOffloads,
}

impl Peer {
    fn new(
        spec: PeerSpec,
        secret: StaticSecret,
        keepalive: Option<u16>,
        slot: usize,
    ) -> std::io::Result<Peer> {
        let bind: SocketAddr = if spec.addr.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(std::io::Error::other)?;
        let udp = UdpSocket::bind(bind)?;
        udp.connect(spec.addr)?;
        udp.set_nonblocking(true)?;
        let offloads = udp::enable_offloads(udp.as_raw_fd());
        let index = rand_core::RngCore::next_u32(&mut rand_core::OsRng) >> 8;
        let tunn = Tunn::new(
            secret,
            spec.public_key.to_dalek(),
            None,
            keepalive,
            index,
            None,
        );
        Ok(Peer {
            spec,
            udp,
            tunn,
            send: Batch::with_offloads(slot, offloads),
            offloads,
        })
    }

    fn initiate(&mut self, out: &mut [u8], force: bool) {
        if let TunnResult::WriteToNetwork(packet) =
            self.tunn.format_handshake_initiation(out, force)
        {
            let _ = self.udp.send(packet);
        }
    }

    fn timers(&mut self, out: &mut [u8]) {
        match self.tunn.update_timers(out) {
            TunnResult::WriteToNetwork(packet) => {
                let _ = self.udp.send(packet);
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => self.initiate(out, false),
            _ => {}
        }
    }
}

pub struct Engine {
    pub tun: Tun,
    peers: Vec<Peer>,
    secret: StaticSecret,
    keepalive: Option<u16>,
    /// Largest datagram handled (MTU + WireGuard overhead, rounded up), as the gateway.
    slot: usize,
    /// The `Shared::generation` whose peers are running.
    generation: u64,
    pub shared: Arc<Mutex<Shared>>,
    pub paths: Paths,
    pub dropped: u64,
}

impl Engine {
    /// An engine with one peer per spec (the main gateway first).
    pub fn new(
        tun: Tun,
        specs: Vec<PeerSpec>,
        secret: StaticSecret,
        keepalive: Option<u16>,
        shared: Arc<Mutex<Shared>>,
        paths: Paths,
    ) -> std::io::Result<Engine> {
        let slot = (usize::from(tun.mtu) + 128).max(2048);
        let generation = shared.lock().map(|s| s.generation).unwrap_or(0);
        let mut engine = Engine {
            tun,
            peers: Vec::new(),
            secret,
            keepalive,
            slot,
            generation,
            shared,
            paths,
            dropped: 0,
        };
        for spec in specs {
            let peer = Peer::new(spec, engine.secret.clone(), keepalive, slot)?;
            engine.peers.push(peer);
        }
        Ok(engine)
    }

    /// Runs until SIGTERM/SIGINT. SIGHUP makes it call `reload` for a new private key.
    pub fn run(&mut self, mut reload: impl FnMut() -> Option<StaticSecret>) {
        let mut outbuf = vec![0u8; BUF];
        // The peers' sockets are alike (one kernel): the first one's offloads size the batch.
        let offloads = self.peers.first().map(|p| p.offloads).unwrap_or_default();
        let mut io = Io {
            reader: TunReader::new(self.tun.fd(), self.tun.offloads),
            writer: TunWriter::new(self.tun.fd(), self.tun.offloads),
            recv: Batch::with_offloads(self.slot, offloads),
        };
        for peer in &mut self.peers {
            peer.initiate(&mut outbuf, false);
        }
        let mut last_timer = Instant::now();
        let mut last_status = Instant::now();
        self.report("up");
        while !STOP.load(Ordering::SeqCst) {
            if RELOAD.swap(false, Ordering::SeqCst) {
                if let Some(secret) = reload() {
                    let public = PublicKey::from(&secret);
                    for peer in &mut self.peers {
                        peer.tunn.set_static_private(secret.clone(), public, None);
                        peer.initiate(&mut outbuf, true);
                    }
                    self.secret = secret;
                }
            }
            self.apply_peer_changes(&mut outbuf);
            self.wait_readable();
            self.pump_tun(&mut io);
            self.pump_network(&mut io);
            if last_timer.elapsed() >= TIMER_TICK {
                last_timer = Instant::now();
                for peer in &mut self.peers {
                    peer.timers(&mut outbuf);
                }
            }
            if last_status.elapsed() >= STATUS_TICK {
                last_status = Instant::now();
                self.report("up");
            }
        }
    }

    /// Takes the peers the refresh published (grants changed): a gateway still wanted keeps
    /// its session (only its networks change), a new site's gateway gets a new session and a
    /// handshake at once, a site no longer granted is closed. The others never pause.
    fn apply_peer_changes(&mut self, outbuf: &mut [u8]) {
        let wanted = match self.shared.lock() {
            Ok(s) if s.generation != self.generation => {
                self.generation = s.generation;
                s.peers.clone()
            }
            _ => return,
        };
        if wanted.is_empty() {
            return;
        }
        let current: Vec<PeerSpec> = self.peers.iter().map(|p| p.spec.clone()).collect();
        let plan = PeerPlan::between(&current, &wanted);
        let mut old: Vec<Option<Peer>> = std::mem::take(&mut self.peers)
            .into_iter()
            .map(Some)
            .collect();
        let mut next = Vec::with_capacity(wanted.len());
        for (i, spec) in plan.keep {
            if let Some(mut peer) = old.get_mut(i).and_then(Option::take) {
                peer.spec = spec;
                next.push(peer);
            }
        }
        for spec in plan.add {
            let endpoint = spec.endpoint.clone();
            match Peer::new(spec, self.secret.clone(), self.keepalive, self.slot) {
                Ok(mut peer) => {
                    log(&format!("site {} ({endpoint}) added", peer.spec.site));
                    peer.initiate(outbuf, false);
                    next.push(peer);
                }
                Err(err) => log(&format!("site gateway {endpoint}: UDP socket: {err}")),
            }
        }
        for peer in old.into_iter().flatten() {
            log(&format!(
                "site {} ({}) removed",
                peer.spec.site, peer.spec.endpoint
            ));
        }
        // The main gateway (the portal's first) stays first: unrouted packets go to it.
        next.sort_by_key(|p| wanted.iter().position(|w| w.same_gateway(&p.spec)));
        self.peers = next;
    }

    fn wait_readable(&self) {
        let mut fds: Vec<libc::pollfd> = std::iter::once(self.tun.fd())
            .chain(self.peers.iter().map(|p| p.udp.as_raw_fd()))
            .map(|fd| libc::pollfd {
                fd,
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        // SAFETY: `fds` is a valid array of pollfd for the duration of the call.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                TIMER_TICK.as_millis() as libc::c_int,
            )
        };
    }

    /// TUN → UDP: each read (a super-segment is split first) encrypted for the peer routing
    /// its destination, sent in batches.
    fn pump_tun(&mut self, io: &mut Io) {
        if self.peers.is_empty() {
            return;
        }
        for _ in 0..BATCH * 4 {
            let segments = match io.reader.read() {
                Ok(Some(segments)) => segments,
                Ok(None) => break,
                Err(ReadError::Split(_)) => {
                    self.dropped += 1;
                    continue;
                }
                Err(ReadError::Io(_)) => break,
            };
            for packet in segments.iter() {
                let which = match (self.peers.len(), peers::destination(packet)) {
                    (1, _) | (_, None) => 0,
                    (_, Some(dst)) => {
                        peers::choose(self.peers.iter().map(|p| &p.spec.allowed_ips[..]), dst)
                    }
                };
                let peer = &mut self.peers[which];
                // Never more than the TUN's MTU; boringtun would panic on too small a buffer.
                if packet.len() + OVERHEAD > peer.send.max() {
                    self.dropped += 1;
                    continue;
                }
                let udp = peer.udp.as_raw_fd();
                if peer.send.is_full() {
                    self.dropped += peer.send.flush(udp) as u64;
                }
                // Encrypted straight into the send batch, not copied there from a scratch
                // buffer (its buffers take a handshake initiation too: 2 KiB at least).
                let mut failed = false;
                let tunn = &mut peer.tunn;
                peer.send.push_with(peer.spec.addr, |slot| {
                    let start = slot.as_ptr();
                    match tunn.encapsulate(packet, slot) {
                        TunnResult::WriteToNetwork(datagram) => {
                            debug_assert_eq!(datagram.as_ptr(), start, "written at 0");
                            Some(datagram.len())
                        }
                        TunnResult::Err(_) => {
                            failed = true;
                            None
                        }
                        _ => None,
                    }
                });
                self.dropped += u64::from(failed);
            }
        }
        for peer in &mut self.peers {
            self.dropped += peer.send.flush(peer.udp.as_raw_fd()) as u64;
        }
    }

    /// UDP → TUN: each peer's socket in turn, a batch of datagrams decrypted, filtered (a
    /// source must be in that peer's networks), written to the TUN coalesced.
    fn pump_network(&mut self, io: &mut Io) {
        for peer in &mut self.peers {
            self.dropped += pump_peer(peer, io);
        }
    }

    pub fn report(&self, state: &str) {
        let shared = self.shared.lock().map(|s| s.clone()).unwrap_or_default();
        let sites: Vec<SiteStatus> = self
            .peers
            .iter()
            .map(|p| {
                let (handshake, tx, rx, _, _) = p.tunn.stats();
                SiteStatus {
                    site: p.spec.site.clone(),
                    endpoint: p.spec.endpoint.clone(),
                    last_handshake_age_secs: handshake.map(|d| d.as_secs()),
                    rx_bytes: rx as u64,
                    tx_bytes: tx as u64,
                    routes: p.spec.allowed_ips.iter().map(|n| n.to_string()).collect(),
                }
            })
            .collect();
        let status = TunnelStatus {
            pid: std::process::id() as i32,
            interface: self.tun.name.clone(),
            state: state.to_string(),
            error: None,
            updated_at: now_unix(),
            // The most recent of the peers' handshakes; the bytes of all of them.
            last_handshake_age_secs: sites.iter().filter_map(|s| s.last_handshake_age_secs).min(),
            rx_bytes: sites.iter().map(|s| s.rx_bytes).sum(),
            tx_bytes: sites.iter().map(|s| s.tx_bytes).sum(),
            routes: shared.routes.iter().map(|n| n.to_string()).collect(),
            revoked: shared.revoked,
            last_refresh_at: shared.last_refresh_at,
            refresh_error: shared.refresh_error,
            dropped_packets: self.dropped,
            sites,
        };
        let _ = status.save(&self.paths);
    }
}

/// One peer's received datagrams into the TUN; returns the packets dropped.
fn pump_peer(peer: &mut Peer, io: &mut Io) -> u64 {
    let udp = peer.udp.as_raw_fd();
    let mut dropped = 0u64;
    loop {
        let n = io.recv.recv(udp).unwrap_or(0);
        if n == 0 {
            break;
        }
        dropped += io.recv.truncated() as u64;
        for (_, mut datagram) in io.recv.datagrams() {
            loop {
                // Decrypted straight into the TUN writer's queue, kept there only when it
                // is a packet from this peer's networks; a handshake reply or a queued packet
                // for the gateway is copied to the send batch.
                let mut again = false;
                // Room for a queued packet flushed after a handshake reply, too.
                let room = datagram.len().max(peer.send.max());
                let Peer {
                    spec, tunn, send, ..
                } = &mut *peer;
                let allowed = |src: IpAddr| spec.allowed_ips.iter().any(|net| net.contains(&src));
                let endpoint = spec.addr;
                let written = io.writer.push_with(room, |buf| {
                    let start = buf.as_ptr();
                    match tunn.decapsulate(None, datagram, buf) {
                        TunnResult::WriteToNetwork(packet) => {
                            if send.is_full() {
                                dropped += send.flush(udp) as u64;
                            }
                            send.push(endpoint, packet);
                            again = true;
                            None
                        }
                        TunnResult::WriteToTunnelV4(packet, src) if allowed(IpAddr::V4(src)) => {
                            debug_assert_eq!(packet.as_ptr(), start, "written at 0");
                            Some(packet.len())
                        }
                        TunnResult::Done => None,
                        _ => {
                            dropped += 1;
                            None
                        }
                    }
                });
                dropped += u64::from(!written);
                if !again {
                    break;
                }
                datagram = &[];
            }
        }
        dropped += peer.send.flush(udp) as u64;
        dropped += io.writer.flush() as u64;
        if n < BATCH {
            break;
        }
    }
    dropped
}

/// The fast path's reused buffers shared by the peers (each peer has its own send batch).
struct Io {
    reader: TunReader,
    writer: TunWriter,
    recv: Box<Batch>,
}

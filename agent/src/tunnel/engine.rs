//! The tunnel loop: TUN ⇄ boringtun `Tunn` ⇄ UDP on the gateway's fast path (offloads, batches), timers every 100 ms, key reload, status reports.

use std::net::{IpAddr, SocketAddr, UdpSocket};
use std::os::fd::AsRawFd as _;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use boringtun::noise::errors::WireGuardError;
use boringtun::noise::{Tunn, TunnResult};
use ipnet::IpNet;
use sesame::fastpath::tun::{ReadError, TunReader, TunWriter};
use sesame::fastpath::udp::{self, Batch, BATCH};
use sesame::fastpath::OVERHEAD;
use x25519_dalek::{PublicKey, StaticSecret};

use super::tun::Tun;
use super::{Shared, RELOAD, STOP};
use crate::state::Paths;
use crate::status::{now_unix, TunnelStatus};

const TIMER_TICK: Duration = Duration::from_millis(100);
const STATUS_TICK: Duration = Duration::from_millis(500);
/// What timers and handshakes write (at most an initiation, 148 bytes); packets are encrypted
/// and decrypted in the batches' own buffers.
const BUF: usize = 256;

pub struct Engine {
    pub tun: Tun,
    pub udp: UdpSocket,
    endpoint: SocketAddr,
    /// UDP GSO/GRO as the kernel accepted them on `udp`.
    udp_offloads: udp::UdpOffloads,
    /// Largest datagram handled (MTU + WireGuard overhead, rounded up), as the gateway.
    slot: usize,
    pub tunn: Tunn,
    pub shared: Arc<Mutex<Shared>>,
    pub paths: Paths,
    pub dropped: u64,
}

impl Engine {
    pub fn new(
        tun: Tun,
        endpoint: SocketAddr,
        secret: StaticSecret,
        peer: PublicKey,
        keepalive: Option<u16>,
        shared: Arc<Mutex<Shared>>,
        paths: Paths,
    ) -> std::io::Result<Engine> {
        let bind: SocketAddr = if endpoint.is_ipv4() {
            "0.0.0.0:0"
        } else {
            "[::]:0"
        }
        .parse()
        .map_err(std::io::Error::other)?;
        let udp = UdpSocket::bind(bind)?;
        udp.connect(endpoint)?;
        udp.set_nonblocking(true)?;
        let udp_offloads = udp::enable_offloads(udp.as_raw_fd());
        let slot = (usize::from(tun.mtu) + 128).max(2048);
        let index = rand_core::RngCore::next_u32(&mut rand_core::OsRng) >> 8;
        let tunn = Tunn::new(secret, peer, None, keepalive, index, None);
        Ok(Engine {
            tun,
            udp,
            endpoint,
            udp_offloads,
            slot,
            tunn,
            shared,
            paths,
            dropped: 0,
        })
    }

    /// Runs until SIGTERM/SIGINT. SIGHUP makes it call `reload` for a new private key.
    pub fn run(&mut self, mut reload: impl FnMut() -> Option<StaticSecret>) {
        let mut outbuf = vec![0u8; BUF];
        let mut io = Io {
            reader: TunReader::new(self.tun.fd(), self.tun.offloads),
            writer: TunWriter::new(self.tun.fd(), self.tun.offloads),
            send: Batch::with_offloads(self.slot, self.udp_offloads),
            recv: Batch::with_offloads(self.slot, self.udp_offloads),
        };
        self.initiate(&mut outbuf, false);
        let mut last_timer = Instant::now();
        let mut last_status = Instant::now();
        self.report("up");
        while !STOP.load(Ordering::SeqCst) {
            if RELOAD.swap(false, Ordering::SeqCst) {
                if let Some(secret) = reload() {
                    let public = PublicKey::from(&secret);
                    self.tunn.set_static_private(secret, public, None);
                    self.initiate(&mut outbuf, true);
                }
            }
            self.wait_readable();
            self.pump_tun(&mut io);
            self.pump_network(&mut io);
            if last_timer.elapsed() >= TIMER_TICK {
                last_timer = Instant::now();
                self.timers(&mut outbuf);
            }
            if last_status.elapsed() >= STATUS_TICK {
                last_status = Instant::now();
                self.report("up");
            }
        }
    }

    fn initiate(&mut self, out: &mut [u8], force: bool) {
        if let TunnResult::WriteToNetwork(packet) =
            self.tunn.format_handshake_initiation(out, force)
        {
            let _ = self.udp.send(packet);
        }
    }

    fn wait_readable(&self) {
        let mut fds = [
            libc::pollfd {
                fd: self.tun.fd(),
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: std::os::fd::AsRawFd::as_raw_fd(&self.udp),
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        // SAFETY: `fds` is a valid array of two pollfd for the duration of the call.
        unsafe {
            libc::poll(
                fds.as_mut_ptr(),
                fds.len() as libc::nfds_t,
                TIMER_TICK.as_millis() as libc::c_int,
            )
        };
    }

    /// TUN → UDP: each read (a super-segment is split first) encrypted, sent in batches.
    fn pump_tun(&mut self, io: &mut Io) {
        let udp = self.udp.as_raw_fd();
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
                // Never more than the TUN's MTU; boringtun would panic on too small a buffer.
                if packet.len() + OVERHEAD > io.send.max() {
                    self.dropped += 1;
                    continue;
                }
                if io.send.is_full() {
                    self.dropped += io.send.flush(udp) as u64;
                }
                // Encrypted straight into the send batch, not copied there from a scratch
                // buffer (its buffers take a handshake initiation too: 2 KiB at least).
                let mut failed = false;
                let tunn = &mut self.tunn;
                io.send.push_with(self.endpoint, |slot| {
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
        self.dropped += io.send.flush(udp) as u64;
    }

    /// UDP → TUN: a batch of datagrams decrypted, filtered (the granted networks read once
    /// per batch), written to the TUN coalesced.
    fn pump_network(&mut self, io: &mut Io) {
        let udp = self.udp.as_raw_fd();
        let shared = Arc::clone(&self.shared);
        loop {
            let n = io.recv.recv(udp).unwrap_or(0);
            if n == 0 {
                break;
            }
            let granted = shared.lock();
            let allowed = |src: IpAddr| {
                granted
                    .as_ref()
                    .is_ok_and(|s| s.allowed.iter().any(|net: &IpNet| net.contains(&src)))
            };
            self.dropped += io.recv.truncated() as u64;
            for (_, mut datagram) in io.recv.datagrams() {
                loop {
                    // Decrypted straight into the TUN writer's queue, kept there only when it
                    // is a packet from a granted network; a handshake reply or a queued packet
                    // for the gateway is copied to the send batch.
                    let mut again = false;
                    // Room for a queued packet flushed after a handshake reply, too.
                    let room = datagram.len().max(io.send.max());
                    let (tunn, send, dropped) = (&mut self.tunn, &mut io.send, &mut self.dropped);
                    let endpoint = self.endpoint;
                    let written = io.writer.push_with(room, |buf| {
                        let start = buf.as_ptr();
                        match tunn.decapsulate(None, datagram, buf) {
                            TunnResult::WriteToNetwork(packet) => {
                                if send.is_full() {
                                    *dropped += send.flush(udp) as u64;
                                }
                                send.push(endpoint, packet);
                                again = true;
                                None
                            }
                            TunnResult::WriteToTunnelV4(packet, src)
                                if allowed(IpAddr::V4(src)) =>
                            {
                                debug_assert_eq!(packet.as_ptr(), start, "written at 0");
                                Some(packet.len())
                            }
                            TunnResult::Done => None,
                            _ => {
                                *dropped += 1;
                                None
                            }
                        }
                    });
                    self.dropped += u64::from(!written);
                    if !again {
                        break;
                    }
                    datagram = &[];
                }
            }
            drop(granted);
            self.dropped += io.send.flush(udp) as u64;
            self.dropped += io.writer.flush() as u64;
            if n < BATCH {
                break;
            }
        }
    }

    fn timers(&mut self, outbuf: &mut [u8]) {
        match self.tunn.update_timers(outbuf) {
            TunnResult::WriteToNetwork(packet) => {
                let _ = self.udp.send(packet);
            }
            TunnResult::Err(WireGuardError::ConnectionExpired) => self.initiate(outbuf, false),
            _ => {}
        }
    }

    pub fn report(&self, state: &str) {
        let (handshake, tx, rx, _, _) = self.tunn.stats();
        let shared = self.shared.lock().map(|s| s.clone()).unwrap_or_default();
        let status = TunnelStatus {
            pid: std::process::id() as i32,
            interface: self.tun.name.clone(),
            state: state.to_string(),
            error: None,
            updated_at: now_unix(),
            last_handshake_age_secs: handshake.map(|d| d.as_secs()),
            rx_bytes: rx as u64,
            tx_bytes: tx as u64,
            routes: shared.routes.iter().map(|n| n.to_string()).collect(),
            revoked: shared.revoked,
            last_refresh_at: shared.last_refresh_at,
            refresh_error: shared.refresh_error,
            dropped_packets: self.dropped,
        };
        let _ = status.save(&self.paths);
    }
}

/// The fast path's reused buffers for one engine.
struct Io {
    reader: TunReader,
    writer: TunWriter,
    send: Box<Batch>,
    recv: Box<Batch>,
}

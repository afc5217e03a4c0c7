//! A packet worker thread: polls its TUN queue and its UDP socket, drives the engine in batches.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::engine::{to_network_via, Engine, Output};
use super::flowlog::WorkerFlows;
use super::stats::DropReason;
use crate::fastpath::tun::{Offloads, ReadError, TunReader, TunWriter, READ_BUF};
use crate::fastpath::udp::{Batch, UdpOffloads, BATCH};

/// Poll timeout: bounds how late timers run and how fast shutdown is seen.
const POLL_MS: libc::c_int = 100;
/// Largest packet the engine handles (a split segment is at most the MTU; be generous).
const TUN_BUF: usize = READ_BUF;

/// The I/O side of the engine's decisions for one worker.
struct Shell<'a> {
    udp: RawFd,
    /// Decrypted packets wait here (coalesced with TSO) until the batch ends.
    tun: TunWriter,
    send: Box<Batch>,
    engine: &'a Engine,
    /// This worker's flow-audit tables (None: auditing off).
    flows: Option<WorkerFlows>,
}

impl Output for Shell<'_> {
    fn to_network(&mut self, dst: SocketAddr, datagram: &[u8]) {
        if self.send.is_full() {
            self.flush();
        }
        if !self.send.push(dst, datagram) {
            self.engine.drops.add(DropReason::IoError);
        }
    }

    fn to_network_with(
        &mut self,
        dst: SocketAddr,
        need: usize,
        scratch: &mut [u8],
        fill: impl FnOnce(&mut [u8]) -> Option<usize>,
    ) {
        if self.send.max() < need {
            // Larger than a send buffer: written in the engine's scratch, then refused there.
            return to_network_via(self, dst, scratch, fill);
        }
        if self.send.is_full() {
            self.flush();
        }
        self.send.push_with(dst, fill);
    }

    fn to_tun(&mut self, packet: &[u8]) {
        if !self.tun.push(packet) {
            self.engine.drops.add(DropReason::IoError);
        }
    }

    fn flows(&mut self) -> Option<&mut WorkerFlows> {
        self.flows.as_mut()
    }
}

impl Shell<'_> {
    fn flush(&mut self) {
        for _ in 0..self.send.flush(self.udp) {
            self.engine.drops.add(DropReason::IoError);
        }
        for _ in 0..self.tun.flush() {
            self.engine.drops.add(DropReason::IoError);
        }
    }
}

pub struct Worker {
    pub engine: Arc<Engine>,
    pub tun: OwnedFd,
    /// What the kernel accepted on the TUN (virtio_net_hdr, TSO, USO).
    pub offloads: Offloads,
    pub udp: OwnedFd,
    /// What the kernel accepted on the UDP socket (GSO, GRO).
    pub udp_offloads: UdpOffloads,
    pub stop: Arc<AtomicBool>,
    /// Largest UDP datagram accepted (MTU + WireGuard overhead, rounded up).
    pub slot: usize,
}

impl Worker {
    pub fn run(self) {
        let engine = &*self.engine;
        let mut recv = Batch::with_offloads(self.slot, self.udp_offloads);
        let mut reader = TunReader::new(self.tun.as_raw_fd(), self.offloads);
        let mut scratch = vec![0u8; TUN_BUF + 64];
        // Resident from the start (see `Batch::prefault`): fixed per worker, not per peer.
        recv.prefault();
        std::hint::black_box(&mut scratch[..]).fill(0);
        let tun_fd: RawFd = self.tun.as_raw_fd();
        let mut shell = Shell {
            udp: self.udp.as_raw_fd(),
            tun: TunWriter::new(tun_fd, self.offloads),
            send: {
                let mut send = Batch::with_offloads(self.slot, self.udp_offloads);
                send.prefault();
                send
            },
            engine,
            flows: engine
                .flow_log()
                .map(|log| WorkerFlows::new(log.clone(), Instant::now(), crate::time::now_ms())),
        };
        let mut fds = [
            libc::pollfd {
                fd: shell.udp,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: tun_fd,
                events: libc::POLLIN,
                revents: 0,
            },
        ];
        while !self.stop.load(Ordering::Relaxed) {
            // SAFETY: two valid pollfd entries we own.
            let rc = unsafe { libc::poll(fds.as_mut_ptr(), 2, POLL_MS) };
            let now = Instant::now();
            if rc > 0 {
                if fds[0].revents & libc::POLLIN != 0 {
                    // A few batches per wakeup, then give the TUN side its turn.
                    for _ in 0..4 {
                        let n = recv.recv(shell.udp).unwrap_or_default();
                        for _ in 0..recv.truncated() {
                            engine.drops.add(DropReason::Malformed);
                        }
                        // GRO messages are split back into their datagrams; one peer lock
                        // per run of a peer's packets.
                        engine.handle_datagrams(now, recv.datagrams(), &mut scratch, &mut shell);
                        shell.flush();
                        if n < BATCH {
                            break;
                        }
                    }
                }
                if fds[1].revents & libc::POLLIN != 0 {
                    for _ in 0..BATCH * 4 {
                        // A super-segment is split before the engine judges each packet.
                        match reader.read() {
                            Ok(Some(segments)) => {
                                for packet in segments.iter() {
                                    engine.handle_tun_packet(now, packet, &mut scratch, &mut shell);
                                }
                            }
                            Ok(None) => break,
                            Err(ReadError::Split(_)) => engine.drops.add(DropReason::TunMalformed),
                            Err(ReadError::Io(_)) => {
                                engine.drops.add(DropReason::IoError);
                                break;
                            }
                        }
                    }
                    shell.flush();
                }
            }
            engine.tick(now, &mut scratch, &mut shell);
            shell.flush();
            if let Some(f) = shell.flows.as_mut().filter(|f| f.due(now)) {
                f.roll(now, crate::time::now_ms());
            }
        }
        // The last, partial window is not lost at shutdown.
        if let Some(f) = shell.flows.as_mut() {
            f.flush();
        }
    }
}

//! A packet worker thread: polls its TUN queue and its UDP socket, drives the engine in batches.

use std::net::SocketAddr;
use std::os::fd::{AsRawFd as _, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use super::engine::{Engine, Output};
use super::flowlog::{wall_ms, WorkerFlows};
use super::stats::DropReason;
use super::tun;
use super::udp::{Batch, BATCH};

/// Poll timeout: bounds how late timers run and how fast shutdown is seen.
const POLL_MS: libc::c_int = 100;
/// Largest packet read from TUN (no offload: at most the MTU, but be generous).
const TUN_BUF: usize = 65_536;

/// The I/O side of the engine's decisions for one worker.
struct Shell<'a> {
    udp: RawFd,
    tun: RawFd,
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

    fn to_tun(&mut self, packet: &[u8]) {
        if tun::write(self.tun, packet).is_err() {
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
    }
}

pub struct Worker {
    pub engine: Arc<Engine>,
    pub tun: OwnedFd,
    pub udp: OwnedFd,
    pub stop: Arc<AtomicBool>,
    /// Largest UDP datagram accepted (MTU + WireGuard overhead, rounded up).
    pub slot: usize,
}

impl Worker {
    pub fn run(self) {
        let engine = &*self.engine;
        let mut recv = Batch::new(self.slot);
        let mut tun_buf = vec![0u8; TUN_BUF];
        let mut scratch = vec![0u8; TUN_BUF + 64];
        let mut shell = Shell {
            udp: self.udp.as_raw_fd(),
            tun: self.tun.as_raw_fd(),
            send: Batch::new(self.slot),
            engine,
            flows: engine
                .flow_log()
                .map(|log| WorkerFlows::new(log.clone(), Instant::now(), wall_ms())),
        };
        let mut fds = [
            libc::pollfd {
                fd: shell.udp,
                events: libc::POLLIN,
                revents: 0,
            },
            libc::pollfd {
                fd: shell.tun,
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
                        for i in 0..n {
                            let (from, data) = recv.get(i);
                            match from {
                                Some(from) if recv.lens[i] <= self.slot => engine.handle_datagram(
                                    now,
                                    from,
                                    data,
                                    &mut scratch,
                                    &mut shell,
                                ),
                                _ => engine.drops.add(DropReason::Malformed),
                            }
                        }
                        shell.flush();
                        if n < BATCH {
                            break;
                        }
                    }
                }
                if fds[1].revents & libc::POLLIN != 0 {
                    for _ in 0..BATCH * 4 {
                        match tun::read(shell.tun, &mut tun_buf) {
                            Ok(Some(n)) => engine.handle_tun_packet(
                                now,
                                &tun_buf[..n],
                                &mut scratch,
                                &mut shell,
                            ),
                            Ok(None) => break,
                            Err(_) => {
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
                f.roll(now, wall_ms());
            }
        }
        // The last, partial window is not lost at shutdown.
        if let Some(f) = shell.flows.as_mut() {
            f.flush();
        }
    }
}

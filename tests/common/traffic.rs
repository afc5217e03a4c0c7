//! Steady traffic through a tunnel, measured: a bounded `ping` and a rate-limited `iperf3` UDP
//! stream started in the background from a namespace, with what they lost at the end.
#![allow(dead_code)]

use std::process::{Child, Stdio};

use super::netns::Netns;

/// What a finished steady ping saw.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PingCount {
    pub sent: u32,
    pub received: u32,
    /// The longest run of consecutive echo requests left unanswered (a cut shows as one run).
    pub longest_gap: u32,
}

impl PingCount {
    pub fn lost(&self) -> u32 {
        self.sent - self.received
    }
}

/// `ping -c COUNT -i INTERVAL IP` from inside a namespace, in the background.
pub struct SteadyPing(Child);

impl SteadyPing {
    /// `interval` in seconds as ping takes it (`"0.2"`); replies count until 2 s after a request.
    pub fn start(ns: &Netns, ip: &str, count: u32, interval: &str) -> SteadyPing {
        let child = ns
            .command("ping")
            .args([
                "-n",
                "-i",
                interval,
                "-W",
                "2",
                "-c",
                &count.to_string(),
                ip,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start ping");
        SteadyPing(child)
    }

    /// Waits for the last request's deadline; the counts of ping's summary line and the longest
    /// run of unanswered sequence numbers.
    pub fn finish(self) -> PingCount {
        let out = self.0.wait_with_output().expect("wait for ping");
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let line = text
            .lines()
            .find(|l| l.contains("packets transmitted"))
            .unwrap_or_else(|| panic!("no ping summary: {text}"));
        let num = |word: &str| -> u32 {
            line.split(word)
                .next()
                .and_then(|before| {
                    before
                        .rsplit(|c: char| c == ',' || c.is_whitespace())
                        .find(|s| !s.is_empty())
                })
                .and_then(|n| n.parse().ok())
                .unwrap_or_else(|| panic!("no {word:?} in {line:?}"))
        };
        let sent = num(" packets transmitted");
        let mut answered = vec![false; sent as usize + 1];
        for seq in text.lines().filter_map(|l| {
            l.split_whitespace()
                .find_map(|w| w.strip_prefix("icmp_seq="))
                .and_then(|n| n.parse::<usize>().ok())
        }) {
            if let Some(a) = answered.get_mut(seq) {
                *a = true;
            }
        }
        let (mut longest, mut run) = (0, 0);
        for a in &answered[1..] {
            run = if *a { 0 } else { run + 1 };
            longest = longest.max(run);
        }
        PingCount {
            sent,
            received: num(" received"),
            longest_gap: longest,
        }
    }
}

/// What a finished UDP stream lost, as the iperf3 server counted it (sequence-number gaps).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UdpCount {
    pub sent: u64,
    pub lost: u64,
}

/// `iperf3 -c IP -u -b RATE -t SECS` from inside a namespace, in the background.
pub struct UdpStream(Child);

impl UdpStream {
    /// `rate` as iperf3 takes it (`"20M"`), datagrams of 1,200 bytes (under the tunnel's MTU).
    pub fn start(ns: &Netns, ip: &str, port: u16, secs: u64, rate: &str) -> UdpStream {
        let child = ns
            .command("iperf3")
            .args(["-c", ip, "-p", &port.to_string(), "-u", "-b", rate])
            .args(["-l", "1200", "-t", &secs.to_string(), "-J"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start iperf3");
        UdpStream(child)
    }

    /// Waits for the end of the stream: datagrams sent, and lost on the way.
    pub fn finish(self) -> UdpCount {
        let out = self.0.wait_with_output().expect("wait for iperf3");
        let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
            panic!(
                "iperf3 report unreadable ({e}): {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )
        });
        let end = &report["end"];
        let field = |section: &str, key: &str| {
            end[section][key]
                .as_u64()
                .unwrap_or_else(|| panic!("no end.{section}.{key} in the iperf3 report: {report}"))
        };
        UdpCount {
            sent: field("sum_sent", "packets"),
            lost: field("sum_received", "lost_packets"),
        }
    }
}

//! ICMP echo (ping) for central checks of kind `icmp`, IPv4 (ICMP) and IPv6 (ICMPv6).
//! An unprivileged ICMP socket (`SOCK_DGRAM`, where `net.ipv4.ping_group_range`, which
//! governs both families, includes the agent's group) is tried first, then a raw socket
//! (`CAP_NET_RAW`); the error says which to grant when neither opens. Blocking, on a thread of its own: requests are paced by the interval
//! and replies waited for with socket timeouts.

use std::io::ErrorKind;
use std::mem::MaybeUninit;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use socket2::{Domain, Protocol, Socket, Type};

/// How long replies are waited for after the last request.
const LAST_REPLY_WAIT: Duration = Duration::from_secs(1);
/// Payload bytes of each request.
const PAYLOAD: &[u8] = b"fleetmon-agent-icmp";

/// What a run of echo requests got back.
#[derive(Debug, Clone, PartialEq)]
pub struct Echoes {
    /// Requests sent.
    pub sent: u32,
    /// Round trips of the answered ones, in the order answers came.
    pub round_trips: Vec<Duration>,
    /// Why a request could not be sent (the first such error), if one could not.
    pub send_error: Option<String>,
    /// The socket was a raw one (`CAP_NET_RAW`), not an unprivileged echo socket.
    pub raw: bool,
}

impl Echoes {
    /// Unanswered requests, in percent of those meant to be sent.
    pub fn loss_percent(&self, count: u32) -> f64 {
        let answered = self.round_trips.len() as f64;
        (1.0 - answered / f64::from(count.max(1))) * 100.0
    }

    /// `3/3 replies, loss 0 %, rtt min/avg/max 0.041/0.052/0.070 ms`.
    pub fn summary(&self, count: u32) -> String {
        let replies = format!(
            "{}/{count} replies, loss {:.0} %",
            self.round_trips.len(),
            self.loss_percent(count)
        );
        match self.min_avg_max() {
            Some((min, avg, max)) => {
                format!("{replies}, rtt min/avg/max {min:.3}/{avg:.3}/{max:.3} ms")
            }
            None => replies,
        }
    }

    /// The round trips' minimum, average and maximum, in milliseconds.
    pub fn min_avg_max(&self) -> Option<(f64, f64, f64)> {
        let ms: Vec<f64> = self
            .round_trips
            .iter()
            .map(|d| d.as_secs_f64() * 1000.0)
            .collect();
        let min = ms.iter().copied().reduce(f64::min)?;
        let max = ms.iter().copied().reduce(f64::max)?;
        Some((min, ms.iter().sum::<f64>() / ms.len() as f64, max))
    }
}

/// Why no request could be sent at all.
#[derive(Debug, thiserror::Error)]
pub enum IcmpError {
    /// Neither kind of ICMP socket could be opened.
    #[error(
        "cannot open an ICMP socket: unprivileged echo sockets are not allowed for this group ({dgram}; net.ipv4.ping_group_range decides: e.g. sysctl -w net.ipv4.ping_group_range=\"0 2147483647\") and a raw socket needs CAP_NET_RAW ({raw}; e.g. AmbientCapabilities=CAP_NET_RAW in the agent's unit)"
    )]
    NoSocket {
        /// Why the unprivileged socket was refused.
        dgram: std::io::Error,
        /// Why the raw socket was refused.
        raw: std::io::Error,
    },
    /// The socket could not be set up.
    #[error("ICMP socket: {0}")]
    Socket(#[from] std::io::Error),
}

/// Sends `count` echo requests to `target`, `interval` apart, and collects the replies
/// that come before `deadline` (and at most [`LAST_REPLY_WAIT`] after the last request).
pub fn echo(
    target: IpAddr,
    count: u32,
    interval: Duration,
    deadline: Instant,
) -> Result<Echoes, IcmpError> {
    let family = Family::of(target);
    let (socket, raw) = open(family)?;
    // A raw socket sees every ICMP packet of the host: ours carry this identifier. An
    // unprivileged one has its own, set by the kernel, and sees only its replies.
    let ident: u16 = rand::random();
    let to = socket2::SockAddr::from(SocketAddr::new(target, 0));
    let mut sent_at: Vec<Option<Instant>> = vec![None; count as usize];
    let mut answered = vec![false; count as usize];
    let mut echoes = Echoes {
        sent: 0,
        round_trips: Vec::new(),
        send_error: None,
        raw,
    };
    let started = Instant::now();
    let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
    for seq in 0..count {
        let send_at = started + interval * seq;
        receive_until(
            &socket,
            Reader { family, raw, ident },
            send_at.min(deadline),
            &sent_at,
            &mut answered,
            &mut echoes,
            &mut buffer,
        )?;
        if Instant::now() >= deadline {
            break;
        }
        let packet = request(family, ident, seq as u16);
        match socket.send_to(&packet, &to) {
            Ok(_) => {
                sent_at[seq as usize] = Some(Instant::now());
                echoes.sent += 1;
            }
            Err(error) => {
                echoes.send_error.get_or_insert_with(|| error.to_string());
            }
        }
    }
    let last = (Instant::now() + LAST_REPLY_WAIT).min(deadline);
    receive_until(
        &socket,
        Reader { family, raw, ident },
        last,
        &sent_at,
        &mut answered,
        &mut echoes,
        &mut buffer,
    )?;
    Ok(echoes)
}

/// ICMP over IPv4, or ICMPv6: their echo types differ, and so do their raw sockets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    V4,
    V6,
}

impl Family {
    fn of(target: IpAddr) -> Family {
        match target {
            IpAddr::V4(_) => Family::V4,
            IpAddr::V6(_) => Family::V6,
        }
    }

    /// The echo request's and the echo reply's ICMP types.
    fn echo_types(self) -> (u8, u8) {
        match self {
            Family::V4 => (8, 0),
            Family::V6 => (128, 129),
        }
    }
}

/// An unprivileged ICMP socket, else a raw one (`true`).
fn open(family: Family) -> Result<(Socket, bool), IcmpError> {
    let (domain, protocol) = match family {
        Family::V4 => (Domain::IPV4, Protocol::ICMPV4),
        Family::V6 => (Domain::IPV6, Protocol::ICMPV6),
    };
    match Socket::new(domain, Type::DGRAM, Some(protocol)) {
        Ok(socket) => Ok((socket, false)),
        Err(dgram) => match Socket::new(domain, Type::RAW, Some(protocol)) {
            Ok(socket) => Ok((socket, true)),
            Err(raw) => Err(IcmpError::NoSocket { dgram, raw }),
        },
    }
}

/// How to read a socket's packets: its family, whether it is raw, and (raw) the
/// identifier of our requests.
#[derive(Debug, Clone, Copy)]
struct Reader {
    family: Family,
    raw: bool,
    ident: u16,
}

/// Reads replies until `until` (or until every sent request is answered).
fn receive_until(
    socket: &Socket,
    reader: Reader,
    until: Instant,
    sent_at: &[Option<Instant>],
    answered: &mut [bool],
    echoes: &mut Echoes,
    buffer: &mut [MaybeUninit<u8>; 1500],
) -> Result<(), IcmpError> {
    loop {
        let now = Instant::now();
        let all_in = sent_at
            .iter()
            .zip(answered.iter())
            .all(|(sent, done)| sent.is_none() || *done);
        if now >= until || (all_in && sent_at.iter().all(Option::is_some)) {
            return Ok(());
        }
        socket.set_read_timeout(Some((until - now).max(Duration::from_millis(1))))?;
        let read = match socket.recv(buffer) {
            Ok(read) => read,
            Err(error) if matches!(error.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Ok(());
            }
            Err(error) if error.kind() == ErrorKind::Interrupted => continue,
            Err(error) => return Err(error.into()),
        };
        let received = Instant::now();
        // SAFETY: recv initialised the first `read` bytes.
        let bytes: &[u8] =
            unsafe { std::slice::from_raw_parts(buffer.as_ptr().cast::<u8>(), read) };
        let Some((reply_ident, seq)) = echo_reply(bytes, reader.family, reader.raw) else {
            continue;
        };
        if reader.raw && reply_ident != reader.ident {
            continue;
        }
        let seq = usize::from(seq);
        if let (Some(Some(sent)), Some(done)) = (sent_at.get(seq), answered.get_mut(seq))
            && !*done
        {
            *done = true;
            echoes.round_trips.push(received - *sent);
        }
    }
}

/// An echo request: type (8, or 128 for ICMPv6), code 0, checksum, identifier,
/// sequence, payload. ICMPv6's checksum covers a pseudo-header of addresses the
/// kernel fills in, so the kernel computes it (for raw ICMPv6 sockets too, RFC 3542).
fn request(family: Family, ident: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![family.echo_types().0, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    if family == Family::V4 {
        let sum = checksum(&packet);
        packet[2..4].copy_from_slice(&sum.to_be_bytes());
    }
    packet
}

/// The identifier and sequence of an echo reply (type 0, or 129 for ICMPv6); a raw
/// IPv4 socket's packets start with the IPv4 header (an ICMPv6 socket's do not).
fn echo_reply(bytes: &[u8], family: Family, raw: bool) -> Option<(u16, u16)> {
    let icmp = if raw && family == Family::V4 {
        let header = usize::from(bytes.first()? & 0x0f) * 4;
        bytes.get(header..)?
    } else {
        bytes
    };
    if icmp.len() < 8 || icmp[0] != family.echo_types().1 {
        return None;
    }
    Some((
        u16::from_be_bytes([icmp[4], icmp[5]]),
        u16::from_be_bytes([icmp[6], icmp[7]]),
    ))
}

/// The Internet checksum (RFC 1071).
fn checksum(bytes: &[u8]) -> u16 {
    let mut sum: u32 = bytes
        .chunks(2)
        .map(|pair| u32::from(u16::from_be_bytes([pair[0], *pair.get(1).unwrap_or(&0)])))
        .sum();
    while sum >> 16 != 0 {
        sum = (sum & 0xffff) + (sum >> 16);
    }
    !(sum as u16)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_carries_a_valid_checksum_and_a_reply_is_read_back() {
        let packet = request(Family::V4, 0x1234, 7);
        assert_eq!(
            checksum(&packet),
            0,
            "a packet with its checksum sums to zero"
        );
        let mut reply = packet.clone();
        reply[0] = 0;
        assert_eq!(echo_reply(&reply, Family::V4, false), Some((0x1234, 7)));
        let mut with_ip = vec![0x45; 20];
        with_ip.extend_from_slice(&reply);
        assert_eq!(echo_reply(&with_ip, Family::V4, true), Some((0x1234, 7)));
        assert_eq!(
            echo_reply(&packet, Family::V4, false),
            None,
            "a request is no reply"
        );
        assert_eq!(echo_reply(&[0, 0], Family::V4, false), None);
        // ICMPv6: 128 out, 129 back, no IP header even on a raw socket.
        let v6 = request(Family::V6, 0x1234, 7);
        assert_eq!(v6[0], 128);
        let mut v6_reply = v6.clone();
        v6_reply[0] = 129;
        assert_eq!(echo_reply(&v6_reply, Family::V6, true), Some((0x1234, 7)));
        assert_eq!(echo_reply(&v6, Family::V6, true), None);
    }

    #[test]
    fn loopback_answers_every_request_over_ipv4_and_ipv6() {
        for target in [
            IpAddr::from(std::net::Ipv4Addr::LOCALHOST),
            IpAddr::from(std::net::Ipv6Addr::LOCALHOST),
        ] {
            let echoes = echo(
                target,
                3,
                Duration::from_millis(20),
                Instant::now() + Duration::from_secs(5),
            )
            .expect("an ICMP socket (root, or ping_group_range)");
            assert_eq!(
                (echoes.sent, echoes.round_trips.len()),
                (3, 3),
                "{target}: {echoes:?}"
            );
            assert!(
                echoes
                    .summary(3)
                    .starts_with("3/3 replies, loss 0 %, rtt min/avg/max "),
                "{target}"
            );
        }
    }

    /// Runs `ip` with each of `commands`, then pings each of `targets` twice, all on a
    /// thread in a network namespace of its own (unshare(2) moves only that thread).
    fn in_a_namespace_of_its_own(
        commands: &'static [&'static str],
        sysctl: Option<(&'static str, &'static str)>,
        targets: [&'static str; 2],
    ) -> Vec<Echoes> {
        let run = std::thread::spawn(move || {
            // SAFETY: unshare(2) on this thread only; it leaves the process's other
            // threads in their namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "unshare(CLONE_NEWNET): {} (the test runs as root)",
                    std::io::Error::last_os_error()
                );
            }
            for args in commands {
                let status = std::process::Command::new("ip")
                    .args(args.split(' '))
                    .status()
                    .expect("ip (iproute2)");
                assert!(status.success(), "ip {args}");
            }
            if let Some((path, value)) = sysctl {
                std::fs::write(path, value).expect("a sysctl of the test's namespace");
            }
            targets.map(|target| {
                echo(
                    target.parse().unwrap(),
                    2,
                    Duration::from_millis(20),
                    Instant::now() + Duration::from_secs(3),
                )
                .unwrap()
            })
        });
        run.join().unwrap().into()
    }

    /// Where `net.ipv4.ping_group_range` lets every group open unprivileged echo sockets
    /// (the sysctl is per namespace), both families use them rather than raw sockets,
    /// and loopback answers.
    #[test]
    fn unprivileged_echo_sockets_are_used_where_the_group_range_allows() {
        let runs = in_a_namespace_of_its_own(
            &["link set lo up"],
            Some(("/proc/sys/net/ipv4/ping_group_range", "0 2147483647")),
            ["127.0.0.1", "::1"],
        );
        for echoes in runs {
            assert_eq!(
                (echoes.raw, echoes.sent, echoes.round_trips.len()),
                (false, 2, 2),
                "{echoes:?}"
            );
        }
    }

    /// A host behind a link whose far end has no address answers nothing: every
    /// request is lost, over IPv4 and IPv6.
    #[test]
    fn a_host_that_never_answers_loses_every_request() {
        let runs = in_a_namespace_of_its_own(
            &[
                "link add v0 type veth peer name v1",
                "addr add 10.77.0.1/24 dev v0",
                "link set v0 up",
                "link set v1 up",
                "neigh add 10.77.0.2 lladdr 02:00:00:00:00:02 dev v0",
                "addr add fd77::1/64 dev v0 nodad",
                "neigh add fd77::2 lladdr 02:00:00:00:00:02 dev v0",
            ],
            None,
            ["10.77.0.2", "fd77::2"],
        );
        for echoes in runs {
            assert_eq!(
                (echoes.sent, echoes.round_trips.len()),
                (2, 0),
                "{echoes:?}"
            );
            assert_eq!(echoes.summary(2), "0/2 replies, loss 100 %");
        }
    }
}

//! ICMP echo (ping) for central checks of kind `icmp`, IPv4. An unprivileged ICMP
//! socket (`SOCK_DGRAM`, where `net.ipv4.ping_group_range` includes the agent's group)
//! is tried first, then a raw socket (`CAP_NET_RAW`); the error says which to grant when
//! neither opens. Blocking, on a thread of its own: requests are paced by the interval
//! and replies waited for with socket timeouts.

use std::io::ErrorKind;
use std::mem::MaybeUninit;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
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
    target: Ipv4Addr,
    count: u32,
    interval: Duration,
    deadline: Instant,
) -> Result<Echoes, IcmpError> {
    let (socket, raw) = open()?;
    // A raw socket sees every ICMP packet of the host: ours carry this identifier. An
    // unprivileged one has its own, set by the kernel, and sees only its replies.
    let ident: u16 = rand::random();
    let to = socket2::SockAddr::from(SocketAddr::V4(SocketAddrV4::new(target, 0)));
    let mut sent_at: Vec<Option<Instant>> = vec![None; count as usize];
    let mut answered = vec![false; count as usize];
    let mut echoes = Echoes {
        sent: 0,
        round_trips: Vec::new(),
        send_error: None,
    };
    let started = Instant::now();
    let mut buffer = [MaybeUninit::<u8>::uninit(); 1500];
    for seq in 0..count {
        let send_at = started + interval * seq;
        receive_until(
            &socket,
            raw,
            ident,
            send_at.min(deadline),
            &sent_at,
            &mut answered,
            &mut echoes,
            &mut buffer,
        )?;
        if Instant::now() >= deadline {
            break;
        }
        let packet = request(ident, seq as u16);
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
        raw,
        ident,
        last,
        &sent_at,
        &mut answered,
        &mut echoes,
        &mut buffer,
    )?;
    Ok(echoes)
}

/// An unprivileged ICMP socket, else a raw one (`true`).
fn open() -> Result<(Socket, bool), IcmpError> {
    match Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::ICMPV4)) {
        Ok(socket) => Ok((socket, false)),
        Err(dgram) => match Socket::new(Domain::IPV4, Type::RAW, Some(Protocol::ICMPV4)) {
            Ok(socket) => Ok((socket, true)),
            Err(raw) => Err(IcmpError::NoSocket { dgram, raw }),
        },
    }
}

/// Reads replies until `until` (or until every sent request is answered).
#[allow(clippy::too_many_arguments)]
fn receive_until(
    socket: &Socket,
    raw: bool,
    ident: u16,
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
        let Some((reply_ident, seq)) = echo_reply(bytes, raw) else {
            continue;
        };
        if raw && reply_ident != ident {
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

/// An echo request: type 8, code 0, checksum, identifier, sequence, payload.
fn request(ident: u16, seq: u16) -> Vec<u8> {
    let mut packet = vec![8, 0, 0, 0];
    packet.extend_from_slice(&ident.to_be_bytes());
    packet.extend_from_slice(&seq.to_be_bytes());
    packet.extend_from_slice(PAYLOAD);
    let sum = checksum(&packet);
    packet[2..4].copy_from_slice(&sum.to_be_bytes());
    packet
}

/// The identifier and sequence of an echo reply (type 0); a raw socket's packets start
/// with the IPv4 header.
fn echo_reply(bytes: &[u8], raw: bool) -> Option<(u16, u16)> {
    let icmp = if raw {
        let header = usize::from(bytes.first()? & 0x0f) * 4;
        bytes.get(header..)?
    } else {
        bytes
    };
    if icmp.len() < 8 || icmp[0] != 0 {
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
        let packet = request(0x1234, 7);
        assert_eq!(
            checksum(&packet),
            0,
            "a packet with its checksum sums to zero"
        );
        let mut reply = packet.clone();
        reply[0] = 0;
        assert_eq!(echo_reply(&reply, false), Some((0x1234, 7)));
        let mut with_ip = vec![0x45; 20];
        with_ip.extend_from_slice(&reply);
        assert_eq!(echo_reply(&with_ip, true), Some((0x1234, 7)));
        assert_eq!(echo_reply(&packet, false), None, "a request is no reply");
        assert_eq!(echo_reply(&[0, 0], false), None);
    }

    #[test]
    fn loopback_answers_every_request() {
        let echoes = echo(
            Ipv4Addr::LOCALHOST,
            3,
            Duration::from_millis(20),
            Instant::now() + Duration::from_secs(5),
        )
        .expect("an ICMP socket (root, or ping_group_range)");
        assert_eq!(
            (echoes.sent, echoes.round_trips.len()),
            (3, 3),
            "{echoes:?}"
        );
        assert!(
            echoes
                .summary(3)
                .starts_with("3/3 replies, loss 0 %, rtt min/avg/max ")
        );
    }

    /// In a network namespace of its own (the test's thread), a host behind a link
    /// whose far end has no address answers nothing: every request is lost.
    #[test]
    fn a_host_that_never_answers_loses_every_request() {
        let run = std::thread::spawn(|| {
            // SAFETY: unshare(2) on this thread only; it leaves the process's other
            // threads in their namespace.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                panic!(
                    "unshare(CLONE_NEWNET): {} (the test runs as root)",
                    std::io::Error::last_os_error()
                );
            }
            for args in [
                "link add v0 type veth peer name v1",
                "addr add 10.77.0.1/24 dev v0",
                "link set v0 up",
                "link set v1 up",
                "neigh add 10.77.0.2 lladdr 02:00:00:00:00:02 dev v0",
            ] {
                let status = std::process::Command::new("ip")
                    .args(args.split(' '))
                    .status()
                    .expect("ip (iproute2)");
                assert!(status.success(), "ip {args}");
            }
            echo(
                Ipv4Addr::new(10, 77, 0, 2),
                2,
                Duration::from_millis(20),
                Instant::now() + Duration::from_secs(3),
            )
        });
        let echoes = run.join().unwrap().unwrap();
        assert_eq!(
            (echoes.sent, echoes.round_trips.len()),
            (2, 0),
            "{echoes:?}"
        );
        assert_eq!(echoes.summary(2), "0/2 replies, loss 100 %");
    }
}

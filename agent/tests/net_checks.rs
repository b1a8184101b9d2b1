//! TCP and DNS central checks against real sockets and the system resolver: what a
//! result says when the banner matches, when it does not, when nothing listens, and
//! when a name resolves without an expected address.

use fleetmon::checks::ProbeDefaults;
use fleetmon::checks::pattern::Patterns;
use fleetmon::checks::site_from_definition;
use fleetmon::pb::{CheckDefinition, CheckFailure, DnsCheck, TcpCheck, check_definition};
use fleetmon_agent::site_prober::SiteProber;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn definition(kind: check_definition::Kind) -> CheckDefinition {
    CheckDefinition {
        id: "net".into(),
        version: 1,
        timeout_seconds: 2.0,
        kind: Some(kind),
        ..Default::default()
    }
}

async fn run(kind: check_definition::Kind) -> fleetmon::pb::SiteCheck {
    let site = site_from_definition(
        &definition(kind),
        &ProbeDefaults::default(),
        &mut Patterns::default(),
    )
    .unwrap();
    SiteProber::new(&[]).unwrap().check(&site).await
}

/// A server that answers every connection with a banner, then echoes one line.
async fn banner_server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = socket.write_all(b"SSH-2.0-fleetmon-test\r\n").await;
                let mut line = [0u8; 64];
                if let Ok(n) = socket.read(&mut line).await {
                    let _ = socket.write_all(&line[..n]).await;
                }
            });
        }
    });
    addr.to_string()
}

fn tcp(address: &str, send: &str, expect: &str) -> check_definition::Kind {
    check_definition::Kind::Tcp(TcpCheck {
        address: address.into(),
        send: send.into(),
        expect: expect.into(),
    })
}

#[tokio::test]
async fn a_tcp_check_reports_the_banner_it_matched_or_why_not() {
    let address = banner_server().await;
    let ok = run(tcp(&address, "", "^SSH-2\\.0-\\S+")).await;
    assert_eq!(
        (ok.ok, ok.matched_text.as_str(), ok.method.as_str()),
        (true, "SSH-2.0-fleetmon-test", "TCP")
    );
    assert_eq!(ok.url, format!("tcp://{address}"));
    assert_eq!((ok.check_id.as_str(), ok.check_version), ("net", 1));

    let echoed = run(tcp(&address, "PING\r\n", "PING")).await;
    assert!(echoed.ok, "{}", echoed.error_message);

    let wrong = run(tcp(&address, "", "^HTTP/1")).await;
    assert_eq!(wrong.failure, CheckFailure::RegexMismatch as i32);
    assert_eq!(wrong.regex_matched, Some(false));

    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed_address = closed.local_addr().unwrap().to_string();
    drop(closed);
    let refused = run(tcp(&closed_address, "", "")).await;
    assert_eq!(refused.failure, CheckFailure::Connect as i32);
    assert!(
        refused
            .error_message
            .starts_with(&format!("cannot connect to {closed_address}: ")),
        "{}",
        refused.error_message
    );
}

#[tokio::test]
async fn a_dns_check_passes_only_with_every_expected_address() {
    let dns = |expected: &[&str]| {
        check_definition::Kind::Dns(DnsCheck {
            name: "localhost".into(),
            expected_addresses: expected.iter().map(|s| (*s).to_owned()).collect(),
        })
    };
    let ok = run(dns(&["127.0.0.1"])).await;
    assert!(ok.ok, "{}", ok.error_message);
    assert!(ok.matched_text.contains("127.0.0.1"), "{}", ok.matched_text);
    assert_eq!(
        (ok.url.as_str(), ok.method.as_str()),
        ("dns://localhost", "DNS")
    );

    let missing = run(dns(&["192.0.2.7"])).await;
    assert_eq!(missing.failure, CheckFailure::AnswerMismatch as i32);
    assert!(
        missing.error_message.starts_with("localhost resolves to ")
            && missing.error_message.ends_with(" without 192.0.2.7"),
        "{}",
        missing.error_message
    );
}

#[test]
fn bad_tcp_and_dns_definitions_name_the_field() {
    let error = |kind| {
        site_from_definition(
            &definition(kind),
            &ProbeDefaults::default(),
            &mut Patterns::default(),
        )
        .unwrap_err()
        .to_string()
    };
    assert_eq!(
        error(tcp("db.example", "", "")),
        "`check.tcp.address` `db.example` is not host:port (e.g. db.example:5432 or [2001:db8::1]:22)"
    );
    assert_eq!(
        error(check_definition::Kind::Dns(DnsCheck {
            name: "bad name".into(),
            expected_addresses: vec![],
        })),
        "`check.dns.name` `bad name` is not a host name (letters, digits, `-` and dots)"
    );
    assert_eq!(
        error(check_definition::Kind::Dns(DnsCheck {
            name: "example.com".into(),
            expected_addresses: vec!["1.2.3".into()],
        })),
        "`check.dns.expected_addresses` `1.2.3` is not an IPv4 or IPv6 address"
    );
}

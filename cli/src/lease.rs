//! `switchyard lease SERVICE`: lease a node of SERVICE (look-aside) and
//! print the grant: node, direct address, token, expiry.

use std::fmt::Write as _;
use std::time::Duration;

use client::{Client, LeaseGrant};

use crate::admission::AdmissionArgs;

/// The `lease` command's arguments.
#[derive(clap::Args, Debug)]
pub(crate) struct LeaseArgs {
    /// Service name.
    service: String,
    /// Direct calls the lease serves before it ends.
    #[arg(long, default_value_t = 1)]
    max_calls: u32,
    /// End the lease after this long without a call, ms (0: never idles
    /// out).
    #[arg(long, default_value_t = 0)]
    idle_ms: u32,
    /// The lease's lifetime, ms (0: the gateway's `[leases] ttl_ms`).
    #[arg(long, default_value_t = 0)]
    ttl_ms: u32,
    #[command(flatten)]
    admission: AdmissionArgs,
    /// Print JSON (the grant's fields) instead of a table.
    #[arg(long)]
    json: bool,
}

/// Asks for the lease, printing queue positions to stderr while it waits,
/// then prints the grant.
///
/// # Errors
/// The gateway's refusal, or a connection error.
pub(crate) async fn run(client: &Client, args: LeaseArgs) -> anyhow::Result<()> {
    let options = args.admission.options();
    let service = args.service.as_str();
    let lease = client
        .lease(service)
        .options(options)
        .max_calls(args.max_calls)
        .idle(Duration::from_millis(u64::from(args.idle_ms)))
        .ttl(Duration::from_millis(u64::from(args.ttl_ms)))
        .on_event(|event| eprintln!("{}", crate::call::event_line(service, &event)))
        .await?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(lease.grant())?);
    } else {
        print!("{}", grant_table(lease.grant()));
    }
    Ok(())
}

/// The grant, one field a line.
pub(crate) fn grant_table(grant: &LeaseGrant) -> String {
    let mut out = String::new();
    let idle = if grant.idle_ms == 0 {
        "none".to_string()
    } else {
        format!("{} ms", grant.idle_ms)
    };
    let rows = [
        ("lease", grant.lease_id.clone()),
        ("node", grant.node_id.clone()),
        ("direct", grant.direct.clone()),
        (
            "expires",
            format!(
                "{} UTC (ttl {} ms)",
                crate::job::utc(grant.expires_unix_ms),
                grant.ttl_ms
            ),
        ),
        ("max calls", grant.max_calls.to_string()),
        ("idle", idle),
        ("policy", grant.policy.clone()),
        ("queue ms", format!("{:.2}", grant.queue_ms)),
        ("gateway", grant.gateway.clone()),
        ("token", grant.token.clone()),
    ];
    for (key, value) in rows {
        let _ = writeln!(out, "{key:<10} {value}");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn grant() -> LeaseGrant {
        LeaseGrant {
            lease_id: "0123456789abcdef0123456789abcdef".into(),
            node_id: "node-a".into(),
            direct: "10.0.0.5:7443".into(),
            token: "claims.mac".into(),
            ttl_ms: 30_000,
            expires_unix_ms: 1_796_415_927_500,
            max_calls: 10,
            idle_ms: 0,
            policy: "least-request".into(),
            queue_ms: 1.25,
            gateway: "gw-1".into(),
        }
    }

    #[test]
    fn the_grant_table_has_a_line_per_field() {
        let table = grant_table(&grant());
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 10, "{table}");
        assert_eq!(lines[0], "lease      0123456789abcdef0123456789abcdef");
        assert_eq!(lines[1], "node       node-a");
        assert_eq!(lines[2], "direct     10.0.0.5:7443");
        assert_eq!(
            lines[3],
            "expires    2026-12-04 20:25:27.500 UTC (ttl 30000 ms)"
        );
        assert_eq!(lines[4], "max calls  10");
        assert_eq!(lines[5], "idle       none");
        assert_eq!(lines[7], "queue ms   1.25");
        assert_eq!(lines[9], "token      claims.mac");
    }

    #[test]
    fn the_grant_json_names_the_wire_fields() {
        let value = serde_json::to_value(grant()).expect("json");
        for key in [
            "lease_id",
            "node_id",
            "direct",
            "token",
            "ttl_ms",
            "expires_unix_ms",
            "max_calls",
            "idle_ms",
            "policy",
            "queue_ms",
            "gateway",
        ] {
            assert!(value.get(key).is_some(), "{key} in {value}");
        }
        assert_eq!(value["direct"], "10.0.0.5:7443");
    }

    #[test]
    fn lease_flags_parse() {
        use clap::Parser;
        let cli = crate::Cli::try_parse_from([
            "switchyard",
            "lease",
            "echo",
            "--max-calls",
            "5",
            "--idle-ms",
            "2000",
            "--hint",
            "gpu=a100",
            "--priority",
            "-1",
            "--json",
        ])
        .expect("parses");
        let crate::Command::Lease(args) = cli.command else {
            panic!("not the lease command");
        };
        assert_eq!(args.service, "echo");
        assert_eq!((args.max_calls, args.idle_ms, args.ttl_ms), (5, 2000, 0));
        assert!(args.json);
        let options = args.admission.options();
        assert_eq!(options.hints, [("gpu".to_string(), "a100".to_string())]);
        assert_eq!(options.priority, -1);
        assert!(!options.realtime);
        assert_eq!(options.timeout, Duration::from_secs(30));
    }
}

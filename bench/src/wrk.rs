//! Read-path load with `wrk`, and the parsing of its report.

use anyhow::Context as _;
use std::process::Command;
use std::time::Duration;

#[derive(Debug, Clone, PartialEq)]
pub struct WrkResult {
    pub requests_per_s: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub requests: u64,
    /// Answers other than 2xx/3xx plus socket errors: a read path that fails
    /// fast would otherwise look fast.
    pub errors: u64,
}

pub struct WrkOptions {
    pub threads: u32,
    pub connections: u32,
    pub duration: Duration,
}

pub fn run(url: &str, token: &str, o: &WrkOptions) -> anyhow::Result<WrkResult> {
    let secs = o.duration.as_secs().max(1);
    let out = Command::new("wrk")
        .arg(format!("-t{}", o.threads))
        .arg(format!("-c{}", o.connections))
        .arg(format!("-d{secs}s"))
        // wrk's own per-request timeout: keeps the run bounded if the server stalls.
        .arg("--timeout")
        .arg("10s")
        .arg("--latency")
        .arg("-H")
        .arg(format!("Authorization: Bearer {token}"))
        .arg(url)
        .output()
        .context("running wrk (install it with apt-get install wrk)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        anyhow::bail!(
            "wrk failed ({}): {}{}",
            out.status,
            text,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse(&text).with_context(|| format!("unexpected wrk output:\n{text}"))
}

pub fn parse(report: &str) -> anyhow::Result<WrkResult> {
    let mut requests_per_s = None;
    let mut p50 = None;
    let mut p99 = None;
    let mut requests = None;
    let mut errors = 0;
    let mut in_distribution = false;
    for line in report.lines().map(str::trim) {
        if line.starts_with("Latency Distribution") {
            in_distribution = true;
            continue;
        }
        if in_distribution {
            match line.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["50%", v] => p50 = Some(duration_ms(v)?),
                ["99%", v] => p99 = Some(duration_ms(v)?),
                [p, _] if p.ends_with('%') => {}
                _ => in_distribution = false,
            }
        }
        if let Some(v) = line.strip_prefix("Requests/sec:") {
            requests_per_s = Some(v.trim().parse::<f64>()?);
        } else if let Some(v) = line.strip_prefix("Non-2xx or 3xx responses:") {
            errors += v.trim().parse::<u64>()?;
        } else if let Some(v) = line.strip_prefix("Socket errors:") {
            // "connect 0, read 0, write 0, timeout 0"
            for part in v.split(',') {
                if let Some(n) = part.split_whitespace().nth(1) {
                    errors += n.parse::<u64>()?;
                }
            }
        } else if line.contains(" requests in ") {
            requests = line.split_whitespace().next().and_then(|n| n.parse().ok());
        }
    }
    Ok(WrkResult {
        requests_per_s: requests_per_s.context("no Requests/sec line")?,
        p50_ms: p50.context("no 50% latency line")?,
        p99_ms: p99.context("no 99% latency line")?,
        requests: requests.context("no request count")?,
        errors,
    })
}

/// wrk prints durations as `812.00us`, `1.23ms`, `2.01s` or `1.50m`.
fn duration_ms(v: &str) -> anyhow::Result<f64> {
    let split = v
        .find(|c: char| c.is_ascii_alphabetic())
        .with_context(|| format!("no unit in {v:?}"))?;
    let (n, unit) = v.split_at(split);
    let n: f64 = n.parse()?;
    Ok(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        u => anyhow::bail!("unknown unit {u:?} in {v:?}"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const REPORT: &str = "Running 5s test @ http://127.0.0.1:28080/api/orders/abc
  2 threads and 16 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency     1.23ms  456.00us  10.00ms   80.00%
    Req/Sec     6.50k   500.00     7.00k    70.00%
  Latency Distribution
     50%  812.00us
     75%    1.40ms
     90%    1.80ms
     99%    2.01s
  65000 requests in 5.00s, 30.00MB read
  Socket errors: connect 0, read 2, write 0, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  13000.50
Transfer/sec:      6.00MB
";

    #[test]
    fn parses_a_report() {
        let r = parse(REPORT).unwrap();
        assert_eq!(r.requests_per_s, 13000.5);
        assert!((r.p50_ms - 0.812).abs() < 1e-9);
        assert!((r.p99_ms - 2010.0).abs() < 1e-9);
        assert_eq!(r.requests, 65000);
        assert_eq!(r.errors, 12);
    }

    #[test]
    fn refuses_a_report_without_figures() {
        assert!(parse("unable to connect to 127.0.0.1:1 Connection refused").is_err());
        assert!(duration_ms("12").is_err());
        assert!(duration_ms("1.5h").is_err());
    }
}

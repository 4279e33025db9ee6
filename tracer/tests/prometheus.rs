//! The dashboards and alert rules, checked against a real Prometheus.
//!
//! `real_prometheus_*` needs Debian's `prometheus` package (binaries `prometheus` and
//! `promtool`); it installs nothing and fails with a clear message when they are absent.
//! It is `#[ignore]`d so that a plain `cargo test` passes on a laptop; CI runs it with
//!
//! ```sh
//! apt-get install -y prometheus     # once; see ci/prometheus-setup.sh
//! cargo test -p tracer --test prometheus -- --include-ignored
//! ```
//!
//! Environment:
//! - `APTRACE_LEAK_SAMPLE`, `APTRACE_CLEAN_SAMPLE`: recordings to replay (default
//!   `samples/leak.aptr` and `samples/clean.aptr` when they exist, else streams generated
//!   here by `tracer::synth`);
//! - `PROMETHEUS`, `PROMTOOL`: the binaries (default: found on PATH, then /usr/bin).
//!
//! Only loopback addresses are used; every wait is bounded.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;
use tracer::metrics::Metrics;
use tracer::model::{Body, Event, LossSource, Task};
use tracer::profile::Profile;
use tracer::recording::{Header, ProbeState, ProbeStatus, Writer};
use tracer::synth::{Fault, Generator};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace")
        .to_path_buf()
}

fn dashboard() -> Value {
    let p = repo().join("dashboards/aptrace.json");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// (panel title, expr) of every target of every panel, rows included.
fn panel_exprs(dash: &Value) -> Vec<(String, String)> {
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            let title = p["title"].as_str().unwrap_or("?").to_string();
            for t in p["targets"].as_array().into_iter().flatten() {
                if let Some(e) = t["expr"].as_str() {
                    out.push((
                        format!("{title} [{}]", t["refId"].as_str().unwrap_or("?")),
                        e.to_string(),
                    ));
                }
            }
            walk(&p["panels"], out);
        }
    }
    let mut out = Vec::new();
    walk(&dash["panels"], &mut out);
    out
}

/// Grafana's variables as Grafana would expand them with "All" selected and a 1 s scrape.
fn substitute(expr: &str, dash: &Value) -> String {
    let mut vars: Vec<(String, String)> = vec![
        ("__rate_interval".into(), "10s".into()),
        ("__interval_ms".into(), "2000".into()),
        ("__interval".into(), "2s".into()),
        ("__range_s".into(), "120".into()),
        ("__range".into(), "2m".into()),
    ];
    for v in dash["templating"]["list"].as_array().into_iter().flatten() {
        let name = v["name"].as_str().unwrap_or_default().to_string();
        if v["type"] == "query" {
            let all = v["allValue"].as_str().unwrap_or(".*").to_string();
            vars.push((name, all));
        }
    }
    // Longest names first, so that $__interval_ms is not read as $__interval + "_ms".
    vars.sort_by_key(|(n, _)| std::cmp::Reverse(n.len()));
    let mut e = expr.to_string();
    for (n, v) in &vars {
        e = e
            .replace(&format!("${{{n}}}"), v)
            .replace(&format!("[[{n}]]"), v)
            .replace(&format!("${n}"), v);
    }
    assert!(
        !e.contains('$'),
        "an unknown Grafana variable is left in {e}"
    );
    e
}

fn alert_rules() -> Vec<(String, String)> {
    let p = repo().join("dashboards/alerts.yml");
    let text = std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    parse_rules(&text)
}

/// The (alert, expr) pairs of a rules file. A tiny reader for the subset alerts.yml uses
/// (`- alert: NAME`, then `expr:` either inline or as a `>-` block), to avoid a YAML crate.
fn parse_rules(text: &str) -> Vec<(String, String)> {
    let lines: Vec<&str> = text.lines().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut alert: Option<String> = None;
    while i < lines.len() {
        let t = lines[i].trim();
        if let Some(n) = t.strip_prefix("- alert:") {
            alert = Some(n.trim().to_string());
        } else if let (Some(rest), Some(a)) = (t.strip_prefix("expr:"), alert.as_ref()) {
            let rest = rest.trim();
            let expr = if rest.starts_with('>') || rest.starts_with('|') {
                let indent = |s: &str| s.len() - s.trim_start().len();
                let base = indent(lines[i]);
                let mut parts = Vec::new();
                while i + 1 < lines.len()
                    && (lines[i + 1].trim().is_empty() || indent(lines[i + 1]) > base)
                {
                    i += 1;
                    parts.push(lines[i].trim());
                }
                parts.join(" ")
            } else {
                rest.to_string()
            };
            out.push((a.clone(), expr));
            alert = None;
        }
        i += 1;
    }
    out
}

/// Every `aptrace_*` metric the dashboard and the rules name is one the exporter serves.
#[test]
fn dashboard_and_rules_name_only_exported_metrics() {
    let m = Metrics::new(&Profile::vfio_ap());
    m.set_probes(&[ProbeStatus {
        name: "vfio_ap_mdev_probe".into(),
        state: ProbeState::Attached,
        detail: String::new(),
    }]);
    let exposition = m.encode();
    let dash = dashboard();
    let mut exprs: Vec<(String, String)> = panel_exprs(&dash);
    assert!(exprs.len() >= 15, "only {} panel expressions", exprs.len());
    exprs.extend(alert_rules());
    assert!(alert_rules().len() >= 5);
    for (what, e) in &exprs {
        let mut rest = e.as_str();
        while let Some(at) = rest.find("aptrace_") {
            let name: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exposition
                    .lines()
                    .any(|l| l.starts_with(&format!("{name}{{"))
                        || l.starts_with(&format!("{name} "))),
                "{what}: {name} is not exported"
            );
            rest = &rest[at + name.len()..];
        }
    }
    // Every panel reads the datasource variable.
    fn check(panels: &Value) {
        for p in panels.as_array().into_iter().flatten() {
            if p["type"] != "row" {
                assert_eq!(p["datasource"]["uid"], "${datasource}", "{}", p["title"]);
            }
            check(&p["panels"]);
        }
    }
    check(&dash["panels"]);
    assert!(dash["templating"]["list"]
        .as_array()
        .unwrap()
        .iter()
        .any(|v| v["type"] == "datasource"));
}

// ---------------------------------------------------------------- the real Prometheus

fn find_binary(env: &str, name: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in
        std::env::split_paths(&path).chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
    {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!(
        "`{name}` not found (PATH, /usr/bin; or set {env}). This test needs Debian's `prometheus` \
         package: run `apt-get install -y prometheus` (see ci/prometheus-setup.sh); it installs nothing itself."
    );
}

/// A child process killed when dropped.
struct Proc {
    child: Child,
    what: String,
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Proc {
    fn assert_running(&mut self, log: &Path) {
        if let Ok(Some(st)) = self.child.try_wait() {
            panic!("{} exited ({st}); its log:\n{}", self.what, tail(log));
        }
    }
}

fn tail(p: &Path) -> String {
    let s = std::fs::read_to_string(p).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(40)..].join("\n")
}

fn probes(missing: &[&str]) -> Vec<ProbeStatus> {
    let mut v: Vec<ProbeStatus> = Profile::vfio_ap()
        .functions
        .iter()
        .map(|f| ProbeStatus {
            name: f.name.clone(),
            state: ProbeState::Attached,
            detail: String::new(),
        })
        .collect();
    for m in missing {
        v.push(ProbeStatus {
            name: (*m).to_string(),
            state: ProbeState::Missing,
            detail: "not in kallsyms (absent or inlined)".into(),
        });
    }
    v
}

/// A generated recording: `faults` in one life of three, and for the leak sample a burst
/// of lost events and one missing probe too.
fn generate(path: &Path, faults: &[Fault]) {
    let mut g = Generator::new(5);
    if !faults.is_empty() {
        g.fault_every = 3;
        g.faults = faults.to_vec();
    }
    for i in 0..12 {
        g.life(i, 1 + (i % 2) as u32);
    }
    let mut events: Vec<Event> = g.into_events();
    let faulty = !faults.is_empty();
    if faulty {
        let last = events.last().cloned().expect("events");
        events.push(Event {
            seq: last.seq + 1,
            ts_ns: last.ts_ns + 1000,
            cpu: 0,
            task: Task {
                pid: 0,
                tid: 0,
                comm: "".into(),
            },
            body: Body::Lost {
                count: 3,
                source: LossSource::RingBuffer,
            },
        });
    }
    let header = Header {
        arch: "s390x".into(),
        kernel_release: "synthetic".into(),
        hostname: "prometheus-test".into(),
        module: "vfio_ap".into(),
        profile: Profile::vfio_ap().to_toml(),
        probes: probes(if faulty {
            &["vfio_ap_mdev_reset_migration_state"]
        } else {
            &[]
        }),
        writer: tracer::writer_id(),
        ..Header::default()
    };
    let mut w = Writer::create(path, &header, true).expect("create sample");
    for e in &events {
        w.push(e).expect("write sample");
    }
    w.finish().expect("finish sample");
}

/// The sample to replay: the env variable, else samples/NAME.aptr, else a generated one.
fn sample(env: &str, name: &str, dir: &Path, faults: &[Fault]) -> (PathBuf, bool) {
    if let Some(p) = std::env::var_os(env) {
        // Relative to the workspace (cargo runs tests in the package's folder).
        let p = PathBuf::from(p);
        let p = if p.is_relative() && !p.exists() {
            repo().join(p)
        } else {
            p
        };
        return (p, false);
    }
    let p = repo().join("samples").join(format!("{name}.aptr"));
    if p.is_file() {
        return (p, false);
    }
    let p = dir.join(format!("{name}.aptr"));
    generate(&p, faults);
    (p, true)
}

/// Starts `aptrace replay FILE --metrics 127.0.0.1:0 --speed 0 --loop`; returns it and the
/// address it serves (read from its first line on stderr).
fn start_replay(file: &Path, log: &Path) -> (Proc, SocketAddr) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args([
            "replay",
            "--metrics",
            "127.0.0.1:0",
            "--speed",
            "0",
            "--loop",
        ])
        .arg(file)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn aptrace replay");
    let stderr = child.stderr.take().expect("stderr");
    let proc = Proc {
        child,
        what: format!("aptrace replay {}", file.display()),
    };
    let (tx, rx) = mpsc::channel();
    let log_path = log.to_path_buf();
    let log = log.to_path_buf();
    std::thread::spawn(move || {
        let mut f = std::fs::File::create(&log).ok();
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if let Some(f) = f.as_mut() {
                let _ = writeln!(f, "{line}");
            }
            if let Some(rest) = line.split("metrics at http://").nth(1) {
                let _ = tx.send(rest.trim_end_matches("/metrics").to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|_| {
            std::thread::sleep(Duration::from_millis(200));
            panic!(
                "{} did not say where it serves metrics:\n{}",
                proc.what,
                tail(&log_path)
            )
        });
    (proc, addr.parse().expect("address"))
}

/// One HTTP/1.0 GET on loopback; returns (status, body).
fn http_get(addr: SocketAddr, path: &str) -> std::io::Result<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    s.set_read_timeout(Some(Duration::from_secs(20)))?;
    s.set_write_timeout(Some(Duration::from_secs(5)))?;
    write!(
        s,
        "GET {path} HTTP/1.0\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw)?;
    let text = String::from_utf8_lossy(&raw).to_string();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    Ok((status, body.to_string()))
}

fn urlencode(s: &str) -> String {
    s.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// An instant query; panics on an API error (a bad expression).
fn query(prom: SocketAddr, expr: &str) -> Vec<Value> {
    let (status, body) = http_get(prom, &format!("/api/v1/query?query={}", urlencode(expr)))
        .unwrap_or_else(|e| panic!("query {expr}: {e}"));
    let v: Value = serde_json::from_str(&body)
        .unwrap_or_else(|e| panic!("query {expr}: HTTP {status}: {e}: {body}"));
    assert_eq!(v["status"], "success", "query {expr}: {body}");
    match &v["data"]["result"] {
        Value::Array(a) => a.clone(),
        Value::Null => Vec::new(),
        // A scalar or string result is one value.
        other => vec![other.clone()],
    }
}

fn wait_for<T>(what: &str, timeout: Duration, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(t) = f() {
            return t;
        }
        if start.elapsed() > timeout {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .expect("bind")
        .local_addr()
        .expect("addr")
        .port()
}

fn start_prometheus(dir: &Path, targets: &[(&str, SocketAddr)]) -> (Proc, SocketAddr, PathBuf) {
    let bin = find_binary("PROMETHEUS", "prometheus");
    let rules = repo().join("dashboards/alerts.yml");
    let mut cfg = format!(
        "global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\n  evaluation_interval: 1s\nrule_files:\n  - {:?}\nscrape_configs:\n",
        rules.display().to_string()
    );
    for (job, addr) in targets {
        cfg.push_str(&format!(
            "  - job_name: {job}\n    static_configs:\n      - targets: [\"{addr}\"]\n"
        ));
    }
    let cfg_path = dir.join("prometheus.yml");
    std::fs::write(&cfg_path, cfg).expect("write prometheus.yml");
    let log = dir.join("prometheus.log");
    // A port picked free can be taken before Prometheus binds it: try a few.
    for attempt in 0..3 {
        let addr: SocketAddr = format!("127.0.0.1:{}", free_port()).parse().unwrap();
        let child = Command::new(&bin)
            .arg(format!("--config.file={}", cfg_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join(format!("data{attempt}")).display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .arg("--log.level=warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log"))
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", bin.display()));
        let mut p = Proc {
            child,
            what: format!("{} on {addr}", bin.display()),
        };
        let start = Instant::now();
        while start.elapsed() < Duration::from_secs(60) {
            if let Ok(Some(_)) = p.child.try_wait() {
                break;
            }
            if matches!(http_get(addr, "/-/ready"), Ok((200, _))) {
                return (p, addr, log);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
        eprintln!("prometheus attempt {attempt} failed:\n{}", tail(&log));
    }
    panic!("Prometheus did not become ready; its log:\n{}", tail(&log));
}

/// Alerts Prometheus holds now: (alertname, job, state).
fn alerts(prom: SocketAddr) -> Vec<(String, String, String)> {
    let (_, body) = http_get(prom, "/api/v1/alerts").expect("alerts");
    let v: Value = serde_json::from_str(&body).expect("alerts json");
    v["data"]["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            (
                a["labels"]["alertname"]
                    .as_str()
                    .unwrap_or_default()
                    .to_string(),
                a["labels"]["job"].as_str().unwrap_or_default().to_string(),
                a["state"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

#[test]
#[ignore = "needs Debian's prometheus package: cargo test -p tracer --test prometheus -- --include-ignored"]
fn promtool_accepts_the_rules() {
    let promtool = find_binary("PROMTOOL", "promtool");
    let out = Command::new(&promtool)
        .args(["check", "rules"])
        .arg(repo().join("dashboards/alerts.yml"))
        .output()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", promtool.display()));
    assert!(
        out.status.success(),
        "promtool check rules failed:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
#[ignore = "needs Debian's prometheus package: cargo test -p tracer --test prometheus -- --include-ignored"]
fn real_prometheus_fills_every_panel_and_fires_the_leak_alert_only_for_the_leak_sample() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (leak, leak_generated) = sample("APTRACE_LEAK_SAMPLE", "leak", dir.path(), &[Fault::Leak]);
    let (clean, _) = sample("APTRACE_CLEAN_SAMPLE", "clean", dir.path(), &[]);
    eprintln!(
        "samples: leak {}, clean {}",
        leak.display(),
        clean.display()
    );

    let has_probe_list = [&leak, &clean].iter().any(|p| {
        tracer::input::load(p)
            .map(|l| !l.header.probes.is_empty())
            .unwrap_or(false)
    });
    if !has_probe_list {
        eprintln!("note: neither sample lists its probes; the per-probe panel may be empty");
    }
    let (mut leak_proc, leak_addr) = start_replay(&leak, &dir.path().join("replay-leak.log"));
    let (mut clean_proc, clean_addr) = start_replay(&clean, &dir.path().join("replay-clean.log"));
    let (status, body) = http_get(leak_addr, "/metrics").expect("scrape aptrace");
    assert_eq!(status, 200);
    assert!(
        body.contains("aptrace_findings_total{kind=\"leak\",severity=\"error\"}"),
        "{body}"
    );

    let (mut prom, prom_addr, prom_log) = start_prometheus(
        dir.path(),
        &[("aptrace-leak", leak_addr), ("aptrace-clean", clean_addr)],
    );

    // Enough scrapes of both for rate() over $__rate_interval.
    for job in ["aptrace-leak", "aptrace-clean"] {
        wait_for(
            &format!("8 successful scrapes of {job}"),
            Duration::from_secs(90),
            || {
                prom.assert_running(&prom_log);
                let r = query(
                    prom_addr,
                    &format!("sum_over_time(up{{job=\"{job}\"}}[1m])"),
                );
                let n: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
                (n >= 8.0).then_some(())
            },
        );
    }
    leak_proc.assert_running(&dir.path().join("replay-leak.log"));
    clean_proc.assert_running(&dir.path().join("replay-clean.log"));

    // Every panel expression returns data.
    let dash = dashboard();
    let mut empty = Vec::new();
    let exprs = panel_exprs(&dash);
    for (title, expr) in &exprs {
        let e = substitute(expr, &dash);
        let r = query(prom_addr, &e);
        // A recording without a probe list (synthetic, JSON lines) has no per-probe status.
        if r.is_empty() && (has_probe_list || !e.contains("aptrace_probe_attached")) {
            empty.push(format!("{title}: {e}"));
        }
    }
    assert!(
        empty.is_empty(),
        "panels without data:\n{}",
        empty.join("\n")
    );
    eprintln!("{} panel expressions returned data", exprs.len());

    // The migration histograms reached Prometheus with the clean sample's sessions in them
    // (its mdevs go through STOP_COPY and back), as _count, _sum and cumulative _bucket.
    let saved = wait_for(
        "migration sessions of aptrace-clean in Prometheus",
        Duration::from_secs(30),
        || {
            let r = query(
                prom_addr,
                "sum(aptrace_migration_duration_seconds_count{job=\"aptrace-clean\",direction=\"save\"})",
            );
            let n: f64 = r.first()?["value"][1].as_str()?.parse().ok()?;
            (n > 0.0).then_some(n)
        },
    );
    let inf = query(
        prom_addr,
        "sum(aptrace_migration_stopped_seconds_bucket{job=\"aptrace-clean\",direction=\"save\",le=\"+Inf\"})",
    );
    let stopped: f64 = inf[0]["value"][1]
        .as_str()
        .unwrap_or("0")
        .parse()
        .unwrap_or(0.0);
    assert!(stopped > 0.0, "stop times: {inf:?}");
    eprintln!("save sessions counted: {saved}");

    // Every alert expression evaluates; the leak alert's selects the leak job only.
    let mut by_alert: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (alert, expr) in alert_rules() {
        let jobs = query(prom_addr, &expr)
            .iter()
            .filter_map(|s| s["metric"]["job"].as_str().map(str::to_string))
            .collect();
        by_alert.insert(alert, jobs);
    }
    eprintln!("alert expressions: {by_alert:?}");
    let leak_jobs = &by_alert["AptraceLeak"];
    assert!(
        leak_jobs.iter().any(|j| j == "aptrace-leak"),
        "AptraceLeak does not select the leak sample: {by_alert:?}"
    );
    for (alert, jobs) in &by_alert {
        if [
            "AptraceLeak",
            "AptraceSelfDeadlock",
            "AptraceLockNotHeld",
            "AptraceDriverFault",
        ]
        .contains(&alert.as_str())
        {
            assert!(
                !jobs.iter().any(|j| j == "aptrace-clean"),
                "{alert} selects the clean sample: {by_alert:?}"
            );
        }
    }
    if leak_generated {
        for a in ["AptraceEventsLost", "AptraceProbesMissing"] {
            assert!(
                by_alert[a].iter().any(|j| j == "aptrace-leak"),
                "{a} does not select the leak sample: {by_alert:?}"
            );
        }
    }

    // The rule engine agrees: AptraceLeak fires for the leak sample, nothing for the clean one.
    let firing = wait_for(
        "AptraceLeak firing for aptrace-leak",
        Duration::from_secs(60),
        || {
            prom.assert_running(&prom_log);
            let a = alerts(prom_addr);
            a.iter()
                .any(|(n, j, s)| n == "AptraceLeak" && j == "aptrace-leak" && s == "firing")
                .then_some(a)
        },
    );
    eprintln!("alerts: {firing:?}");
    // A few more evaluations, then the clean sample must still have no finding alert.
    std::thread::sleep(Duration::from_secs(3));
    let now = alerts(prom_addr);
    let clean_alerts: Vec<_> = now
        .iter()
        .filter(|(n, j, _)| {
            j == "aptrace-clean" && n != "AptraceProbesMissing" && n != "AptraceEventsLost"
        })
        .collect();
    assert!(
        clean_alerts.is_empty(),
        "alerts for the clean sample: {clean_alerts:?}"
    );

    // Counters never went backwards across replay loops (restarts of the auditor).
    let (_, body) = http_get(prom_addr, "/api/v1/label/__name__/values").expect("names");
    let names: Value = serde_json::from_str(&body).expect("names json");
    let counters: Vec<&str> = names["data"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .filter(|n| {
            n.starts_with("aptrace_")
                && ["_total", "_bucket", "_count", "_sum"]
                    .iter()
                    .any(|s| n.ends_with(s))
        })
        .collect();
    assert!(counters.len() >= 10, "{counters:?}");
    for name in counters {
        let r = query(prom_addr, &format!("sum(resets({name}[5m]))"));
        let n: f64 = r[0]["value"][1]
            .as_str()
            .unwrap_or("1")
            .parse()
            .unwrap_or(1.0);
        assert_eq!(n, 0.0, "{name} went backwards");
    }
    let restarts = query(prom_addr, "max(aptrace_auditor_restarts_total)");
    eprintln!("auditor restarts: {}", restarts[0]["value"][1]);
}

#[test]
fn the_rules_reader_reads_inline_and_block_expressions() {
    let r = parse_rules(
        "groups:\n  - name: x\n    rules:\n      - alert: A\n        expr: up == 0\n      - alert: B\n        expr: >-\n          sum(x)\n            > 0\n        for: 1m\n",
    );
    assert_eq!(
        r,
        vec![
            ("A".into(), "up == 0".into()),
            ("B".into(), "sum(x) > 0".into())
        ]
    );
}

use std::collections::BTreeMap;
use std::io::{Read, Write};

use super::*;
use crate::synth::{Fault, Generator};

/// series (name and labels) → value.
fn parse(text: &str) -> BTreeMap<String, f64> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| {
            let (k, v) = l.rsplit_once(' ').expect("a value");
            (k.to_string(), v.parse::<f64>().unwrap_or(f64::NAN))
        })
        .collect()
}

fn leak_events() -> Vec<Event> {
    let mut g = Generator::new(11);
    g.fault_every = 3;
    g.faults = vec![Fault::Leak];
    for i in 0..12 {
        g.life(i, 1 + (i % 2) as u32);
    }
    g.into_events()
}

fn feed(m: &Arc<Metrics>, events: &[Event]) -> Auditor {
    let mut p = crate::pipeline::Pipeline::new(Auditor::new(Profile::vfio_ap()), None);
    p.add_sink(Box::new(m.sink()));
    for e in events {
        p.push_ordered(e.clone());
    }
    let (a, _) = p.finish();
    m.refresh(&a);
    a
}

#[test]
fn every_kind_severity_and_phase_exists_from_the_start() {
    let m = Metrics::new(&Profile::vfio_ap());
    let s = parse(&m.encode());
    for k in Kind::ALL {
        let key = format!(
            "aptrace_findings_total{{kind=\"{}\",severity=\"{}\"}}",
            k.name(),
            k.severity().name()
        );
        assert_eq!(s.get(&key), Some(&0.0), "{key} missing");
    }
    for sev in Severity::ALL {
        assert!(s.contains_key(&format!(
            "aptrace_findings_by_severity_total{{severity=\"{}\"}}",
            sev.name()
        )));
    }
    for p in Phase::ALL {
        assert_eq!(
            s.get(&format!("aptrace_mdevs{{phase=\"{}\"}}", p.name())),
            Some(&0.0)
        );
    }
    for st in ["attached", "missing", "clone", "failed", "degraded"] {
        assert_eq!(
            s.get(&format!("aptrace_probes{{state=\"{st}\"}}")),
            Some(&0.0)
        );
    }
    assert!(s.contains_key("aptrace_migration_transitions_total{from=\"RUNNING\",to=\"STOP\"}"));
    assert!(s.contains_key(
        "aptrace_function_latency_seconds_bucket{le=\"+Inf\",function=\"vfio_ap_mdev_probe\"}"
    ));
    assert_eq!(s.get("aptrace_lost_events_total"), Some(&0.0));
    assert!(m.encode().ends_with("# EOF\n"));
}

#[test]
fn a_leak_stream_is_counted_and_has_no_pointer_or_pid_labels() {
    let m = Metrics::new(&Profile::vfio_ap());
    m.set_probes(&[ProbeStatus {
        name: "vfio_ap_mdev_probe".into(),
        state: ProbeState::Attached,
        detail: String::new(),
    }]);
    let events = leak_events();
    let a = feed(&m, &events);
    let text = m.encode();
    let s = parse(&text);
    let leaks = a.findings().iter().filter(|f| f.kind == Kind::Leak).count() as f64;
    assert!(leaks > 0.0);
    assert_eq!(
        s["aptrace_findings_total{kind=\"leak\",severity=\"error\"}"],
        leaks
    );
    let total: f64 = s
        .iter()
        .filter(|(k, _)| k.starts_with("aptrace_events_total{"))
        .map(|(_, v)| v)
        .sum();
    assert_eq!(total, events.len() as f64);
    assert!(s["aptrace_migration_transitions_total{from=\"STOP\",to=\"STOP_COPY\"}"] > 0.0);
    assert!(s["aptrace_function_latency_seconds_count{function=\"vfio_ap_set_state\"}"] > 0.0);
    assert!(s["aptrace_mdevs{phase=\"released\"}"] > 0.0);
    assert_eq!(s["aptrace_probes{state=\"attached\"}"], 1.0);
    assert_eq!(
        s["aptrace_probe_attached{probe=\"vfio_ap_mdev_probe\",state=\"attached\"}"],
        1.0
    );
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let labels = line.split_once('{').map_or("", |(_, r)| r);
        assert!(
            !labels.contains("0x") && !labels.contains("ffff"),
            "pointer in {line}"
        );
        assert!(!labels.contains("pid="), "pid in {line}");
    }
}

#[test]
fn a_degraded_probe_is_counted_in_its_own_state_and_still_up() {
    let m = Metrics::new(&Profile::vfio_ap());
    m.set_probes(&[
        ProbeStatus {
            name: "vfio_ap_init_migration_data".into(),
            state: ProbeState::Degraded,
            detail: "cannot detect leak".into(),
        },
        ProbeStatus {
            name: "vfio_ap_mdev_probe".into(),
            state: ProbeState::Attached,
            detail: String::new(),
        },
    ]);
    let s = parse(&m.encode());
    assert_eq!(s["aptrace_probes{state=\"degraded\"}"], 1.0);
    assert_eq!(s["aptrace_probes{state=\"attached\"}"], 1.0);
    assert_eq!(s["aptrace_probes{state=\"failed\"}"], 0.0);
    assert_eq!(
        s["aptrace_probe_attached{probe=\"vfio_ap_init_migration_data\",state=\"degraded\"}"],
        1.0
    );
}

#[test]
fn counters_never_go_backwards_across_passes() {
    let m = Metrics::new(&Profile::vfio_ap());
    let events = leak_events();
    let mut prev = parse(&m.encode());
    for _ in 0..3 {
        let a = feed(&m, &events);
        let mid = parse(&m.encode());
        m.end_pass(&a);
        let after = parse(&m.encode());
        for snap in [&mid, &after] {
            for (k, v) in snap {
                let counter = k.contains("_total")
                    || k.contains("_bucket")
                    || k.contains("_count")
                    || k.contains("_sum");
                if counter {
                    let before = prev.get(k).copied().unwrap_or(0.0);
                    assert!(*v >= before, "{k} went from {before} to {v}");
                }
            }
            prev = snap.clone();
        }
    }
    let one = {
        let m1 = Metrics::new(&Profile::vfio_ap());
        feed(&m1, &events);
        parse(&m1.encode())
    };
    let k = "aptrace_findings_total{kind=\"leak\",severity=\"error\"}";
    assert_eq!(prev[k], 3.0 * one[k]);
    let k = "aptrace_function_latency_seconds_count{function=\"vfio_ap_set_state\"}";
    assert_eq!(prev[k], 3.0 * one[k]);
    assert_eq!(prev["aptrace_auditor_restarts_total"], 3.0);
}

#[test]
fn latency_buckets_are_cumulative_and_end_in_inf() {
    let mut h = Histogram::default();
    for v in [500u64, 2_000, 2_000, 40_000, 3_000_000, 20_000_000_000] {
        h.record(v);
    }
    let x = LatencyHist::from_auditor(&h);
    assert_eq!(x.count, 6);
    assert_eq!(x.buckets.iter().sum::<u64>(), 6);
    assert_eq!(x.buckets[0], 1); // 500 ns <= 1 µs
    assert_eq!(x.buckets[1], 2); // 2 µs <= 2.5 µs
    assert_eq!(*x.buckets.last().unwrap(), 1); // 20 s: +Inf
}

#[test]
fn addresses_without_a_host_bind_loopback() {
    assert_eq!(
        parse_addr(":9464").unwrap(),
        "127.0.0.1:9464".parse().unwrap()
    );
    assert_eq!(
        parse_addr("9464").unwrap(),
        "127.0.0.1:9464".parse().unwrap()
    );
    assert_eq!(
        parse_addr("0.0.0.0:1").unwrap(),
        "0.0.0.0:1".parse().unwrap()
    );
    assert_eq!(
        parse_addr("[::1]:9464").unwrap(),
        "[::1]:9464".parse().unwrap()
    );
    assert!(parse_addr("localhost:9464").unwrap().ip().is_loopback());
    assert!(parse_addr("nonsense").is_err());
    assert!(parse_addr(":99999").is_err());
    assert!(parse_addr("").is_err());
}

fn get(addr: std::net::SocketAddr, req: &str) -> String {
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    s.write_all(req.as_bytes()).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn the_server_answers_metrics_and_stops() {
    let m = Metrics::new(&Profile::vfio_ap());
    let srv = serve("127.0.0.1:0", m.clone()).unwrap();
    let addr = srv.local_addr();
    assert!(addr.ip().is_loopback() && addr.port() != 0);
    let r = get(addr, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
    assert!(r.contains(CONTENT_TYPE));
    assert!(r.contains("aptrace_findings_total{kind=\"leak\",severity=\"error\"} 0"));
    let r = get(addr, "GET /nope HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 404"), "{r}");
    let r = get(addr, "POST /metrics HTTP/1.1\r\n\r\n");
    assert!(r.starts_with("HTTP/1.1 405"), "{r}");
    srv.shutdown();
    assert!(std::net::TcpStream::connect(addr).is_err());
}

/// The migration histograms: both directions from the first scrape, then the ended
/// sessions' durations and stop times in seconds (_bucket cumulative up to +Inf, _sum,
/// _count), as the auditor measured them.
#[test]
fn migration_durations_and_stop_times_are_histograms_in_seconds() {
    let m = Metrics::new(&Profile::vfio_ap());
    let s = parse(&m.encode());
    for name in [
        "aptrace_migration_duration_seconds",
        "aptrace_migration_stopped_seconds",
    ] {
        for d in ["save", "restore"] {
            let key = format!("{name}_count{{direction=\"{d}\"}}");
            assert_eq!(s.get(&key), Some(&0.0), "{key} missing");
        }
    }
    let a = feed(&m, &leak_events());
    let ended: Vec<_> = a
        .migrations()
        .into_iter()
        .filter(|x| x.end != crate::audit::migration::session::SessionEnd::Open)
        .collect();
    assert!(ended.len() >= 12, "the generator migrates every life");
    let s = parse(&m.encode());
    let count = s["aptrace_migration_duration_seconds_count{direction=\"save\"}"];
    assert_eq!(count, ended.len() as f64);
    assert_eq!(
        s["aptrace_migration_duration_seconds_bucket{le=\"+Inf\",direction=\"save\"}"],
        count
    );
    let sum: u64 = ended.iter().map(|x| x.duration_ns).sum();
    let got = s["aptrace_migration_duration_seconds_sum{direction=\"save\"}"];
    assert!((got - sum as f64 / 1e9).abs() < 1e-9, "{got} vs {sum} ns");
    let stopped: u64 = ended.iter().map(|x| x.stopped_ns).sum();
    let got = s["aptrace_migration_stopped_seconds_sum{direction=\"save\"}"];
    assert!((got - stopped as f64 / 1e9).abs() < 1e-9);
    // Synthetic sessions last microseconds: all in the first bucket, none beyond.
    let first = s["aptrace_migration_stopped_seconds_bucket{le=\"0.001\",direction=\"save\"}"];
    assert_eq!(first, count);
    assert_eq!(
        s["aptrace_migration_duration_seconds_count{direction=\"restore\"}"],
        0.0
    );
}

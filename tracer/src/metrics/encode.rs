//! The exposition: the state the sink keeps, encoded as OpenMetrics families at each scrape.

use super::*;

/// Encodes the state on every scrape.
#[derive(Debug)]
pub(super) struct Collector(pub(super) Arc<Mutex<State>>);

struct Labels(Vec<(&'static str, String)>);

impl prometheus_client::encoding::EncodeLabelSet for Labels {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelSetEncoder,
    ) -> Result<(), std::fmt::Error> {
        use prometheus_client::encoding::EncodeLabel;
        for (k, v) in &self.0 {
            (*k, v.as_str()).encode(encoder.encode_label())?;
        }
        Ok(())
    }
}

fn l(pairs: &[(&'static str, &str)]) -> Labels {
    Labels(pairs.iter().map(|(k, v)| (*k, v.to_string())).collect())
}

/// A family of one type: (labels, value).
fn family<V: Copy>(
    enc: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    ty: MetricType,
    rows: impl IntoIterator<Item = (Labels, V)>,
    mut put: impl FnMut(&mut prometheus_client::encoding::MetricEncoder, V) -> std::fmt::Result,
) -> std::fmt::Result {
    let mut m = enc.encode_descriptor(name, help, None, ty)?;
    for (labels, v) in rows {
        if labels.0.is_empty() {
            // `name{} 0` is not valid in every parser: no braces without labels.
            put(&mut m, v)?;
        } else {
            let mut e = m.encode_family(&labels)?;
            put(&mut e, v)?;
        }
    }
    Ok(())
}

fn counter(e: &mut prometheus_client::encoding::MetricEncoder, v: u64) -> std::fmt::Result {
    e.encode_counter::<prometheus_client::encoding::NoLabelSet, _, u64>(&v, None)
}

/// A latency histogram in seconds, from its nanosecond sum and buckets.
fn histogram(
    e: &mut prometheus_client::encoding::MetricEncoder,
    h: &LatencyHist,
) -> std::fmt::Result {
    e.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
        h.sum_ns as f64 / 1e9,
        h.count,
        &h.exported(),
        None,
    )
}

fn gauge(e: &mut prometheus_client::encoding::MetricEncoder, v: i64) -> std::fmt::Result {
    e.encode_gauge(&v)
}

impl prometheus_client::collector::Collector for Collector {
    fn encode(&self, mut enc: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let s = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut total = s.base.clone();
        total.add(&s.current);

        family(
            &mut enc,
            "aptrace_build_info",
            "The aptrace agent that exports these metrics.",
            MetricType::Gauge,
            [(l(&[("version", env!("CARGO_PKG_VERSION"))]), 1)],
            gauge,
        )?;
        family(
            &mut enc,
            "aptrace_events",
            "Events handed to the auditor, by probe (function, allocator, loss source) and type.",
            MetricType::Counter,
            s.events
                .iter()
                .map(|((p, t), &n)| (l(&[("probe", p), ("type", t)]), n)),
            counter,
        )?;
        // Event types that never happened still get a total of 0 for dashboards.
        let mut by_type: BTreeMap<&str, u64> = EVENT_TYPES.iter().map(|&t| (t, 0)).collect();
        for ((_, t), n) in &s.events {
            *by_type.entry(t).or_default() += n;
        }
        family(
            &mut enc,
            "aptrace_events_by_type",
            "Events handed to the auditor, by type.",
            MetricType::Counter,
            by_type.iter().map(|(t, &n)| (l(&[("type", t)]), n)),
            counter,
        )?;
        family(
            &mut enc,
            "aptrace_findings",
            "Findings raised by the auditor, by kind and severity (every kind exists from the start).",
            MetricType::Counter,
            s.findings
                .iter()
                .map(|((k, sev), &n)| (l(&[("kind", k.name()), ("severity", sev.name())]), n)),
            counter,
        )?;
        let mut by_sev: BTreeMap<Severity, u64> = Severity::ALL.iter().map(|&v| (v, 0)).collect();
        for ((_, sev), n) in &s.findings {
            *by_sev.entry(*sev).or_default() += n;
        }
        family(
            &mut enc,
            "aptrace_findings_by_severity",
            "Findings raised by the auditor, by severity.",
            MetricType::Counter,
            by_sev
                .iter()
                .map(|(sev, &n)| (l(&[("severity", sev.name())]), n)),
            counter,
        )?;
        family(
            &mut enc,
            "aptrace_findings_uncertain",
            "Findings raised while events were lost in their window.",
            MetricType::Counter,
            [(l(&[]), s.uncertain_findings)],
            counter,
        )?;
        family(
            &mut enc,
            "aptrace_outstanding_allocations",
            "Allocations made and not yet freed.",
            MetricType::Gauge,
            [(l(&[]), s.outstanding as i64)],
            gauge,
        )?;
        family(
            &mut enc,
            "aptrace_outstanding_bytes",
            "Bytes of the allocations made and not yet freed.",
            MetricType::Gauge,
            [(l(&[]), s.outstanding_bytes as i64)],
            gauge,
        )?;
        family(
            &mut enc,
            "aptrace_mdevs",
            "Mediated devices the auditor tracks, by lifecycle phase.",
            MetricType::Gauge,
            s.mdevs
                .iter()
                .map(|(p, &n)| (l(&[("phase", p.name())]), n as i64)),
            gauge,
        )?;
        family(
            &mut enc,
            "aptrace_mdevs_by_migration_state",
            "Live mediated devices by VFIO migration state (those whose state is known).",
            MetricType::Gauge,
            s.mdevs_in_migration_state
                .iter()
                .map(|(st, &n)| (l(&[("state", st.name())]), n as i64)),
            gauge,
        )?;
        family(
            &mut enc,
            "aptrace_migration_transitions",
            "VFIO migration steps taken, by from and to state.",
            MetricType::Counter,
            total
                .transitions
                .iter()
                .map(|((a, b), &n)| (l(&[("from", a.name()), ("to", b.name())]), n)),
            counter,
        )?;
        family(
            &mut enc,
            "aptrace_function_calls",
            "Calls of traced functions (entries seen).",
            MetricType::Counter,
            total
                .calls
                .iter()
                .map(|(f, c)| (l(&[("function", f)]), c.entries)),
            counter,
        )?;
        family(
            &mut enc,
            "aptrace_function_failures",
            "Calls of traced functions that returned an error.",
            MetricType::Counter,
            total
                .calls
                .iter()
                .map(|(f, c)| (l(&[("function", f)]), c.failures)),
            counter,
        )?;
        {
            let mut m = enc.encode_descriptor(
                "aptrace_function_latency_seconds",
                "Time from entry to return of traced functions.",
                None,
                MetricType::Histogram,
            )?;
            for (f, h) in &total.latency {
                let labels = l(&[("function", f)]);
                histogram(&mut m.encode_family(&labels)?, h)?;
            }
        }
        for (name, help, second) in [
            (
                "aptrace_migration_duration_seconds",
                "Migration sessions that ended, by direction (save: STOP_COPY, restore: RESUMING): from entering the data state to the end.",
                false,
            ),
            (
                "aptrace_migration_stopped_seconds",
                "Migration sessions that ended, by direction: how long the device was stopped (from leaving RUNNING to running again or the end).",
                true,
            ),
        ] {
            let mut m = enc.encode_descriptor(name, help, None, MetricType::Histogram)?;
            for (d, hs) in &total.migrations {
                let h = if second { &hs.1 } else { &hs.0 };
                let labels = l(&[("direction", d.name())]);
                histogram(&mut m.encode_family(&labels)?, h)?;
            }
        }
        family(
            &mut enc,
            "aptrace_lost_events",
            "Events the kernel dropped (ring buffer full, kretprobe misses) or a damaged recording lost.",
            MetricType::Counter,
            [(l(&[]), total.lost)],
            counter,
        )?;
        let mut by_state: BTreeMap<&str, i64> = [
            ProbeState::Attached,
            ProbeState::Missing,
            ProbeState::Clone,
            ProbeState::Failed,
            ProbeState::Degraded,
        ]
        .iter()
        .map(|p| (p.name(), 0))
        .collect();
        for p in &s.probes {
            *by_state.entry(p.state.name()).or_default() += 1;
        }
        family(
            &mut enc,
            "aptrace_probes",
            "Probes by state: attached, missing (function absent or inlined), clone (timed, arguments untrusted), failed, degraded (attached without a read a check needs).",
            MetricType::Gauge,
            by_state.iter().map(|(st, &n)| (l(&[("state", st)]), n)),
            gauge,
        )?;
        family(
            &mut enc,
            "aptrace_probe_attached",
            "1 when the probe on this function is attached (a clone or a degraded probe counts; its state label says which), 0 when missing or failed.",
            MetricType::Gauge,
            s.probes.iter().map(|p| {
                let up = matches!(
                    p.state,
                    ProbeState::Attached | ProbeState::Clone | ProbeState::Degraded
                );
                (l(&[("probe", &p.name), ("state", p.state.name())]), i64::from(up))
            }),
            gauge,
        )?;
        family(
            &mut enc,
            "aptrace_auditor_restarts",
            "Times the auditor was restarted (a replay loop starting over).",
            MetricType::Counter,
            [(l(&[]), s.passes)],
            counter,
        )?;
        let last = s.last_event_ts_ns.map_or(0.0, |t| t as f64 / 1e9);
        let mut m = enc.encode_descriptor(
            "aptrace_last_event_kernel_timestamp_seconds",
            "Kernel boot-clock time of the last event (0 before the first).",
            None,
            MetricType::Gauge,
        )?;
        m.encode_gauge(&last)?;
        Ok(())
    }
}

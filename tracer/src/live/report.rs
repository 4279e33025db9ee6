//! What a live run says about itself: the recording's header (where it ran, what attached)
//! and the report it hands its caller when it ends (the binary prints and writes it).

use super::options::LiveOptions;
use super::resolve::Resolution;
use crate::audit::Auditor;
use crate::recording::{Header, ProbeStatus};
use crate::report::{FileReport, Report, SourceInfo};

/// The parts of the header known before the module is attached.
#[derive(Clone, Debug)]
pub struct HostFacts {
    pub arch: String,
    pub kernel_release: String,
    pub hostname: String,
    /// CLOCK_REALTIME minus CLOCK_BOOTTIME, to put wall-clock times on kernel timestamps.
    pub boot_to_wall_ns: i64,
}

impl HostFacts {
    /// The header of a recording of `opts.module` as resolved by `res` (None: never
    /// attached), with the statuses of its probes.
    pub fn header(
        &self,
        opts: &LiveOptions,
        res: Option<&Resolution>,
        probes: Vec<ProbeStatus>,
    ) -> Header {
        Header {
            arch: self.arch.clone(),
            kernel_release: self.kernel_release.clone(),
            hostname: self.hostname.clone(),
            boot_to_wall_ns: self.boot_to_wall_ns,
            module: opts.module.clone(),
            symbols: res.map(|r| r.symbols.clone()).unwrap_or_default(),
            profile: opts.profile.to_toml(),
            probes,
            writer: crate::writer_id(),
            source_damage: Vec::new(),
            guest: opts.guest.as_ref().map(|g| g.to_string()),
        }
    }
}

/// The end-of-run report over the auditor's final state, narrowed to the guest asked for
/// (`--guest`, which the header carries).
pub fn end_report(opts: &LiveOptions, header: &Header, auditor: &Auditor) -> Report {
    let path = opts
        .record
        .as_ref()
        .map(|p| p.display().to_string())
        .unwrap_or_else(|| "live".to_string());
    let source = SourceInfo::new(
        &path,
        header,
        (
            crate::recording::VERSION_MAJOR,
            crate::recording::VERSION_MINOR,
        ),
        Vec::new(),
        Vec::new(),
    );
    // The header names the guest: the report keeps its devices only, as the recording's will.
    Report {
        files: vec![FileReport::new(source, auditor, true)],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::live::resolve::Overrides;
    use crate::live::sink::GuestFilter;
    use crate::profile::Profile;

    fn opts() -> LiveOptions {
        LiveOptions {
            record: None,
            format: crate::live::sink::LiveFormat::Text,
            duration: None,
            guest: None,
            module: "vfio_ap".into(),
            profile: Profile::vfio_ap(),
            all_allocations: false,
            ring_buffer_size: 4096,
            force: false,
            overrides: Overrides::default(),
            metrics: None,
            preflight: None,
        }
    }

    fn facts() -> HostFacts {
        HostFacts {
            arch: "s390x".into(),
            kernel_release: "6.12.0".into(),
            hostname: "lpar1".into(),
            boot_to_wall_ns: 7,
        }
    }

    #[test]
    fn a_run_that_never_attached_still_has_a_header() {
        let h = facts().header(&opts(), None, Vec::new());
        assert_eq!((h.arch.as_str(), h.module.as_str()), ("s390x", "vfio_ap"));
        assert!(h.symbols.is_empty() && h.probes.is_empty());
        assert_eq!(h.profile, Profile::vfio_ap().to_toml());
    }

    /// The report over the synthetic leak: findings, narrowed by --guest.
    #[test]
    fn the_end_report_keeps_the_guests_findings_only() {
        let mut g = crate::synth::Generator::new(3);
        g.fault_every = 5;
        g.faults = vec![crate::synth::Fault::Leak];
        let mut a = Auditor::new(Profile::vfio_ap());
        for e in g.stream(400) {
            a.ingest(&e);
        }
        let mut o = opts();
        let h = facts().header(&o, None, Vec::new());
        let all = end_report(&o, &h, &a);
        assert!(all.has_findings());
        assert_eq!(all.files[0].source.path, "live");
        o.guest = Some(GuestFilter::Pid(u32::MAX));
        let h = facts().header(&o, None, Vec::new());
        assert_eq!(
            h.guest.as_deref(),
            Some("4294967295"),
            "the header keeps the limit"
        );
        let none = end_report(&o, &h, &a);
        assert!(none.files[0].findings.is_empty());
        assert!(none.files[0].mdevs.is_empty() && none.files[0].migrations.is_empty());
        assert_eq!(none.files[0].source.guest.as_deref(), Some("4294967295"));
    }
}

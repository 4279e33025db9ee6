//! The TUI in a real terminal: tmux runs `aptrace tui` on a recording with a leak; keys go
//! in with send-keys, the screen comes out with capture-pane, as a person would see it.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

const PROMPT: &str = "aptest$ ";

/// tmux is part of the test set-up: installed when missing, never skipped.
fn ensure_tmux() {
    let have = || {
        Command::new("tmux")
            .arg("-V")
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !have() {
        let _ = Command::new("apt-get").arg("update").status();
        let st = Command::new("apt-get")
            .args(["install", "-y", "--no-install-recommends", "tmux"])
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status();
        assert!(
            st.is_ok_and(|s| s.success()),
            "cannot install tmux with apt-get"
        );
    }
    assert!(have(), "tmux is required for this test");
}

struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(name: &str, dir: &Path) -> Tmux {
        ensure_tmux();
        let t = Tmux {
            socket: format!("aptrace-test-{}-{name}", std::process::id()),
        };
        let st = Command::new("tmux")
            .args([
                "-L",
                &t.socket,
                "-f",
                "/dev/null",
                "new-session",
                "-d",
                "-x",
                "160",
                "-y",
                "45",
                "-c",
            ])
            .arg(dir)
            .args([
                "env",
                &format!("PS1={PROMPT}"),
                "TERM=xterm-256color",
                "sh",
                "-i",
            ])
            .status()
            .expect("run tmux");
        assert!(st.success());
        t.wait_for(|s| s.contains(PROMPT.trim_end()), "the shell prompt");
        t
    }

    fn tmux(&self, args: &[&str]) -> String {
        let o = Command::new("tmux")
            .args(["-L", &self.socket])
            .args(args)
            .output()
            .expect("tmux");
        String::from_utf8_lossy(&o.stdout).into_owned()
    }

    fn keys(&self, keys: &[&str]) {
        for k in keys {
            self.tmux(&["send-keys", "-t", "0", k]);
        }
    }

    fn line(&self, text: &str) {
        self.tmux(&["send-keys", "-t", "0", "-l", text]);
        self.tmux(&["send-keys", "-t", "0", "Enter"]);
    }

    fn screen(&self) -> String {
        self.tmux(&["capture-pane", "-p", "-t", "0"])
    }

    fn alternate_on(&self) -> bool {
        self.tmux(&["display-message", "-p", "-t", "0", "#{alternate_on}"])
            .trim()
            == "1"
    }

    fn wait_for(&self, ok: impl Fn(&str) -> bool, what: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let s = self.screen();
            if ok(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; the screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// The UI is gone and the terminal is usable: main screen, prompt, cooked mode with echo.
    fn assert_restored(&self) {
        self.wait_for(
            |s| s.trim_end().ends_with(PROMPT.trim_end()),
            "the prompt after the UI",
        );
        assert!(!self.alternate_on(), "still on the alternate screen");
        self.line("stty -a | tr ' ' '\\n' | grep -x -e icanon -e echo -e -icanon -e -echo | tr '\\n' ' '; echo restored-$((40+2))");
        let s = self.wait_for(|s| s.contains("restored-42"), "the shell to answer");
        let answer = s
            .lines()
            .find(|l| l.contains("restored-42"))
            .unwrap_or_default();
        assert_eq!(
            answer.trim(),
            "icanon echo restored-42",
            "the terminal is not in cooked mode with echo:\n{s}"
        );
        assert!(
            s.contains("echo restored-$((40+2))"),
            "typed text is not echoed:\n{s}"
        );
        assert!(!s.contains("Mdevs ("), "the UI is still drawn:\n{s}");
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = Command::new("tmux")
            .args(["-L", &self.socket, "kill-server"])
            .status();
    }
}

/// The `exit=N` line the shell printed after the UI (not the typed command).
fn exit_line(screen: &str) -> Option<String> {
    screen
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with("exit="))
        .map(str::to_string)
}

fn sample(dir: &Path) -> String {
    let path = dir.join("leak.aptr");
    common::write_recording(&path, &common::leak_events());
    path.display().to_string()
}

#[test]
fn replay_shows_the_leak_and_q_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let rec = sample(dir.path());
    let bin = env!("CARGO_BIN_EXE_aptrace");
    let t = Tmux::start("leak", dir.path());
    t.line(&format!("{bin} tui {rec} 2>stderr.txt; echo exit=$?"));
    let s = t.wait_for(
        |s| s.contains("ended") && s.contains("Mdevs (6)"),
        "the replay to end",
    );
    assert!(t.alternate_on(), "the UI should use the alternate screen");
    assert!(s.contains("findings 1 (1 errors)"), "{s}");

    // One keystroke to the finding: the findings view, the leak selected, its evidence.
    t.keys(&["n"]);
    let uuid = common::uuid_of(common::LEAKING_LIFE);
    let s = t.wait_for(|s| s.contains("Evidence ("), "the evidence of the finding");
    assert!(
        s.contains("error leak"),
        "the leak finding is not shown:\n{s}"
    );
    assert!(s.contains(&uuid), "the leaking mdev is not named:\n{s}");
    assert!(
        s.contains("vfio_ap_init_migration_data"),
        "the allocating function is not named:\n{s}"
    );

    // Enter: to the leaking mdev's detail.
    t.keys(&["Enter"]);
    let s = t.wait_for(|s| s.contains("Timeline ("), "the mdev detail");
    assert!(s.contains(&uuid), "{s}");
    assert!(
        s.contains("leak vfio_ap_init_migration_data"),
        "the mdev's finding is not listed:\n{s}"
    );
    assert!(s.contains("released"), "{s}");

    // The help, the probes (one missing or inlined), the filtered log.
    t.keys(&["?"]);
    t.wait_for(|s| s.contains(" Keys "), "the help");
    // Escape alone first: sent with the next key at once, the terminal reads ESC 4 as
    // Alt-4 (which closes the help but switches nothing).
    t.keys(&["Escape"]);
    t.wait_for(|s| !s.contains(" Keys "), "the help closed");
    t.keys(&["4"]);
    // A probe missing or inlined: waited for, since tmux may show a frame drawn in part.
    t.wait_for(
        |s| s.contains("FUNCTION") && s.contains("missing/inlined"),
        "the probes view with its missing probe",
    );
    t.keys(&["/"]);
    t.line("release_dev");
    let s = t.wait_for(|s| s.contains("filter /release_dev"), "the filtered log");
    assert!(s.contains("← vfio_ap_mdev_release_dev"), "{s}");

    t.keys(&["q"]);
    let s = t.wait_for(|s| exit_line(s).is_some(), "the UI to exit");
    assert_eq!(exit_line(&s).as_deref(), Some("exit=0"), "{s}");
    t.assert_restored();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    assert!(stderr.is_empty(), "the UI wrote to stderr: {stderr:?}");
}

#[test]
fn sigterm_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let rec = sample(dir.path());
    let bin = env!("CARGO_BIN_EXE_aptrace");
    let t = Tmux::start("term", dir.path());
    t.line(&format!(
        "sh -c 'echo $$ > ui.pid; exec {bin} tui --paused {rec}'; echo exit=$?"
    ));
    t.wait_for(|s| s.contains("❚❚ paused 1x  0/328"), "the paused UI");
    let pid = std::fs::read_to_string(dir.path().join("ui.pid")).unwrap();
    let st = Command::new("kill")
        .args(["-TERM", pid.trim()])
        .status()
        .unwrap();
    assert!(st.success());
    let s = t.wait_for(|s| exit_line(s).is_some(), "the UI to exit");
    assert_eq!(
        exit_line(&s).as_deref(),
        Some("exit=0"),
        "SIGTERM is a clean exit:\n{s}"
    );
    t.assert_restored();
}

#[test]
fn a_panic_restores_the_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let rec = sample(dir.path());
    let bin = env!("CARGO_BIN_EXE_aptrace");
    let t = Tmux::start("panic", dir.path());
    t.line(&format!(
        "APTRACE_TUI_PANIC_KEY=X {bin} tui {rec} 2>stderr.txt; echo exit=$?"
    ));
    t.wait_for(|s| s.contains("Mdevs ("), "the UI");
    t.keys(&["X"]);
    let s = t.wait_for(|s| exit_line(s).is_some(), "the UI to exit");
    assert_eq!(exit_line(&s).as_deref(), Some("exit=101"), "{s}");
    t.assert_restored();
    let stderr = std::fs::read_to_string(dir.path().join("stderr.txt")).unwrap();
    assert!(stderr.contains("panic requested"), "{stderr}");
}

//! Evidence that reads like the kernel: errno names, IS_ERR for pointer returns, no value for
//! void functions, only the function's own arguments.

use std::process::Command;

const MDEV: &str = "0xffff888000a00000";
const DEV: &str = "0xffff888000b00000";

fn enter(ts: u64, pid: u32, func: &str, args: &[&str], lock: &str) -> String {
    let args: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
    format!(
        r#"{{"type":"enter","ts_ns":"{ts}","pid":{pid},"comm":"c{pid}","func":"{func}","args":[{}],"lock":{{"state":"{lock}"}}}}"#,
        args.join(",")
    )
}

fn exit(ts: u64, pid: u32, func: &str, ret: &str, arg0: &str, field: Option<&str>) -> String {
    let field = field
        .map(|f| format!(r#","field":"{f}""#))
        .unwrap_or_default();
    format!(
        r#"{{"type":"exit","ts_ns":"{ts}","pid":{pid},"comm":"c{pid}","func":"{func}","ret":"{ret}","arg0":"{arg0}"{field}}}"#
    )
}

/// A life whose first open fails with -EINVAL after allocating (error-path-leak), then a
/// PRE_COPY request that set_state accepts with a NULL file (the device lacks the flag).
fn scenario() -> String {
    let open = "vfio_ap_mdev_open_device";
    let init = "vfio_ap_init_migration_data";
    let set = "vfio_ap_set_state";
    // -EINVAL in the low half of the return register, garbage above: an int is 32 bits.
    let einval_int = "0xdeadbeefffffffea";
    let lines = [
        enter(
            1000,
            100,
            "vfio_ap_mdev_probe",
            &[DEV, "0x7", "0x8", "0x9"],
            "free",
        ),
        enter(
            1100,
            100,
            "vfio_ap_mdev_init_dev",
            &[MDEV, "0x1", "0x2", "0x3"],
            "free",
        ),
        exit(1200, 100, "vfio_ap_mdev_init_dev", "0", MDEV, None),
        exit(1300, 100, "vfio_ap_mdev_probe", "0", DEV, None),
        enter(2000, 4242, open, &[MDEV, "0x5", "0x6", "0x7"], "free"),
        enter(
            2100,
            4242,
            init,
            &[MDEV, "0x5", "0x6", "0x7"],
            "held-by-current",
        ),
        exit(2200, 4242, init, "0", MDEV, Some("0xffff888000c00040")),
        exit(2300, 4242, open, einval_int, MDEV, None),
        enter(3000, 4242, open, &[MDEV], "free"),
        enter(3100, 4242, init, &[MDEV], "held-by-current"),
        exit(3200, 4242, init, "0", MDEV, Some("0xffff888000c00080")),
        // --all-allocations: kmalloc's tracepoint, with the stack as the probe read it.
        r#"{"type":"alloc","ts_ns":"3250","pid":4242,"comm":"c4242","ptr":"0xffff888000d00000","bytes":64,"site":"vfio_ap_mdev_open_device+0x9c","allocator":"kmalloc","stack":["__traceiter_kmalloc+0x40","__kmalloc_cache_noprof+0x1f2","vfio_ap_mdev_open_device+0x9c","vfio_df_open+0x40"]}"#.to_string(),
        exit(3300, 4242, open, "0", MDEV, None),
        enter(4000, 4242, set, &[MDEV, "0x6", "0x8", "0x9"], "not-checked"),
        exit(4100, 4242, set, "0", MDEV, None),
        enter(
            5000,
            100,
            "vfio_ap_mdev_release_dev",
            &[MDEV, "0x1"],
            "free",
        ),
        exit(
            5100,
            100,
            "vfio_ap_mdev_release_dev",
            "0xffffffffffffffea",
            MDEV,
            None,
        ),
    ];
    lines.join("\n") + "\n"
}

fn text_report() -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("evidence.jsonl");
    std::fs::write(&path, scenario()).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_aptrace"))
        .args(["report", path.to_str().unwrap()])
        .env("RUST_LOG", "warn")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn line_with<'a>(r: &'a str, needle: &str) -> &'a str {
    r.lines()
        .find(|l| l.contains(needle))
        .unwrap_or_else(|| panic!("no line with {needle:?} in:\n{r}"))
}

#[test]
fn errno_values_print_by_name_in_evidence_and_messages() {
    let r = text_report();
    let l = line_with(&r, "← vfio_ap_mdev_open_device = ");
    assert!(l.contains("= -EINVAL"), "{l}");
    assert!(
        r.contains("vfio_ap_mdev_open_device failed with -EINVAL"),
        "the message names the errno:\n{r}"
    );
}

#[test]
fn only_the_functions_own_arguments_are_shown() {
    let r = text_report();
    let l = line_with(&r, "→ vfio_ap_mdev_open_device(");
    assert!(
        l.contains(&format!("vfio_ap_mdev_open_device({MDEV})")),
        "{l}"
    );
    let l = line_with(&r, "→ vfio_ap_set_state(");
    assert!(l.contains(&format!("vfio_ap_set_state({MDEV}, 6)")), "{l}");
}

#[test]
fn void_functions_show_no_value_and_pointers_are_judged_with_is_err() {
    let r = text_report();
    // release_dev is void: its return register (here -22 garbage) means nothing.
    let l = line_with(&r, "← vfio_ap_mdev_release_dev");
    assert!(!l.contains('='), "{l}");
    // set_state returns struct file *: 0 is NULL, not the integer 0.
    let l = line_with(&r, "← vfio_ap_set_state");
    assert!(l.contains("= NULL"), "{l}");
    assert!(
        r.contains("PRE_COPY needs VFIO_MIGRATION_PRE_COPY, which the device did not set"),
        "{r}"
    );
}

#[test]
fn an_allocation_stack_starts_at_the_drivers_call_site() {
    let r = text_report();
    let leak = r
        .split("[error] leak")
        .find(|part| part.contains("0xffff888000d00000 (64 bytes)"))
        .unwrap_or_else(|| panic!("no leak of the traced kmalloc:\n{r}"));
    let stack = leak
        .split("stack:")
        .nth(1)
        .unwrap_or_else(|| panic!("no stack:\n{leak}"));
    let first = stack
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap();
    assert_eq!(first, "vfio_ap_mdev_open_device+0x9c", "{leak}");
    assert!(!stack.contains("__kmalloc_cache_noprof"), "{stack}");
}

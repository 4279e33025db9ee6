# Sourced by the guest's jobs (runner.sh, the scenarios' run.sh): the sequences they share.
# Shipped in every initramfs as /lib.sh. POSIX sh (busybox); nothing here exits the caller.
[ -f /job.env ] && . /job.env
C=/sys/kernel/debug/vfio_ap_model/ctl
MOD=${MODULE:-vfio_ap}

# A console marker: the host judges by these lines.
marker() { echo "APTRACE-TESTBED: $*"; }

# One command to the model's control file; fails as the write does (a refused command).
ctl() { echo "$*" > "$C"; }

# migrate NAME STATE...: one set_state per state, in order; stops at the first refusal. A
# migration file a step returns is closed at once, as a VMM that moves no data would (an
# open one pins the device: remove would be refused).
migrate() {
    _u=$1; shift
    for _s in "$@"; do
        ctl migrate "$_u" "$_s" || return
        read -r _r < "$C"
        case "$_r" in *" ok fd="*) fdclose "${_r##* ok fd=}" ;; esac
    done
}

# migfd NAME STATE: set_state through the model core; the migration file it returns is
# installed as an fd of this shell (as QEMU gets it from VFIO_DEVICE_FEATURE), its number
# in MIGFD. Read it with `cat <&$MIGFD`, write with `... >&$MIGFD`, close it with
# `fdclose $MIGFD`. Fails when set_state fails or returns no file.
migfd() {
    ctl migrate "$1" "$2" || return
    MIGFD=$(sed -n 's/.* ok fd=\([0-9]*\).*/\1/p' "$C")
    [ -n "$MIGFD" ]
}

# vc STEP...: the userspace VFIO client (testbed/client/vfioclient.c), one argument per
# step, through this run's core: CORE=real drives the kernel's own VFIO core (mdev sysfs,
# /dev/vfio container and group, VFIO_DEVICE_FEATURE, VFIO_DEVICE_RESET), CORE=model the
# model core's ctl with the same steps. CORE comes from /job.env (per kernel) or the
# scenario's `core` file. Steps: create U, open U, state U STATE..., getstate U,
# read U FILE [MAX], write U FILE CHUNK [COUNT], fdclose U, reset U, close U,
# remove-blocked U, remove U, fault F; "! STEP" must fail.
vc() { /vfioclient --core "${CORE:-model}" "$@"; }

# fdclose N: close fd N of this shell (the file's release runs on the way out of close).
fdclose() { eval "exec $1<&-"; }

# leaky_life NAME: create, open, STOP, then close and remove with the release of mig_data
# skipped: exactly one leak.
leaky_life() {
    ctl create "$1" && ctl open "$1" && migrate "$1" STOP &&
        ctl fault skip-release && ctl close "$1" && ctl remove "$1"
}

module_loaded() { grep -q "^$MOD " /proc/modules; }

# The kprobes on the module's functions (kprobes/list: "ADDR  k|r  SYM+0xOFF  MODULE [FLAGS]").
kprobes_on_module() {
    awk -v m="$MOD" '$4 == m { n++ } END { print n + 0 }' /sys/kernel/debug/kprobes/list 2>/dev/null || echo 0
}

# wait_line PID LOG PATTERN: up to 120 s (kallsyms is slow under emulated s390x) for the
# line in an agent's output while that agent runs.
wait_line() {
    _i=0
    while ! grep -q "$3" "$2" 2>/dev/null && [ $_i -lt 1200 ]; do
        kill -0 "$1" 2>/dev/null || return 1
        sleep 0.1; _i=$((_i+1))
    done
    grep -q "$3" "$2"
}

# wait_count LOG PATTERN COUNT: up to 120 s for COUNT matching lines in LOG; at once when
# there is no log (a run without agent).
wait_count() {
    [ -n "$1" ] || return 0
    _i=0
    while [ "$(grep -c "$2" "$1")" -lt "$3" ]; do
        _i=$((_i+1)); [ $_i -gt 1200 ] && return 1; sleep 0.1
    done
}

# stack_of LOG NAME: the stack frames (indented lines) under the live leak line of mdev NAME.
stack_of() {
    awk -v u="$2" 'f && /^    / { print; next } f { exit }
        /^\[error\] leak / && index($0, "mdev " u) { f = 1 }' "$1"
}

# leak_stack_names LOG NAME FUNC: waits for the live leak line of mdev NAME, prints the stack
# under it, and succeeds when that stack names FUNC called from vfio_ap_mdev_open_device in
# module $MOD (a stack symbolised against a stale load would name other functions).
leak_stack_names() {
    wait_count "$1" "^\[error\] leak .*mdev $2" 1 || { echo "no live leak line for $2"; return 1; }
    sleep 0.5 # its stack lines come with it, in the same print
    _s=$(stack_of "$1" "$2")
    echo "$_s"
    echo "$_s" | grep -q "^ *$3+0x[0-9a-f]* \[$MOD\]" &&
        echo "$_s" | grep -q "^ *vfio_ap_mdev_open_device+0x[0-9a-f]* \[$MOD\]" ||
        { echo "the leak's stack does not name $3 <- vfio_ap_mdev_open_device"; return 1; }
}

//! What a probe that attaches, or a row that is missing, cannot check: the finding kinds a
//! dropped field read, lock checks off or an inlined function hide.

use crate::profile::{FunctionSpec, LockContract, Role};

/// The finding kinds a row's own checks raise (its lock contract, its object role), which an
/// inlined copy of the function cannot: None when it has none.
pub fn inlined_checks(spec: &FunctionSpec) -> Option<String> {
    let mut kinds: Vec<&str> = Vec::new();
    match spec.lock {
        LockContract::Held => kinds.push("lock-not-held"),
        LockContract::NotHeld => kinds.push("self-deadlock"),
        LockContract::None => {}
    }
    match spec.role {
        Role::BufferFree => {
            kinds.push("double-free");
            kinds.push(
                "buffer-held-at-close and leaks of configuration buffers without --all-allocations",
            )
        }
        Role::FreeField => {
            kinds.push("leak and overwrite-leak of mig_data without --all-allocations")
        }
        Role::BufferAlloc => kinds.push("buffer-held-at-close"),
        Role::MigFileOpen | Role::MigFileRead | Role::MigFileWrite | Role::MigFileRelease => {
            kinds.push("file-after-release")
        }
        _ => {}
    }
    (!kinds.is_empty()).then(|| kinds.join(", "))
}

/// Finding kinds that need the value `spec` reads.
fn kinds_needing_read(spec: &FunctionSpec) -> &'static str {
    match spec.role {
        Role::AllocField => "leak, overwrite-leak, error-path-leak",
        Role::FreeField => "double-free; leak and overwrite-leak of mig_data without --all-allocations (what it frees is not tracked then)",
        Role::GetState => "invalid-migration-arc (the state read back)",
        Role::BufferAlloc => "buffer-held-at-close (the buffer is not known as held in its file's slot)",
        Role::BufferFree => "double-free of configuration buffers; buffer-held-at-close and their leaks without --all-allocations (they are not tracked then)",
        _ => "the findings that need this value",
    }
}

/// Why a probe that attaches cannot do all its checks, naming what cannot be detected; None
/// when it can do them all.
pub fn degradation(
    spec: &FunctionSpec,
    field_problem: Option<&str>,
    lock_off: bool,
) -> Option<String> {
    let mut why = Vec::new();
    if let Some(p) = field_problem {
        let field = spec.read.as_ref().map_or("its field", |r| r.field.as_str());
        why.push(format!(
            "{field} not read ({p}): cannot detect {}",
            kinds_needing_read(spec)
        ));
    }
    match spec.lock {
        LockContract::Held if lock_off => why.push(
            "mdevs_lock not checked (lock checks off): cannot detect lock-not-held".to_string(),
        ),
        LockContract::NotHeld if lock_off => why.push(
            "mdevs_lock not checked (lock checks off): cannot detect self-deadlock".to_string(),
        ),
        _ => {}
    }
    (!why.is_empty()).then(|| why.join("; "))
}

//! What each traced kernel function means: the built-in vfio_ap profile, and profile files
//! that add or change functions without rebuilding the eBPF object.

use std::collections::HashMap;
use std::path::Path;

use serde::{Deserialize, Serialize};

mod builtin;

/// What a function does in the driver's life, as the auditor understands it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// mdev driver `.probe`: creates the device (arg: `struct mdev_device *`).
    Probe,
    /// vfio_device `.init`, nested in probe: the object's life starts.
    InitDev,
    /// Sets `mig_ops`; must precede registration.
    MigrationCapabilities,
    /// The guest opens the device.
    Open,
    /// The guest closes the device.
    Close,
    /// mdev driver `.remove` (arg: `struct mdev_device *`).
    Remove,
    /// vfio_device `.release`: the object's life ends when it returns.
    ReleaseDev,
    /// Stores an allocation into the profile's field (read at return).
    AllocField,
    /// Frees the profile's field (read at entry).
    FreeField,
    /// `migration_set_state`: arg 1 is the requested final state.
    SetState,
    /// `migration_get_state`: the state is read back through arg 1 at return.
    GetState,
    /// `migration_get_data_size`.
    GetDataSize,
    /// One step of the state machine inside set_state: arg 1 is the next state.
    TransitionStep,
    /// Device reset: the migration state returns to RUNNING.
    Reset,
    /// Opens a migration file of the mdev in argument 0: returns the `struct file *`, whose
    /// life lasts until its release and belongs to that life of the mdev.
    MigFileOpen,
    /// A migration file's `.read`: argument 0 is the file.
    MigFileRead,
    /// A migration file's `.write`: argument 0 is the file.
    MigFileWrite,
    /// A migration file's `.release`: argument 1 is the file, whose life ends at return.
    MigFileRelease,
    /// Allocates a configuration buffer; the read at return is the buffer's pointer. With
    /// `mdev = object` the read is the mdev's file slot (the buffer is stored there); with
    /// `mdev = none` an output argument (the buffer belongs to the migration file whose
    /// operation the call is nested in, and is stored later).
    BufferAlloc,
    /// Frees the configuration buffer its read (at entry) finds in a file slot.
    BufferFree,
    /// Timed and counted only.
    Other,
}

/// What must be true of `matrix_dev->mdevs_lock` when the function is entered.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LockContract {
    #[default]
    None,
    /// `lockdep_assert_held`: this task holds it.
    Held,
    /// The function takes the lock: this task must not hold it already.
    NotHeld,
}

/// Where the function's mdev comes from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum MdevArg {
    /// Argument 0 is the `ap_matrix_mdev` (or its `vdev`, the same address).
    #[default]
    Object,
    /// Argument 0 is a `struct mdev_device *`, mapped through init_dev and driver data.
    MdevDevice,
    /// The function is not about one mdev.
    None,
}

/// What a function returns, which says how it reports failure (see `crate::calls::failed`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RetType {
    /// `int`: a negative errno in the low 32 bits.
    Int,
    /// `ssize_t`/`long`: a negative errno in the whole register.
    Ssize,
    /// A pointer that may be an `ERR_PTR`.
    Pointer,
    /// `bool`: false is failure.
    Bool,
    /// `size_t`: a count, never an error.
    Size,
    /// `void`, or a value that is not about success.
    Void,
}

impl Role {
    /// The return type of the role's function when the profile does not say.
    pub fn default_ret(self) -> RetType {
        match self {
            Role::Probe
            | Role::InitDev
            | Role::Open
            | Role::AllocField
            | Role::GetState
            | Role::GetDataSize
            | Role::MigFileRelease => RetType::Int,
            Role::MigFileRead | Role::MigFileWrite | Role::BufferAlloc => RetType::Ssize,
            Role::MigFileOpen => RetType::Pointer,
            // The migration data file, or an ERR_PTR (the state-machine step returns what
            // set_state returns).
            Role::SetState | Role::TransitionStep => RetType::Pointer,
            Role::MigrationCapabilities
            | Role::Close
            | Role::Remove
            | Role::ReleaseDev
            | Role::FreeField
            | Role::Reset
            | Role::BufferFree
            | Role::Other => RetType::Void,
        }
    }

    /// How many arguments the role's function takes, when the profile does not say (`None`:
    /// unknown, every captured register is shown).
    pub fn default_args(self) -> Option<u8> {
        match self {
            Role::Probe
            | Role::InitDev
            | Role::MigrationCapabilities
            | Role::Open
            | Role::Close
            | Role::Remove
            | Role::ReleaseDev
            | Role::AllocField
            | Role::FreeField
            | Role::Reset
            | Role::BufferFree => Some(1),
            // (matrix_mdev, fops, flags); (file, buf, len, pos); (inode, file)
            Role::MigFileOpen => Some(3),
            Role::MigFileRead | Role::MigFileWrite => Some(4),
            Role::MigFileRelease => Some(2),
            // (vdev, new state), (vdev, *state), (vdev, *length), (matrix_mdev, new state)
            Role::SetState | Role::GetState | Role::GetDataSize | Role::TransitionStep => Some(2),
            Role::BufferAlloc | Role::Other => None,
        }
    }

    /// Which argument of a migration-file role is the `struct file *`.
    pub fn file_arg(self) -> Option<usize> {
        match self {
            Role::MigFileRead | Role::MigFileWrite => Some(0),
            Role::MigFileRelease => Some(1),
            _ => None,
        }
    }
}

/// When the profile's field is read.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum ReadAt {
    Entry,
    Exit,
}

/// A value the probe reads from kernel memory for this function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldRead {
    /// `struct.member` whose offset comes from BTF (or `--offset NAME=N`), or a number.
    pub field: String,
    /// Which argument points at the struct (or, with `deref_arg`, at the value).
    #[serde(default)]
    pub arg: u8,
    pub at: ReadAt,
    /// Size in bytes: 8 for a pointer, 4 for an enum.
    #[serde(default = "eight")]
    pub size: u8,
    /// `struct.member` pointers followed from the argument before `field` is read (at most
    /// three), e.g. `["ap_matrix_mdev.mig_data"]`. Empty: `field` is in the argument's
    /// struct. A read that fails on the way is no value, never an error.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
}

fn eight() -> u8 {
    8
}

/// One traced function.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FunctionSpec {
    pub name: String,
    pub role: Role,
    #[serde(default)]
    pub lock: LockContract,
    /// Declared locks the function takes (beyond the probed lock of `lock = "not-held"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub takes: Vec<String>,
    /// Declared locks the function asserts held (beyond the probed lock of `lock = "held"`).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub holds: Vec<String>,
    #[serde(default)]
    pub mdev: MdevArg,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read: Option<FieldRead>,
    /// Take a kernel stack on entry.
    #[serde(default)]
    pub stack: bool,
    /// Absent in a kernel without this function is normal (later patches of the series).
    #[serde(default)]
    pub optional: bool,
    /// The return type, when it is not the role's usual one. Absent in older recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ret: Option<RetType>,
    /// How many arguments the C function takes, when not its role's usual number: evidence
    /// shows only these of the captured registers. Absent in older recordings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub args: Option<u8>,
    /// The module that holds the function when it is not the profile's (`vfio`, the VFIO
    /// core): looked up there, else in vmlinux (a kernel with the core built in).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub module: Option<String>,
}

impl FunctionSpec {
    /// How many arguments it takes: the profile's word, or its role's usual number.
    pub fn arg_count(&self) -> Option<u8> {
        self.args.or_else(|| self.role.default_args())
    }

    /// What the function returns: the profile's word, or its role's default.
    pub fn ret_type(&self) -> RetType {
        self.ret.unwrap_or_else(|| self.role.default_ret())
    }

    /// Every lock the function takes: its `takes`, and the probed lock when its contract
    /// is `not-held` (what `lock` has always meant).
    pub fn locks_taken<'a>(&'a self, probed: &'a str) -> Vec<&'a str> {
        let implied = (self.lock == LockContract::NotHeld).then_some(probed);
        with_implied(&self.takes, implied)
    }

    /// Every lock the function asserts held: its `holds`, and the probed lock when its
    /// contract is `held`.
    pub fn locks_held<'a>(&'a self, probed: &'a str) -> Vec<&'a str> {
        let implied = (self.lock == LockContract::Held).then_some(probed);
        with_implied(&self.holds, implied)
    }
}

fn with_implied<'a>(listed: &'a [String], implied: Option<&'a str>) -> Vec<&'a str> {
    let mut out: Vec<&str> = listed.iter().map(String::as_str).collect();
    if let Some(l) = implied.filter(|l| !out.contains(l)) {
        out.push(l);
    }
    out
}

/// The kind of a declared lock. Only mutexes: a reader-writer semaphore has no owner for
/// its readers, so its owner word cannot say who holds it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum LockKind {
    #[default]
    Mutex,
}

/// A lock the profile names, and where its owner word is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockSpec {
    /// The lock class's name, as `takes`, `holds` and `lock_order` use it.
    pub name: String,
    #[serde(default)]
    pub kind: LockKind,
    /// A global symbol the path starts from (a pointer variable, or the lock itself).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub symbol: Option<String>,
    /// Or the function argument the path starts from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub arg: Option<u8>,
    /// `struct.member` steps from the start to the lock, each but the last a pointer to
    /// follow; empty when the symbol is the lock.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub path: Vec<String>,
    /// The owner word's offset inside the lock, when not the mutex's usual 0 (PREEMPT_RT).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_offset: Option<u32>,
    /// The mask that leaves the owner's task pointer, when not the mutex's usual one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_mask: Option<u64>,
}

/// A driver's profile.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Profile {
    pub name: String,
    /// Kernel module that holds the functions.
    pub module: String,
    /// The driver's `migration_flags` (VFIO_MIGRATION_STOP_COPY = 1, P2P = 2, PRE_COPY = 4).
    pub migration_flags: u32,
    /// The global pointer variable to the struct that holds the lock.
    pub lock_holder_symbol: String,
    /// `struct.member` of the lock inside it.
    pub lock_field: String,
    /// The documented order of declared locks, outermost first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub lock_order: Vec<String>,
    /// The declared locks. Absent in older profiles, which know the probed lock only.
    #[serde(default, rename = "lock", skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<LockSpec>,
    #[serde(rename = "function")]
    pub functions: Vec<FunctionSpec>,
}

/// A profile file that could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProfileError {
    #[error("cannot read profile file {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("profile file {path} is not valid: {message}")]
    Parse { path: String, message: String },
}

pub const VFIO_MIGRATION_STOP_COPY: u32 = 1;
pub const VFIO_MIGRATION_P2P: u32 = 2;
pub const VFIO_MIGRATION_PRE_COPY: u32 = 4;

impl Profile {
    /// The name of the lock the probes read at entry (the one `lock = held|not-held` is
    /// about): the declared lock at `lock_holder_symbol` → `lock_field`, or, in a profile
    /// that declares none, the member's own name.
    pub fn probed_lock(&self) -> &str {
        self.locks
            .iter()
            .find(|l| {
                l.symbol.as_deref() == Some(self.lock_holder_symbol.as_str())
                    && l.path == [self.lock_field.as_str()]
            })
            .map(|l| l.name.as_str())
            .unwrap_or_else(|| {
                self.lock_field
                    .rsplit('.')
                    .next()
                    .unwrap_or(&self.lock_field)
            })
    }

    /// Every lock name `takes`, `holds` and `lock_order` use is declared, once, with one
    /// start (a symbol or an argument).
    fn check_locks(&self) -> Result<(), String> {
        let mut seen = std::collections::HashSet::new();
        for l in &self.locks {
            if l.name.is_empty() || !seen.insert(l.name.as_str()) {
                return Err(format!("lock {:?} is declared twice or unnamed", l.name));
            }
            match (&l.symbol, l.arg) {
                (Some(_), None) => {}
                (None, Some(_)) if !l.path.is_empty() => {}
                _ => {
                    return Err(format!(
                        "lock {:?} needs either `symbol` or `arg` and a `path`",
                        l.name
                    ))
                }
            }
        }
        let probed = self.probed_lock();
        let known = |n: &str| n == probed || seen.contains(n);
        let uses = self.functions.iter().flat_map(|f| {
            f.takes
                .iter()
                .chain(&f.holds)
                .map(move |l| (format!("function {}", f.name), l))
        });
        let order = self
            .lock_order
            .iter()
            .map(|l| ("lock_order".to_string(), l));
        for (who, lock) in uses.chain(order) {
            if !known(lock) {
                return Err(format!(
                    "{who} names lock {lock:?}, which no [[lock]] declares"
                ));
            }
        }
        Ok(())
    }

    /// The modules other than the profile's that hold some of its functions (the VFIO
    /// core's), in the order rows name them.
    pub fn other_modules(&self) -> Vec<&str> {
        let mut out: Vec<&str> = Vec::new();
        for m in self.functions.iter().filter_map(|f| f.module.as_deref()) {
            if m != self.module && !out.contains(&m) {
                out.push(m);
            }
        }
        out
    }

    /// The module a function is looked up in.
    pub fn module_of<'a>(&'a self, f: &'a FunctionSpec) -> &'a str {
        f.module.as_deref().unwrap_or(&self.module)
    }

    /// The built-in row of `name`, if the profile has one.
    pub fn function(&self, name: &str) -> Option<&FunctionSpec> {
        self.functions.iter().find(|f| f.name == name)
    }

    /// Parses a profile file's text. `origin` names it in errors.
    ///
    /// A file with `base = "vfio_ap"` starts from the built-in profile: its `[[function]]`
    /// rows add functions or replace those of the same name.
    pub fn from_toml(text: &str, origin: &str) -> Result<Profile, ProfileError> {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct File {
            base: Option<String>,
            name: Option<String>,
            module: Option<String>,
            migration_flags: Option<u32>,
            lock_holder_symbol: Option<String>,
            lock_field: Option<String>,
            lock_order: Option<Vec<String>>,
            #[serde(default)]
            lock: Vec<LockSpec>,
            #[serde(default)]
            function: Vec<FunctionSpec>,
        }
        let parse_err = |message: String| ProfileError::Parse {
            path: origin.to_string(),
            message,
        };
        let file: File = toml::from_str(text).map_err(|e| parse_err(e.to_string()))?;
        let mut profile = match file.base.as_deref() {
            Some("vfio_ap") => Profile::vfio_ap(),
            Some(other) => {
                return Err(parse_err(format!(
                    "unknown base profile {other:?}; the built-in one is \"vfio_ap\""
                )))
            }
            None => {
                let missing =
                    |what: &str| parse_err(format!("without `base`, `{what}` is required"));
                Profile {
                    name: file.name.clone().ok_or_else(|| missing("name"))?,
                    module: file.module.clone().ok_or_else(|| missing("module"))?,
                    migration_flags: file.migration_flags.unwrap_or(VFIO_MIGRATION_STOP_COPY),
                    lock_holder_symbol: file
                        .lock_holder_symbol
                        .clone()
                        .ok_or_else(|| missing("lock_holder_symbol"))?,
                    lock_field: file
                        .lock_field
                        .clone()
                        .ok_or_else(|| missing("lock_field"))?,
                    lock_order: Vec::new(),
                    locks: Vec::new(),
                    functions: Vec::new(),
                }
            }
        };
        if let Some(v) = file.name {
            profile.name = v;
        }
        if let Some(v) = file.module {
            profile.module = v;
        }
        if let Some(v) = file.migration_flags {
            profile.migration_flags = v;
        }
        if let Some(v) = file.lock_holder_symbol {
            profile.lock_holder_symbol = v;
        }
        if let Some(v) = file.lock_field {
            profile.lock_field = v;
        }
        if let Some(v) = file.lock_order {
            profile.lock_order = v;
        }
        for lock in file.lock {
            match profile.locks.iter_mut().find(|l| l.name == lock.name) {
                Some(existing) => *existing = lock,
                None => profile.locks.push(lock),
            }
        }
        for row in file.function {
            if row.name.is_empty() {
                return Err(parse_err("a [[function]] row has an empty name".into()));
            }
            match profile.functions.iter_mut().find(|f| f.name == row.name) {
                Some(existing) => *existing = row,
                None => profile.functions.push(row),
            }
        }
        profile.check_locks().map_err(parse_err)?;
        Ok(profile)
    }

    /// Reads a profile file.
    pub fn load(path: &Path) -> Result<Profile, ProfileError> {
        let text = std::fs::read_to_string(path).map_err(|source| ProfileError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Profile::from_toml(&text, &path.display().to_string())
    }

    /// The profile as TOML, as stored in a recording's header.
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("a profile always serializes")
    }

    /// The profile as a file for a user to edit and pass back with `--profile`: the TOML of
    /// [`Profile::to_toml`] under comments that say what each key may hold.
    pub fn to_editable_toml(&self) -> String {
        let mut out = String::from(EDITABLE_HEADER);
        out.push_str(&self.to_toml());
        out
    }

    /// Name → index into `functions`, stripping compiler-clone suffixes.
    pub fn index(&self) -> HashMap<String, usize> {
        self.functions
            .iter()
            .enumerate()
            .map(|(i, f)| (f.name.clone(), i))
            .collect()
    }
}

const EDITABLE_HEADER: &str = "\
# An aptrace profile: what each traced function of the driver means (docs/profile.md).
# Edit it and pass it to `aptrace live --profile FILE` (or report, tui, replay).
# A file that starts with `base = \"vfio_ap\"` instead of `name` keeps the built-in
# profile and adds or replaces only the [[function]] rows it lists.
#
# [[function]] keys:
#   name      the kernel symbol (compiler clones such as NAME.isra.0 are found too)
#   role      probe, init-dev, migration-capabilities, open, close, remove, release-dev,
#             alloc-field, free-field, set-state, get-state, get-data-size,
#             transition-step, reset, mig-file-open, mig-file-read, mig-file-write,
#             mig-file-release, buffer-alloc, buffer-free, other
#   lock      none, held (the code asserts the lock: lockdep_assert_held),
#             not-held (the function takes the lock itself)
#   mdev      object (arg 0 is the ap_matrix_mdev or its vfio_device), mdev-device
#             (arg 0 is a struct mdev_device), none
#   ret       int, ssize, pointer, bool, size, void (default: the role's usual type)
#   args      how many arguments the C function takes (default: the role's usual number)
#   read      { field = \"struct.member\", arg = N, at = \"entry\"|\"exit\", size = 8,
#             path = [\"struct.member\", ...] } (path: pointers followed first, at most 3)
#   stack     true: take a kernel stack at entry
#   optional  true: a kernel without this function (or with it inlined) is normal
#   takes     declared locks the function takes, e.g. [\"guests_lock\"] (not-held adds
#             the probed lock)
#   holds     declared locks the function asserts held (held adds the probed lock)
#   module    the module that holds the function when not the profile's (e.g. \"vfio\",
#             the VFIO core; looked up in vmlinux too, where the core is built in)
#
# [[lock]] keys: name; symbol (a global) or arg (an argument number); path, the
# \"struct.member\" steps to the lock (each but the last a pointer); kind = \"mutex\";
# owner_offset and owner_mask when not the mutex's usual ones.
# lock_order: the documented order of declared locks, outermost first; an order edge
# against it is a lock-order finding, as is any cycle of order edges.

";

/// `vfio_ap_set_state.isra.0` → (`vfio_ap_set_state`, true).
pub fn strip_clone_suffix(name: &str) -> (&str, bool) {
    match name.find('.') {
        Some(i) => (&name[..i], true),
        None => (name, false),
    }
}

#[cfg(test)]
mod tests;

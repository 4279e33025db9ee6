// SPDX-License-Identifier: GPL-2.0
/*
 * vfio_ap model: the s390 vfio_ap driver's mdev lifecycle and live-migration functions
 * (patch 03 of the v3 "s390/vfio-ap: live guest migration" series, plus the later
 * patches' set_state logic) with their real names, signatures, call order, locking and
 * allocations, running on any kernel (x86_64 or s390x) without AP hardware or the VFIO
 * core. The VFIO/mdev core is modelled by the model_vfio_* functions below or, in the
 * real-core build, is the kernel's own; the driver functions are exactly where aptrace
 * puts its probes.
 *
 * Control surface: /sys/kernel/debug/vfio_ap_model/ctl (see testbed/README.md).
 *
 * Never frees twice: Debian's hardened allocator would oops.
 */
#include <linux/module.h>
#include <linux/kernel.h>
#include <linux/types.h>
#include <linux/device.h>
#include <linux/mutex.h>
#include <linux/spinlock.h>
#include <linux/slab.h>
#include <linux/debugfs.h>
#include <linux/uaccess.h>
#include <linux/kthread.h>
#include <linux/kref.h>
#include <linux/hashtable.h>
#include <linux/list.h>
#include <linux/sched.h>
#include <linux/err.h>
#include <linux/string.h>
#include <linux/bitops.h>
#include <linux/stddef.h>
#include <linux/anon_inodes.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/overflow.h>
#include <linux/vmalloc.h>
#include <linux/mm.h>
#include <linux/version.h>
#include <linux/refcount.h>
#include <linux/completion.h>
#ifdef APTRACE_REAL_CORE
/*
 * The real-core build (xtask passes APTRACE_REAL_CORE=1 where the kernel ships vfio and
 * vfio_iommu_type1): the driver registers an mdev parent and driver with the kernel's own
 * mdev core (with APTRACE_NO_MDEV, where the kernel has no mdev: devices of its own, made
 * by ctl's vcreate), allocates its devices with vfio_alloc_device and registers them with
 * vfio_register_emulated_iommu_dev, so userspace drives it through the real VFIO uAPI
 * (testbed/client). The model core below stays in the same module for the debugfs
 * scenarios: an mdev created through ctl lives in the model's slots and never meets the
 * real core. The driver functions are the same for both.
 */
#include <linux/vfio.h>
#include <linux/mdev.h>
#define vfio_device_model vfio_device
#define vfio_device_ops_model vfio_device_ops
#define vfio_migration_ops_model vfio_migration_ops
#define mdev_device_model mdev_device
#define mdev_type_model mdev_type
#define mdev_parent_model mdev_parent
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 2, 0)
/* 6.1's uAPI has no PRE_COPY (and its core no migration_get_data_size op) */
#define VFIO_DEVICE_STATE_PRE_COPY 6
#define VFIO_DEVICE_STATE_PRE_COPY_P2P 7
#define VFIO_MIGRATION_PRE_COPY (1 << 2)
#endif
#define VFIO_DEVICE_NUM_STATES (VFIO_DEVICE_STATE_PRE_COPY_P2P + 1)
#endif

#define VFIO_AP_MODULE_NAME "vfio_ap"

/*
 * With -DAPTRACE_MODEL_MAINLINE (testbed scenario mainline-driver, kmod::build_mainline) the
 * module is vfio_ap as mainline has it, as enterprise distributions ship it: the mdev
 * lifecycle (probe, init_dev, open/close, remove, release_dev, the KVM pointer, reset of the
 * queues), none of the live-migration series (no migration data, functions, files or
 * configuration buffers, no mig_ops: the core sees a device without migration).
 */
#ifndef APTRACE_MODEL_MAINLINE
#define APTRACE_SERIES
#define APTRACE_SERIES_ENABLED 1
#endif
#define VFIO_AP_DRV_NAME "vfio_ap"

/* ---------------------------------------------------------------------------------------
 * Types. Where the real ones live in the VFIO core or in s390-only headers, local models
 * with the same shape stand in (the first member of ap_matrix_mdev is the vfio device).
 */

#define AP_DEVICES 256
#define AP_DOMAINS 256

/* The PQAP(QCI) block, 128 bytes like arch/s390/include/asm/ap.h's. */
struct ap_config_info {
	unsigned int apsc	 : 1;
	unsigned int apxa	 : 1;
	unsigned int qact	 : 1;
	unsigned int rc8a	 : 1;
	unsigned int l		 : 1;
	unsigned int lext	 : 3;
	unsigned int _reserved2	 : 24;
	unsigned char na;
	unsigned char nd;
	unsigned char _reserved3[10];
	unsigned int apm[8];
	unsigned int aqm[8];
	unsigned int adm[8];
	unsigned char _reserved4[16];
} __aligned(8);

#ifndef APTRACE_REAL_CORE
/* uAPI v2 migration states and flags (include/uapi/linux/vfio.h) */
enum vfio_device_mig_state {
	VFIO_DEVICE_STATE_ERROR = 0,
	VFIO_DEVICE_STATE_STOP = 1,
	VFIO_DEVICE_STATE_RUNNING = 2,
	VFIO_DEVICE_STATE_STOP_COPY = 3,
	VFIO_DEVICE_STATE_RESUMING = 4,
	VFIO_DEVICE_STATE_RUNNING_P2P = 5,
	VFIO_DEVICE_STATE_PRE_COPY = 6,
	VFIO_DEVICE_STATE_PRE_COPY_P2P = 7,
	VFIO_DEVICE_NUM_STATES,
};
#define VFIO_MIGRATION_STOP_COPY (1 << 0)
#define VFIO_MIGRATION_P2P (1 << 1)
#define VFIO_MIGRATION_PRE_COPY (1 << 2)

struct file;
struct vfio_device_model;

#endif /* !APTRACE_REAL_CORE */

/* struct kvm stand-in: the guest that opened the device */
struct kvm_model {
	pid_t guest_pid;
	char guest_comm[TASK_COMM_LEN];
};

#ifndef APTRACE_REAL_CORE

struct vfio_device_ops_model {
	char *name;
	int (*init)(struct vfio_device_model *vdev);
	void (*release)(struct vfio_device_model *vdev);
	int (*open_device)(struct vfio_device_model *vdev);
	void (*close_device)(struct vfio_device_model *vdev);
};

struct vfio_migration_ops_model {
	struct file *(*migration_set_state)(struct vfio_device_model *vdev,
					    enum vfio_device_mig_state new_state);
	int (*migration_get_state)(struct vfio_device_model *vdev,
				   enum vfio_device_mig_state *curr_state);
	int (*migration_get_data_size)(struct vfio_device_model *vdev,
				       unsigned long *stop_copy_length);
};

/* Shaped like the head of include/linux/vfio.h's struct vfio_device. */
struct vfio_device_model {
	struct device *dev;	/* the mdev's device: dev_name(vdev->dev) is the UUID */
	const struct vfio_device_ops_model *ops;
	const struct vfio_migration_ops_model *mig_ops;
	const void *log_ops;
	void *group;
	void *dev_set;
	struct list_head dev_set_list;
	unsigned int migration_flags;
	struct kvm_model *kvm;
	/* members below are the core's */
	unsigned int index;
	unsigned int open_count;
};

/* struct mdev_device stand-in */
struct mdev_device_model {
	struct device dev;
	char uuid[40];
	bool active;
};

struct mdev_type_model {
	const char *sysfs_name;
	const char *pretty_name;
	unsigned int available_instances;
};

struct mdev_parent_model {
	struct device *dev;
	void *mdev_driver;
	struct mdev_type_model **types;
	unsigned int nr_types;
	atomic_t available_instances;
};
#endif /* !APTRACE_REAL_CORE */

/* Like drivers/s390/crypto/vfio_ap_private.h (v6.2+): mdevs_lock after the QCI block and
 * the mdev list, guests_lock after the driver pointer. */
struct ap_matrix_dev {
	struct device device;
	struct ap_config_info info;
	struct list_head mdev_list;
	struct mutex mdevs_lock; /* serializes access to each ap_matrix_mdev */
	void *vfio_ap_drv;	 /* struct ap_driver * */
	struct mutex guests_lock; /* serializes access to each KVM guest */
	struct mdev_parent_model parent;
	struct mdev_type_model mdev_type;
	struct mdev_type_model *mdev_types[1];
};

struct ap_matrix {
	unsigned long apm_max;
	DECLARE_BITMAP(apm, AP_DEVICES);
	unsigned long aqm_max;
	DECLARE_BITMAP(aqm, AP_DOMAINS);
	unsigned long adm_max;
	DECLARE_BITMAP(adm, AP_DOMAINS);
};

struct ap_queue_table {
	DECLARE_HASHTABLE(queues, 8);
};

typedef int (*crypto_hook)(void *vcpu);

/* vfio_ap_migration.c: one per migration session; lives inside mig_data */
struct vfio_ap_migration_file {
	struct file *filp;		/* the anon-inode file while the session lasts */
	struct vfio_ap_config *ap_config; /* the guest's AP configuration buffer */
	unsigned long config_sz;
};

/* vfio_ap_migration.c: what init_migration_data allocates */
struct vfio_ap_migration_data {
	enum vfio_device_mig_state mig_state;
	struct vfio_ap_migration_file resuming_mig_file;
	struct vfio_ap_migration_file stop_copy_mig_file;
};

/* The queue information PQAP(TAPQ) returns, per queue of the guest's configuration. */
struct vfio_ap_queue_info {
	u64 data;
	u16 apqn;
	u8 reserved[6];
};

/* The guest's AP configuration: what the stop-copy file streams out and the resuming
 * file takes in. */
struct vfio_ap_config {
	u32 num_queues;
	u8 reserved[4];
	u64 adm[DIV_ROUND_UP(AP_DOMAINS, 64)];
	struct vfio_ap_queue_info qinfo[];
};

struct ap_matrix_mdev {
	struct vfio_device_model vdev;	/* first: the vdev pointer is the mdev pointer */
	struct list_head node;
	struct ap_matrix matrix;
	struct ap_matrix shadow_apcb;
	struct kvm_model *kvm;
	crypto_hook pqap_hook;
	struct mdev_device_model *mdev;
	struct ap_queue_table qtable;
	void *req_trigger;
	void *cfg_chg_trigger;
	DECLARE_BITMAP(apm_add, AP_DEVICES);
	DECLARE_BITMAP(aqm_add, AP_DOMAINS);
	DECLARE_BITMAP(adm_add, AP_DOMAINS);
#ifdef APTRACE_SERIES
	struct vfio_ap_migration_data *mig_data;
#endif
#ifdef APTRACE_REAL_CORE
	/* the guest stand-in of a device opened through the real core (see vfio_ap_guest) */
	struct kvm_model opener;
#endif
};

struct ap_matrix_dev *matrix_dev;

/* The mdev's migration data, for the control surface's lines (none without the series). */
#ifdef APTRACE_SERIES
#define model_mig_data(m) ((m)->mig_data)
#define MODEL_MIG_DATA_OFF offsetof(struct ap_matrix_mdev, mig_data)
#else
#define model_mig_data(m) ((struct vfio_ap_migration_data *)NULL)
#define MODEL_MIG_DATA_OFF ((size_t)0)
#endif

/* ---------------------------------------------------------------------------------------
 * Faults (one-shot unless noted), armed through the control surface.
 */
enum {
	FAULT_SKIP_RELEASE,	 /* close_device and release_dev skip freeing mig_data */
	FAULT_DOUBLE_INIT,	 /* open_device runs init_migration_data twice */
	FAULT_INIT_UNLOCKED,	 /* open_device runs init_migration_data without the lock */
	FAULT_REGISTER_FAIL,	 /* registration fails: probe's error path self-deadlocks */
	FAULT_ACCEPT_BAD_STATE,	 /* set_state accepts a state outside migration_flags */
	FAULT_OPEN_FAIL,	 /* set_kvm fails, the error path cleans up */
	FAULT_OPEN_FAIL_NOCLEAN, /* set_kvm fails, the error path forgets mig_data */
	/* The bugs the series' reviews found, one per fault: */
	FAULT_FILE_NO_PIN,	 /* a migration file does not pin the registration (v4) */
	FAULT_PARTIAL_RESUME_DOUBLE_FREE, /* a failed partial write frees the stored buffer */
	FAULT_PARTIAL_RESUME_LEAK, /* a partial first write's buffer is never stored */
	FAULT_BUFFER_LEAK_ON_CLOSE, /* close with a migration fd open keeps the buffers */
	FAULT_UNLOCKED_FILE_RELEASE, /* the next file: no own reference, unlocked release */
	FAULT_PROBE_HOLDS_LOCK,	 /* probe holds mdevs_lock across registration (AB-BA) */
	FAULT_MAX,
};
static const char * const fault_names[FAULT_MAX] = {
	"skip-release", "double-init", "init-unlocked", "register-fail",
	"accept-bad-state", "open-fail", "open-fail-noclean", "file-no-pin",
	"partial-resume-double-free", "partial-resume-leak", "buffer-leak-on-close",
	"unlocked-file-release", "probe-holds-lock",
};
static unsigned long faults;

/* ---------------------------------------------------------------------------------------
 * Prototypes: every driver function is a real, global, non-inlined symbol.
 */
noinline int vfio_ap_mdev_probe(struct mdev_device_model *mdev);
noinline void vfio_ap_mdev_remove(struct mdev_device_model *mdev);
noinline int vfio_ap_mdev_init_dev(struct vfio_device_model *vdev);
noinline void vfio_ap_mdev_release_dev(struct vfio_device_model *vdev);
noinline int vfio_ap_mdev_open_device(struct vfio_device_model *vdev);
noinline void vfio_ap_mdev_close_device(struct vfio_device_model *vdev);
noinline int vfio_ap_mdev_set_kvm(struct ap_matrix_mdev *matrix_mdev, struct kvm_model *kvm);
noinline void vfio_ap_mdev_unset_kvm(struct ap_matrix_mdev *matrix_mdev);
noinline void vfio_ap_init_migration_capabilities(struct ap_matrix_mdev *matrix_mdev);
noinline int vfio_ap_init_migration_data(struct ap_matrix_mdev *matrix_mdev);
noinline void vfio_ap_release_migration_data(struct ap_matrix_mdev *matrix_mdev);
noinline struct file *vfio_ap_set_state(struct vfio_device_model *vdev,
					enum vfio_device_mig_state new_state);
noinline int vfio_ap_get_state(struct vfio_device_model *vdev,
			       enum vfio_device_mig_state *current_state);
noinline int vfio_ap_get_data_size(struct vfio_device_model *vdev,
				   unsigned long *stop_copy_length);
noinline struct file *vfio_ap_transition_to_state(struct ap_matrix_mdev *matrix_mdev,
						  enum vfio_device_mig_state new_state);
noinline void vfio_ap_reset_migration_state(struct ap_matrix_mdev *matrix_mdev);
noinline struct file *vfio_ap_open_file_stream(struct ap_matrix_mdev *matrix_mdev,
					       const struct file_operations *fops, int flags);
noinline struct file *vfio_ap_resuming_init(struct ap_matrix_mdev *matrix_mdev);
noinline ssize_t vfio_ap_stop_copy_read(struct file *filp, char __user *buf, size_t len,
					loff_t *pos);
noinline ssize_t vfio_ap_resuming_write(struct file *filp, const char __user *buf, size_t len,
				       loff_t *pos);
noinline int vfio_ap_release_mig_file(struct inode *file_inode, struct file *filp);
noinline void vfio_ap_release_mig_files(struct ap_matrix_mdev *matrix_mdev);
noinline void vfio_ap_release_stop_copy_file(struct vfio_ap_migration_data *mig_data);
noinline void vfio_ap_release_resuming_file(struct vfio_ap_migration_data *mig_data);
noinline int vfio_ap_get_config(struct ap_matrix_mdev *matrix_mdev);
noinline ssize_t allocate_ap_config(struct vfio_ap_config **ap_config, const char __user *buf,
				    size_t len);
noinline int do_post_copy_validation(const char *mdev_name,
				     struct vfio_ap_config *source_config);
noinline int vfio_ap_set_new_guest_config(struct ap_matrix_mdev *matrix_mdev,
					  struct ap_matrix *guest_matrix);
noinline ssize_t vfio_ap_mdev_ioctl(struct vfio_device_model *vdev, unsigned int cmd,
				    unsigned long arg);
noinline bool model_vfio_device_try_get_registration(struct vfio_device_model *vdev);
noinline void model_vfio_device_put_registration(struct vfio_device_model *vdev);
noinline unsigned long vfio_ap_model_ping(struct ap_matrix_dev *md);
noinline struct ap_matrix_mdev *model_vfio_alloc_device(struct mdev_device_model *mdev);
noinline int model_vfio_register_emulated_iommu_dev(struct vfio_device_model *vdev);
noinline void model_vfio_unregister_group_dev(struct vfio_device_model *vdev);
noinline void model_vfio_put_device(struct vfio_device_model *vdev);
noinline int model_vfio_mig_get_next_state(struct vfio_device_model *vdev,
					   enum vfio_device_mig_state cur_fsm,
					   enum vfio_device_mig_state new_fsm,
					   enum vfio_device_mig_state *next_fsm);

#ifdef APTRACE_MODEL_REBUILD
/* ---------------------------------------------------------------------------------------
 * Only in the rebuilt module (testbed scenario module-reload: KCFLAGS=-DAPTRACE_MODEL_REBUILD):
 * several KiB of text ahead of every driver function, so a reload of the rebuilt module
 * puts each profiled function at another offset in .text and another address. No data is
 * added: struct layouts and the .bss/.data placement of matrix_dev stay those of the first
 * build (the agent's --offset overrides and --module-file stay valid; kmod.rs checks it).
 */
#define PAD4(x) x x x x
noinline int aptrace_model_rebuild_pad(volatile int *p);
noinline int aptrace_model_rebuild_pad(volatile int *p)
{
	PAD4(PAD4(PAD4(PAD4(PAD4(*p += 1;)))))
	return *p;
}
#endif

/* ---------------------------------------------------------------------------------------
 * The mdev pool: the model core keeps its objects in static slots (the real core
 * allocates them in vfio_main.c, outside the driver's text), so the only allocations from
 * the driver's text are the driver's own (mig_data), as upstream.
 */
#define MAX_MDEVS 16
struct model_slot {
	bool used;
	char name[40];		/* the mdev's UUID, as given to `create` */
	struct kref kref;	/* object life (vfio_device.device.kref in the real core) */
	bool registered;
	struct kvm_model *guest; /* the guest of the open device (vfio_device.kvm) */
	struct mdev_device_model mdev;
	struct ap_matrix_mdev matrix_mdev;
	struct kvm_model kvm;
	/* the core's registration count (vfio_device.refcount): 1 while registered, +1 per
	 * migration file that pins it */
	atomic_t registrations;
};
static struct model_slot slots[MAX_MDEVS];
static DEFINE_MUTEX(slots_lock);

static struct model_slot *slot_of_mdev(struct mdev_device_model *mdev)
{
	return container_of(mdev, struct model_slot, mdev);
}

static struct model_slot *slot_of_matrix_mdev(struct ap_matrix_mdev *m)
{
	return container_of(m, struct model_slot, matrix_mdev);
}

/* Whether a device lives in the model core's slots (always, without the real core). */
static bool model_owned(const void *p)
{
	return (const char *)p >= (const char *)slots &&
	       (const char *)p < (const char *)(slots + MAX_MDEVS);
}

/* ---------------------------------------------------------------------------------------
 * Model of the VFIO core.
 */
static const struct vfio_device_ops_model vfio_ap_matrix_dev_ops;

static void model_vfio_device_release(struct kref *kref)
{
	struct model_slot *slot = container_of(kref, struct model_slot, kref);
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;

	if (vdev->ops->release)
		vdev->ops->release(vdev);
	mutex_lock(&slots_lock);
	slot->used = false;
	mutex_unlock(&slots_lock);
}

/* vfio_alloc_device(): the object, then ops->init() */
noinline struct ap_matrix_mdev *model_vfio_alloc_device(struct mdev_device_model *mdev)
{
	struct model_slot *slot = slot_of_mdev(mdev);
	struct ap_matrix_mdev *matrix_mdev = &slot->matrix_mdev;
	int ret;

	memset(matrix_mdev, 0, sizeof(*matrix_mdev));
	matrix_mdev->vdev.dev = &mdev->dev;
	matrix_mdev->vdev.ops = &vfio_ap_matrix_dev_ops;
	matrix_mdev->vdev.index = slot - slots;
	INIT_LIST_HEAD(&matrix_mdev->vdev.dev_set_list);
	kref_init(&slot->kref);
	ret = matrix_mdev->vdev.ops->init(&matrix_mdev->vdev);
	if (ret)
		return ERR_PTR(ret);
	return matrix_mdev;
}

noinline int model_vfio_register_emulated_iommu_dev(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);

	if (test_and_clear_bit(FAULT_REGISTER_FAIL, &faults))
		return -EIO;
	atomic_set(&slot_of_matrix_mdev(matrix_mdev)->registrations, 1);
	slot_of_matrix_mdev(matrix_mdev)->registered = true;
	return 0;
}

/* The core's own pin (vfio_device_try_get_registration, not exported by 6.1 or 6.12):
 * a migration file holds one until its release. */
noinline bool model_vfio_device_try_get_registration(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);

	return atomic_inc_not_zero(&slot_of_matrix_mdev(matrix_mdev)->registrations);
}

noinline void model_vfio_device_put_registration(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);

	atomic_dec(&slot_of_matrix_mdev(matrix_mdev)->registrations);
}

/* The real core waits here until every pin is dropped; the model's remove refuses
 * (-EBUSY) instead while a migration file pins the device (see do_remove). */
noinline void model_vfio_unregister_group_dev(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);

	atomic_dec(&slot_of_matrix_mdev(matrix_mdev)->registrations);
	slot_of_matrix_mdev(matrix_mdev)->registered = false;
}

noinline void model_vfio_put_device(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);

	kref_put(&slot_of_matrix_mdev(matrix_mdev)->kref, model_vfio_device_release);
}

/* vfio_mig_get_next_state() of drivers/vfio/vfio_main.c */
noinline int model_vfio_mig_get_next_state(struct vfio_device_model *vdev,
					   enum vfio_device_mig_state cur_fsm,
					   enum vfio_device_mig_state new_fsm,
					   enum vfio_device_mig_state *next_fsm)
{
	enum { S_ERR = 0, S_STOP, S_RUN, S_SC, S_RES, S_RP2P, S_PC, S_PCP2P };
	static const u8 table[VFIO_DEVICE_NUM_STATES][VFIO_DEVICE_NUM_STATES] = {
		[S_STOP] = { [S_STOP] = S_STOP, [S_RUN] = S_RP2P, [S_PC] = S_RP2P,
			     [S_PCP2P] = S_RP2P, [S_SC] = S_SC, [S_RES] = S_RES,
			     [S_RP2P] = S_RP2P, [S_ERR] = S_ERR },
		[S_RUN] = { [S_STOP] = S_RP2P, [S_RUN] = S_RUN, [S_PC] = S_PC,
			    [S_PCP2P] = S_PC, [S_SC] = S_RP2P, [S_RES] = S_RP2P,
			    [S_RP2P] = S_RP2P, [S_ERR] = S_ERR },
		[S_PC] = { [S_STOP] = S_RUN, [S_RUN] = S_RUN, [S_PC] = S_PC,
			   [S_PCP2P] = S_PCP2P, [S_SC] = S_PCP2P, [S_RES] = S_RUN,
			   [S_RP2P] = S_RUN, [S_ERR] = S_ERR },
		[S_PCP2P] = { [S_STOP] = S_RP2P, [S_RUN] = S_RP2P, [S_PC] = S_PC,
			      [S_PCP2P] = S_PCP2P, [S_SC] = S_SC, [S_RES] = S_RP2P,
			      [S_RP2P] = S_RP2P, [S_ERR] = S_ERR },
		[S_SC] = { [S_STOP] = S_STOP, [S_RUN] = S_STOP, [S_PC] = S_ERR,
			   [S_PCP2P] = S_ERR, [S_SC] = S_SC, [S_RES] = S_STOP,
			   [S_RP2P] = S_STOP, [S_ERR] = S_ERR },
		[S_RES] = { [S_STOP] = S_STOP, [S_RUN] = S_STOP, [S_PC] = S_STOP,
			    [S_PCP2P] = S_STOP, [S_SC] = S_STOP, [S_RES] = S_RES,
			    [S_RP2P] = S_STOP, [S_ERR] = S_ERR },
		[S_RP2P] = { [S_STOP] = S_STOP, [S_RUN] = S_RUN, [S_PC] = S_RUN,
			     [S_PCP2P] = S_PCP2P, [S_SC] = S_STOP, [S_RES] = S_STOP,
			     [S_RP2P] = S_RP2P, [S_ERR] = S_ERR },
		[S_ERR] = { [S_STOP] = S_ERR, [S_RUN] = S_ERR, [S_PC] = S_ERR,
			    [S_PCP2P] = S_ERR, [S_SC] = S_ERR, [S_RES] = S_ERR,
			    [S_RP2P] = S_ERR, [S_ERR] = S_ERR },
	};
	static const unsigned int state_flags[VFIO_DEVICE_NUM_STATES] = {
		[S_STOP] = VFIO_MIGRATION_STOP_COPY,
		[S_RUN] = VFIO_MIGRATION_STOP_COPY,
		[S_PC] = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY,
		[S_PCP2P] = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P |
			    VFIO_MIGRATION_PRE_COPY,
		[S_SC] = VFIO_MIGRATION_STOP_COPY,
		[S_RES] = VFIO_MIGRATION_STOP_COPY,
		[S_RP2P] = VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P,
		[S_ERR] = ~0U,
	};
	unsigned int flags = vdev->migration_flags;

	if (cur_fsm >= VFIO_DEVICE_NUM_STATES ||
	    (state_flags[cur_fsm] & flags) != state_flags[cur_fsm])
		return -EINVAL;
	if (new_fsm >= VFIO_DEVICE_NUM_STATES ||
	    (state_flags[new_fsm] & flags) != state_flags[new_fsm])
		return -EINVAL;
	*next_fsm = table[cur_fsm][new_fsm];
	while ((state_flags[*next_fsm] & flags) != state_flags[*next_fsm])
		*next_fsm = table[*next_fsm][new_fsm];
	return (*next_fsm != VFIO_DEVICE_STATE_ERROR) ? 0 : -EINVAL;
}

/* ---------------------------------------------------------------------------------------
 * Which core a device belongs to: the model's for the devices in its slots (every device
 * without APTRACE_REAL_CORE), the kernel's for the mdevs its mdev core creates. The driver
 * functions call these where the series calls the core.
 */
static struct ap_matrix_mdev *core_alloc_device(struct mdev_device_model *mdev)
{
#ifdef APTRACE_REAL_CORE
	if (!model_owned(mdev))
		return vfio_alloc_device(ap_matrix_mdev, vdev, &mdev->dev,
					 &vfio_ap_matrix_dev_ops);
#endif
	return model_vfio_alloc_device(mdev);
}

static int core_register(struct vfio_device_model *vdev)
{
#ifdef APTRACE_REAL_CORE
	if (!model_owned(vdev)) {
		if (test_and_clear_bit(FAULT_REGISTER_FAIL, &faults))
			return -EIO;
		return vfio_register_emulated_iommu_dev(vdev);
	}
#endif
	return model_vfio_register_emulated_iommu_dev(vdev);
}

static void core_unregister(struct vfio_device_model *vdev)
{
#ifdef APTRACE_REAL_CORE
	if (!model_owned(vdev)) {
		/* waits until every registration (open fd, pinning migration file) is gone */
		vfio_unregister_group_dev(vdev);
		return;
	}
#endif
	model_vfio_unregister_group_dev(vdev);
}

static void core_put_device(struct vfio_device_model *vdev)
{
#ifdef APTRACE_REAL_CORE
	if (!model_owned(vdev)) {
		vfio_put_device(vdev);
		return;
	}
#endif
	model_vfio_put_device(vdev);
}

/*
 * The registration pin a migration file holds (the series' vfio_device_try_get_registration
 * and vfio_device_put_registration). Neither 6.1 nor 6.12 exports them; what they do is
 * public in struct vfio_device (refcount, comp), so the real-core build does the same on
 * the same fields: vfio_unregister_group_dev waits for the count the file holds, exactly
 * as it waits for an open device fd.
 */
static __maybe_unused bool core_try_get_registration(struct vfio_device_model *vdev)
{
#ifdef APTRACE_REAL_CORE
	if (!model_owned(vdev))
		return refcount_inc_not_zero(&vdev->refcount);
#endif
	return model_vfio_device_try_get_registration(vdev);
}

static __maybe_unused void core_put_registration(struct vfio_device_model *vdev)
{
#ifdef APTRACE_REAL_CORE
	if (!model_owned(vdev)) {
		if (refcount_dec_and_test(&vdev->refcount))
			complete(&vdev->comp);
		return;
	}
#endif
	model_vfio_device_put_registration(vdev);
}

/* The arc table the driver walks: the kernel's own where there is one. */
static __maybe_unused int core_mig_get_next_state(struct vfio_device_model *vdev,
				   enum vfio_device_mig_state cur_fsm,
				   enum vfio_device_mig_state new_fsm,
				   enum vfio_device_mig_state *next_fsm)
{
#ifdef APTRACE_REAL_CORE
	return vfio_mig_get_next_state(vdev, cur_fsm, new_fsm, next_fsm);
#else
	return model_vfio_mig_get_next_state(vdev, cur_fsm, new_fsm, next_fsm);
#endif
}

/*
 * The guest of an opened device. The real driver refuses to open without vdev->kvm (QEMU
 * sets it through the KVM-VFIO device); the testbed's guests have no KVM, so the model's
 * open takes the task that opens the device as its guest: the writer of `open` in the
 * model core, the process opening the device fd through the real core.
 */
static struct kvm_model *vfio_ap_guest(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);

	if (model_owned(matrix_mdev))
		return slot_of_matrix_mdev(matrix_mdev)->guest;
#ifdef APTRACE_REAL_CORE
	matrix_mdev->opener.guest_pid = task_tgid_nr(current);
	get_task_comm(matrix_mdev->opener.guest_comm, current);
	return &matrix_mdev->opener;
#else
	return NULL;
#endif
}

static __maybe_unused bool model_state_supported(unsigned int flags, unsigned int s)
{
	switch (s) {
	case VFIO_DEVICE_STATE_STOP:
	case VFIO_DEVICE_STATE_RUNNING:
	case VFIO_DEVICE_STATE_STOP_COPY:
	case VFIO_DEVICE_STATE_RESUMING:
		return flags & VFIO_MIGRATION_STOP_COPY;
	case VFIO_DEVICE_STATE_RUNNING_P2P:
		return (flags & (VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P)) ==
		       (VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_P2P);
	case VFIO_DEVICE_STATE_PRE_COPY:
		return (flags & (VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY)) ==
		       (VFIO_MIGRATION_STOP_COPY | VFIO_MIGRATION_PRE_COPY);
	case VFIO_DEVICE_STATE_PRE_COPY_P2P:
		return (flags & 7) == 7;
	default:
		return false;
	}
}

static void vfio_ap_matrix_init(struct ap_config_info *info, struct ap_matrix *matrix)
{
	matrix->apm_max = info->apxa ? info->na : 63;
	matrix->aqm_max = info->apxa ? info->nd : 15;
	matrix->adm_max = info->apxa ? info->nd : 15;
}

/* ---------------------------------------------------------------------------------------
 * vfio_ap_migration.c: the series' migration files, configuration buffers and state
 * machine. The small static helpers of the series are global noinline symbols here so
 * that every one of them can be probed; a real build may inline them.
 */
#define MAX_AP_QUEUES (AP_DEVICES * AP_DOMAINS)
#define MODEL_AP_MKQID(apid, apqi) ((((apid) & 0xff) << 8) | ((apqi) & 0xff))

/* s390's inverted bit numbering (bit 0 is the leftmost), in portable code */
static inline void model_set_bit_inv(unsigned long nr, unsigned long *addr)
{
	set_bit(nr ^ (BITS_PER_LONG - 1), addr);
}

static inline unsigned long model_bit_inv(unsigned long bit)
{
	return bit ^ (BITS_PER_LONG - 1);
}

#ifdef APTRACE_SERIES
static int vfio_ap_mdev_get_num_queues(struct ap_matrix *matrix)
{
	return bitmap_weight(matrix->apm, AP_DEVICES) * bitmap_weight(matrix->aqm, AP_DOMAINS);
}

/* ap_tapq() stand-in: every queue answers AP_RESPONSE_NORMAL with the same facilities. */
static u64 model_ap_tapq(unsigned long apqn)
{
	return 0xd800c00004000000ULL;
}

/*
 * Files opened the way an earlier revision opened them (armed by a fault when the file
 * is created): FILE_NO_PIN took no registration pin (so the release puts none);
 * FILE_EARLY_RELEASE took no second reference of the driver's own and its release looks
 * at mig_data without mdevs_lock.
 */
enum { FILE_NO_PIN = 1, FILE_EARLY_RELEASE = 2 };
#define MAX_MARKED 8
static struct {
	struct file *filp;
	unsigned int how;
} marked[MAX_MARKED];
static DEFINE_SPINLOCK(marked_lock);

static void model_mark_file(struct file *filp, unsigned int how)
{
	int i;

	spin_lock(&marked_lock);
	for (i = 0; i < MAX_MARKED; i++)
		if (!marked[i].filp) {
			marked[i].filp = filp;
			marked[i].how = how;
			break;
		}
	spin_unlock(&marked_lock);
}

/* What the file was marked with; forgets it (the file is being released). */
static unsigned int model_take_mark(struct file *filp)
{
	unsigned int how = 0;
	int i;

	spin_lock(&marked_lock);
	for (i = 0; i < MAX_MARKED; i++)
		if (marked[i].filp == filp) {
			how = marked[i].how;
			marked[i].filp = NULL;
		}
	spin_unlock(&marked_lock);
	return how;
}

/*
 * The resuming buffer that the partial-resume-double-free fault freed while leaving it
 * in mig_data. The release helpers then do what the buggy driver did, call their kvfree
 * on it, except that the model skips the second kvfree itself: Debian's hardened
 * allocator would oops. The probes see the release helper reach a freed buffer.
 */
static void *stale_resume_buffer;

static void model_kvfree_resume_buffer(void *p)
{
	if (p && p == stale_resume_buffer) {
		stale_resume_buffer = NULL;
		return;
	}
	kvfree(p);
}

noinline void vfio_ap_release_stop_copy_file(struct vfio_ap_migration_data *mig_data)
{
	kfree(mig_data->stop_copy_mig_file.ap_config);
	mig_data->stop_copy_mig_file.ap_config = NULL;
	mig_data->stop_copy_mig_file.config_sz = 0;
	mig_data->stop_copy_mig_file.filp = NULL;
}

noinline void vfio_ap_release_resuming_file(struct vfio_ap_migration_data *mig_data)
{
	model_kvfree_resume_buffer(mig_data->resuming_mig_file.ap_config);
	mig_data->resuming_mig_file.ap_config = NULL;
	mig_data->resuming_mig_file.config_sz = 0;
	mig_data->resuming_mig_file.filp = NULL;
}

noinline int vfio_ap_release_mig_file(struct inode *file_inode, struct file *filp)
{
	struct ap_matrix_mdev *matrix_mdev = filp->private_data;
	unsigned int how = model_take_mark(filp);
	bool unlocked = how & FILE_EARLY_RELEASE;
	int ret = 0;

	/* the fault: an earlier revision looked at mig_data without mdevs_lock */
	if (!unlocked)
		mutex_lock(&matrix_dev->mdevs_lock);

	/* closed before the fd was released: vfio_ap_release_mig_files cleaned up */
	if (!matrix_mdev->mig_data)
		goto done;

	if (filp == matrix_mdev->mig_data->stop_copy_mig_file.filp)
		vfio_ap_release_stop_copy_file(matrix_mdev->mig_data);
	else if (filp == matrix_mdev->mig_data->resuming_mig_file.filp)
		vfio_ap_release_resuming_file(matrix_mdev->mig_data);
	else
		ret = -ENOENT;

done:
	if (!unlocked)
		mutex_unlock(&matrix_dev->mdevs_lock);
	if (!(how & FILE_NO_PIN))
		core_put_registration(&matrix_mdev->vdev);
	return ret;
}

static int validate_stop_copy_read_parms(struct file *filp, loff_t *pos, size_t len)
{
	struct ap_matrix_mdev *matrix_mdev = filp->private_data;
	loff_t total_len;

	lockdep_assert_held(&matrix_dev->mdevs_lock);

	if (check_add_overflow((loff_t)len, *pos, &total_len))
		return -EIO;
	if (!matrix_mdev->mig_data)
		return -ENODEV;
	if (matrix_mdev->mig_data->stop_copy_mig_file.filp != filp)
		return -EINVAL;
	return 0;
}

static size_t vfio_ap_config_size(struct ap_matrix_mdev *matrix_mdev, int *num_queues)
{
	lockdep_assert_held(&matrix_dev->mdevs_lock);

	*num_queues = vfio_ap_mdev_get_num_queues(&matrix_mdev->shadow_apcb);
	return *num_queues * sizeof(struct vfio_ap_queue_info) + sizeof(struct vfio_ap_config);
}

/* The guest's AP configuration into a new buffer in the stop-copy file's slot. */
noinline int vfio_ap_get_config(struct ap_matrix_mdev *matrix_mdev)
{
	struct vfio_ap_config *ap_configuration;
	unsigned long apid, apqi;
	size_t ap_config_size;
	int num_queues, i;

	lockdep_assert_held(&matrix_dev->mdevs_lock);

	ap_config_size = vfio_ap_config_size(matrix_mdev, &num_queues);
	ap_configuration = kzalloc(ap_config_size, GFP_KERNEL_ACCOUNT);
	if (!ap_configuration)
		return -ENOMEM;
	ap_configuration->num_queues = num_queues;

	i = 0;
	for_each_set_bit(apid, matrix_mdev->shadow_apcb.apm, AP_DEVICES)
		for_each_set_bit(apqi, matrix_mdev->shadow_apcb.aqm, AP_DOMAINS) {
			ap_configuration->qinfo[i].apqn =
				MODEL_AP_MKQID(model_bit_inv(apid), model_bit_inv(apqi));
			i++;
		}
	memcpy(ap_configuration->adm, matrix_mdev->shadow_apcb.adm,
	       sizeof(ap_configuration->adm));
	/* vfio_ap_store_queue_info: PQAP(TAPQ) per queue, stubbed */
	for (i = 0; i < num_queues; i++)
		ap_configuration->qinfo[i].data = model_ap_tapq(ap_configuration->qinfo[i].apqn);

	matrix_mdev->mig_data->stop_copy_mig_file.ap_config = ap_configuration;
	matrix_mdev->mig_data->stop_copy_mig_file.config_sz = ap_config_size;
	return 0;
}

noinline ssize_t vfio_ap_stop_copy_read(struct file *filp, char __user *buf, size_t len,
					loff_t *pos)
{
	struct vfio_ap_migration_file *mig_file;
	struct ap_matrix_mdev *matrix_mdev;
	loff_t read_pos;
	ssize_t ret;

	/* a stream: read() passes no position, pread() one */
	if (pos)
		return -ESPIPE;

	mutex_lock(&matrix_dev->mdevs_lock);
	pos = &filp->f_pos;
	ret = validate_stop_copy_read_parms(filp, pos, len);
	if (ret) {
		mutex_unlock(&matrix_dev->mdevs_lock);
		return ret;
	}
	matrix_mdev = filp->private_data;
	mig_file = &matrix_mdev->mig_data->stop_copy_mig_file;
	if (!mig_file->ap_config) {
		ret = vfio_ap_get_config(matrix_mdev);
		if (ret) {
			mutex_unlock(&matrix_dev->mdevs_lock);
			return ret;
		}
	}
	if (*pos >= mig_file->config_sz) {
		mutex_unlock(&matrix_dev->mdevs_lock);
		return 0;
	}
	len = min_t(size_t, mig_file->config_sz - *pos, len);
	read_pos = *pos;
	*pos += len;
	/* the buffer is freed only under mdevs_lock by the file's owner: stable here */
	mutex_unlock(&matrix_dev->mdevs_lock);

	if (copy_to_user(buf, (char *)mig_file->ap_config + read_pos, len))
		return -EFAULT;
	return len;
}

static const struct file_operations vfio_ap_stop_copy_fops = {
	.owner = THIS_MODULE,
	.read = vfio_ap_stop_copy_read,
	.release = vfio_ap_release_mig_file,
};

noinline struct file *vfio_ap_open_file_stream(struct ap_matrix_mdev *matrix_mdev,
					       const struct file_operations *fops, int flags)
{
	bool pin = !test_and_clear_bit(FAULT_FILE_NO_PIN, &faults);
	bool early = test_and_clear_bit(FAULT_UNLOCKED_FILE_RELEASE, &faults);
	struct file *filp;

	lockdep_assert_held(&matrix_dev->mdevs_lock);

	/* the registration pin keeps matrix_mdev alive while the fd is open */
	if (pin && !core_try_get_registration(&matrix_mdev->vdev))
		return ERR_PTR(-ENODEV);

	filp = anon_inode_getfile("vfio_ap_mig_file", fops, matrix_mdev, flags);
	if (IS_ERR(filp)) {
		if (pin)
			core_put_registration(&matrix_mdev->vdev);
		return filp;
	}
	if (!pin || early)
		model_mark_file(filp, (pin ? 0 : FILE_NO_PIN) | (early ? FILE_EARLY_RELEASE : 0));
	stream_open(filp->f_inode, filp);
	/*
	 * The driver's own reference, independent of the fd the core installs: the file
	 * lives until close_device or reset drops it, so the release normally finds mig_data
	 * gone or the file no longer its session's.
	 */
	if (!early)
		get_file(filp);
	return filp;
}

static int validate_resuming_write_parms(struct file *filp, size_t len, loff_t *pos)
{
	struct ap_matrix_mdev *matrix_mdev = filp->private_data;
	loff_t total_len;

	lockdep_assert_held(&matrix_dev->mdevs_lock);

	if (!len || *pos < 0)
		return -EINVAL;
	if (check_add_overflow((loff_t)len, *pos, &total_len))
		return -ERANGE;
	if (!matrix_mdev || !matrix_mdev->mig_data)
		return -ENODEV;
	if (filp != matrix_mdev->mig_data->resuming_mig_file.filp)
		return -ENXIO;
	if ((!matrix_mdev->mig_data->resuming_mig_file.ap_config && *pos != 0) ||
	    (matrix_mdev->mig_data->resuming_mig_file.ap_config && *pos == 0))
		return -EFAULT;
	/* the first write must carry num_queues: the allocation's size comes from it */
	if (*pos == 0 && len < offsetofend(struct vfio_ap_config, num_queues))
		return -EINVAL;
	return 0;
}

static ssize_t calculate_ap_config_size(unsigned int num_queues)
{
	if (num_queues > MAX_AP_QUEUES)
		return -EINVAL;
	return num_queues * sizeof(struct vfio_ap_queue_info) + sizeof(struct vfio_ap_config);
}

/* The resuming buffer, sized by the num_queues of the first write (kvzalloc). */
noinline ssize_t allocate_ap_config(struct vfio_ap_config **ap_config, const char __user *buf,
				    size_t len)
{
	struct vfio_ap_config tmp_ap_config;
	ssize_t config_size;

	if (copy_from_user(&tmp_ap_config, buf, min(len, sizeof(tmp_ap_config))))
		return -EIO;
	config_size = calculate_ap_config_size(tmp_ap_config.num_queues);
	if (config_size < 0)
		return config_size;
	*ap_config = kvzalloc(config_size, GFP_KERNEL_ACCOUNT);
	if (!*ap_config)
		return -ENOMEM;
	return config_size;
}

/* Queues bound, control domains installed, TAPQ compatible: all stubbed to "yes" except
 * the queue count, which must fit the host (no hardware to ask). */
noinline int do_post_copy_validation(const char *mdev_name,
				     struct vfio_ap_config *source_config)
{
	int i;

	for (i = 0; i < source_config->num_queues; i++)
		if ((source_config->qinfo[i].data ^ model_ap_tapq(source_config->qinfo[i].apqn)) &
		    0xffffc000ff000000ULL) {
			pr_err("vfio_ap_mdev %s: queue %04x not compatible\n", mdev_name,
			       source_config->qinfo[i].apqn);
			return -EINVAL;
		}
	return 0;
}

static void setup_ap_matrix_from_ap_config(struct vfio_ap_config *ap_config,
					   struct ap_matrix *guest_matrix)
{
	unsigned long bit;
	int i;

	memset(guest_matrix, 0, sizeof(*guest_matrix));
	vfio_ap_matrix_init(&matrix_dev->info, guest_matrix);
	for (i = 0; i < ap_config->num_queues; i++) {
		model_set_bit_inv(ap_config->qinfo[i].apqn >> 8, guest_matrix->apm);
		model_set_bit_inv(ap_config->qinfo[i].apqn & 0xff, guest_matrix->aqm);
	}
	for_each_set_bit(bit, (unsigned long *)ap_config->adm, AP_DOMAINS)
		set_bit(bit, guest_matrix->adm);
}

/* get_update_locks_for_mdev(): guests_lock, (the guest's kvm->lock), mdevs_lock */
static void get_update_locks_for_mdev(struct ap_matrix_mdev *matrix_mdev)
{
	mutex_lock(&matrix_dev->guests_lock);
	mutex_lock(&matrix_dev->mdevs_lock);
}

static void release_update_locks_for_mdev(struct ap_matrix_mdev *matrix_mdev)
{
	mutex_unlock(&matrix_dev->mdevs_lock);
	mutex_unlock(&matrix_dev->guests_lock);
}

/* The restored configuration becomes the guest's (the APCB update is stubbed). */
noinline int vfio_ap_set_new_guest_config(struct ap_matrix_mdev *matrix_mdev,
					  struct ap_matrix *guest_matrix)
{
	lockdep_assert_held(&matrix_dev->mdevs_lock);

	memcpy(&matrix_mdev->matrix, guest_matrix, sizeof(*guest_matrix));
	memcpy(&matrix_mdev->shadow_apcb, guest_matrix, sizeof(*guest_matrix));
	return 0;
}

static DEFINE_MUTEX(ap_attr_mutex);

noinline ssize_t vfio_ap_resuming_write(struct file *filp, const char __user *buf, size_t len,
				       loff_t *pos)
{
	struct ap_matrix_mdev *matrix_mdev;
	struct vfio_ap_config *ap_config;
	struct ap_matrix guest_matrix;
	bool new_allocation = false;
	bool keep_partial = true;
	ssize_t ret, cfg_sz;
	const char *mdev_name;
	loff_t write_pos;

	if (pos)
		return -ESPIPE;

	mutex_lock(&matrix_dev->mdevs_lock);
	pos = &filp->f_pos;
	ret = validate_resuming_write_parms(filp, len, pos);
	if (ret) {
		mutex_unlock(&matrix_dev->mdevs_lock);
		return ret;
	}
	matrix_mdev = filp->private_data;
	mdev_name = dev_name(matrix_mdev->vdev.dev);

	if (*pos == 0) {
		ret = allocate_ap_config(&ap_config, buf, len);
		if (ret < 0) {
			mutex_unlock(&matrix_dev->mdevs_lock);
			return ret;
		}
		cfg_sz = ret;
		new_allocation = true;
	} else {
		ap_config = matrix_mdev->mig_data->resuming_mig_file.ap_config;
		cfg_sz = matrix_mdev->mig_data->resuming_mig_file.config_sz;
	}

	if (*pos + len > cfg_sz) {
		if (new_allocation) {
			kvfree(ap_config);
		} else if (test_and_clear_bit(FAULT_PARTIAL_RESUME_DOUBLE_FREE, &faults)) {
			/* the fault: the stored buffer is freed and left in its slot */
			kvfree(ap_config);
			stale_resume_buffer = ap_config;
		}
		mutex_unlock(&matrix_dev->mdevs_lock);
		return -EIO;
	}
	write_pos = *pos;
	*pos += len;
	mutex_unlock(&matrix_dev->mdevs_lock);

	if (copy_from_user((char *)ap_config + write_pos, buf, len)) {
		if (new_allocation)
			kvfree(ap_config);
		return -EIO;
	}

	if (write_pos + len == cfg_sz) {
		ret = do_post_copy_validation(mdev_name, ap_config);
		if (ret < 0) {
			if (new_allocation)
				kvfree(ap_config);
			return ret;
		}
		setup_ap_matrix_from_ap_config(ap_config, &guest_matrix);

		mutex_lock(&ap_attr_mutex);
		get_update_locks_for_mdev(matrix_mdev);
		if (!matrix_mdev->mig_data) {
			release_update_locks_for_mdev(matrix_mdev);
			mutex_unlock(&ap_attr_mutex);
			if (new_allocation)
				kvfree(ap_config);
			return -ENODEV;
		}
		ret = vfio_ap_set_new_guest_config(matrix_mdev, &guest_matrix);
		release_update_locks_for_mdev(matrix_mdev);
		mutex_unlock(&ap_attr_mutex);
		if (ret) {
			if (new_allocation)
				kvfree(ap_config);
			return ret;
		}
	} else if (new_allocation && test_and_clear_bit(FAULT_PARTIAL_RESUME_LEAK, &faults)) {
		/* the fault: an earlier revision stored only complete configurations */
		keep_partial = false;
	}

	mutex_lock(&matrix_dev->mdevs_lock);
	if (!matrix_mdev->mig_data) {
		mutex_unlock(&matrix_dev->mdevs_lock);
		if (new_allocation)
			kvfree(ap_config);
		return -ENODEV;
	}
	if (!keep_partial) {
		/* the buffer is dropped on the floor; the next write finds none: -EFAULT */
		mutex_unlock(&matrix_dev->mdevs_lock);
		return len;
	}
	if (new_allocation)
		kvfree(matrix_mdev->mig_data->resuming_mig_file.ap_config);
	matrix_mdev->mig_data->resuming_mig_file.ap_config = ap_config;
	matrix_mdev->mig_data->resuming_mig_file.config_sz = cfg_sz;
	mutex_unlock(&matrix_dev->mdevs_lock);
	return len;
}

static const struct file_operations vfio_ap_resume_fops = {
	.owner = THIS_MODULE,
	.write = vfio_ap_resuming_write,
	.release = vfio_ap_release_mig_file,
};

noinline struct file *vfio_ap_resuming_init(struct ap_matrix_mdev *matrix_mdev)
{
	lockdep_assert_held(&matrix_dev->mdevs_lock);

	return vfio_ap_open_file_stream(matrix_mdev, &vfio_ap_resume_fops, O_WRONLY);
}

/* Set by set_state for the one step the accept-bad-state fault lets through. */
static bool accepting_bad_state;

noinline struct file *vfio_ap_transition_to_state(struct ap_matrix_mdev *matrix_mdev,
						  enum vfio_device_mig_state new_state)
{
	struct vfio_ap_migration_data *mig_data;
	enum vfio_device_mig_state cur_state;
	struct file *filp;

	lockdep_assert_held(&matrix_dev->mdevs_lock);
	mig_data = matrix_mdev->mig_data;
	cur_state = mig_data->mig_state;

	if (cur_state == VFIO_DEVICE_STATE_STOP && new_state == VFIO_DEVICE_STATE_STOP_COPY) {
		filp = vfio_ap_open_file_stream(matrix_mdev, &vfio_ap_stop_copy_fops, O_RDONLY);
		if (IS_ERR(filp))
			return ERR_CAST(filp);
		mig_data->stop_copy_mig_file.filp = filp;
		return filp;
	}
	if (cur_state == VFIO_DEVICE_STATE_STOP && new_state == VFIO_DEVICE_STATE_RESUMING) {
		filp = vfio_ap_resuming_init(matrix_mdev);
		if (IS_ERR(filp))
			return ERR_CAST(filp);
		mig_data->resuming_mig_file.filp = filp;
		return filp;
	}
	/* the end of a session: nothing of the device's own to incorporate */
	if ((cur_state == VFIO_DEVICE_STATE_RESUMING || cur_state == VFIO_DEVICE_STATE_STOP_COPY) &&
	    new_state == VFIO_DEVICE_STATE_STOP)
		return NULL;
	if ((cur_state == VFIO_DEVICE_STATE_STOP && new_state == VFIO_DEVICE_STATE_RUNNING) ||
	    (cur_state == VFIO_DEVICE_STATE_RUNNING && new_state == VFIO_DEVICE_STATE_STOP))
		return NULL;
	if (accepting_bad_state)
		return NULL;	/* the fault: the driver's bug */

	/* vfio_mig_get_next_state() uses no other arc */
	WARN_ON(true);
	return ERR_PTR(-EINVAL);
}

/* ap_is_se_guest(): never a Secure Execution guest in the model */
static bool ap_is_se_guest(void)
{
	return false;
}

noinline struct file *vfio_ap_set_state(struct vfio_device_model *vdev,
					enum vfio_device_mig_state new_state)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	struct vfio_ap_migration_data *mig_data;
	enum vfio_device_mig_state next_state;
	struct file *filp = NULL;
	int ret;

	mutex_lock(&matrix_dev->mdevs_lock);
	if (ap_is_se_guest()) {
		mutex_unlock(&matrix_dev->mdevs_lock);
		return ERR_PTR(-EPERM);
	}
	mig_data = matrix_mdev->mig_data;
	/* before open_device the implicit state is RUNNING */
	if (!mig_data) {
		mutex_unlock(&matrix_dev->mdevs_lock);
		return new_state == VFIO_DEVICE_STATE_RUNNING ? NULL : ERR_PTR(-ENODEV);
	}
	if (!model_state_supported(vdev->migration_flags, new_state) &&
	    new_state < VFIO_DEVICE_NUM_STATES && new_state != VFIO_DEVICE_STATE_ERROR &&
	    test_and_clear_bit(FAULT_ACCEPT_BAD_STATE, &faults)) {
		/* the fault: a state the device cannot honour, taken in one step */
		accepting_bad_state = true;
		filp = vfio_ap_transition_to_state(matrix_mdev, new_state);
		accepting_bad_state = false;
		if (!IS_ERR(filp))
			mig_data->mig_state = new_state;
		mutex_unlock(&matrix_dev->mdevs_lock);
		return filp;
	}
	while (mig_data->mig_state != VFIO_DEVICE_STATE_ERROR &&
	       mig_data->mig_state != new_state) {
		ret = core_mig_get_next_state(vdev, mig_data->mig_state, new_state,
						    &next_state);
		if (ret) {
			filp = ERR_PTR(ret);
			break;
		}
		filp = vfio_ap_transition_to_state(matrix_mdev, next_state);
		if (IS_ERR(filp))
			break;
		mig_data->mig_state = next_state;
		if (WARN_ON(filp && new_state != next_state)) {
			fput(filp);
			filp = ERR_PTR(-EINVAL);
			break;
		}
	}
	mutex_unlock(&matrix_dev->mdevs_lock);
	return filp;
}

noinline int vfio_ap_get_state(struct vfio_device_model *vdev,
			       enum vfio_device_mig_state *current_state)
{
	struct ap_matrix_mdev *matrix_mdev;

	mutex_lock(&matrix_dev->mdevs_lock);
	matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	*current_state = matrix_mdev->mig_data ? matrix_mdev->mig_data->mig_state :
						 VFIO_DEVICE_STATE_RUNNING;
	mutex_unlock(&matrix_dev->mdevs_lock);
	return 0;
}

noinline int vfio_ap_get_data_size(struct vfio_device_model *vdev,
				   unsigned long *stop_copy_length)
{
	struct ap_matrix_mdev *matrix_mdev;
	int num_queues;

	mutex_lock(&matrix_dev->mdevs_lock);
	matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	/* model only: aptrace_bench's call loop passes no device */
	num_queues = vdev ? vfio_ap_mdev_get_num_queues(&matrix_mdev->shadow_apcb) : 0;
	*stop_copy_length = num_queues * sizeof(struct vfio_ap_queue_info) +
			    sizeof(struct vfio_ap_config);
	mutex_unlock(&matrix_dev->mdevs_lock);
	return 0;
}

static const struct vfio_migration_ops_model vfio_ap_migration_ops = {
	.migration_set_state = vfio_ap_set_state,
	.migration_get_state = vfio_ap_get_state,
#if !defined(APTRACE_REAL_CORE) || LINUX_VERSION_CODE >= KERNEL_VERSION(6, 2, 0)
	/* 6.1's core has no such op: the size is then the stream's end */
	.migration_get_data_size = vfio_ap_get_data_size,
#endif
};

noinline void vfio_ap_init_migration_capabilities(struct ap_matrix_mdev *matrix_mdev)
{
	if (ap_is_se_guest())
		return;
	matrix_mdev->vdev.migration_flags = VFIO_MIGRATION_STOP_COPY;
	matrix_mdev->vdev.mig_ops = &vfio_ap_migration_ops;
}

noinline int vfio_ap_init_migration_data(struct ap_matrix_mdev *matrix_mdev)
{
	struct vfio_ap_migration_data *mig_data;

	lockdep_assert_held(&matrix_dev->mdevs_lock);

	mig_data = kzalloc(sizeof(*mig_data), GFP_KERNEL);
	if (!mig_data)
		return -ENOMEM;

	mig_data->mig_state = VFIO_DEVICE_STATE_RUNNING;
	matrix_mdev->mig_data = mig_data;

	return 0;
}

/* Drops the driver's file references and frees both buffers through the two release
 * helpers, as the latest revision does. The fput never runs the release synchronously
 * under mdevs_lock (it is deferred to the task's return). */
noinline void vfio_ap_release_mig_files(struct ap_matrix_mdev *matrix_mdev)
{
	bool keep_buffers = test_and_clear_bit(FAULT_BUFFER_LEAK_ON_CLOSE, &faults);
	struct vfio_ap_migration_data *mig_data;

	lockdep_assert_held(&matrix_dev->mdevs_lock);

	mig_data = matrix_mdev->mig_data;
	if (!mig_data)
		return;

	if (mig_data->stop_copy_mig_file.filp) {
		fput(mig_data->stop_copy_mig_file.filp);
		mig_data->stop_copy_mig_file.filp = NULL;
	}
	if (mig_data->resuming_mig_file.filp) {
		fput(mig_data->resuming_mig_file.filp);
		mig_data->resuming_mig_file.filp = NULL;
	}
	/* the fault: an earlier revision dropped the files but not their buffers */
	if (keep_buffers)
		return;
	vfio_ap_release_stop_copy_file(mig_data);
	vfio_ap_release_resuming_file(mig_data);
}

noinline void vfio_ap_release_migration_data(struct ap_matrix_mdev *matrix_mdev)
{
	lockdep_assert_held(&matrix_dev->mdevs_lock);

	if (!matrix_mdev->mig_data)
		return;

	vfio_ap_release_mig_files(matrix_mdev);
	kfree(matrix_mdev->mig_data);
	matrix_mdev->mig_data = NULL;
}

/* VFIO_DEVICE_RESET: every session ends, the device is RUNNING again. */
noinline void vfio_ap_reset_migration_state(struct ap_matrix_mdev *matrix_mdev)
{
	lockdep_assert_held(&matrix_dev->mdevs_lock);

	if (!matrix_mdev->mig_data)
		return;

	vfio_ap_release_mig_files(matrix_mdev);
	matrix_mdev->mig_data->mig_state = VFIO_DEVICE_STATE_RUNNING;
}
#endif /* APTRACE_SERIES */

/* ---------------------------------------------------------------------------------------
 * vfio_ap_ops.c
 */

static int handle_pqap(void *vcpu)
{
	return -EOPNOTSUPP;
}

noinline int vfio_ap_mdev_init_dev(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev;

	mutex_lock(&matrix_dev->mdevs_lock);
	matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	matrix_mdev->mdev = container_of(vdev->dev, struct mdev_device_model, dev);
	vfio_ap_matrix_init(&matrix_dev->info, &matrix_mdev->matrix);
	matrix_mdev->pqap_hook = handle_pqap;
	vfio_ap_matrix_init(&matrix_dev->info, &matrix_mdev->shadow_apcb);
	hash_init(matrix_mdev->qtable.queues);
	mutex_unlock(&matrix_dev->mdevs_lock);

	return 0;
}

noinline void vfio_ap_mdev_release_dev(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev;

	mutex_lock(&matrix_dev->mdevs_lock);
	matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
#ifdef APTRACE_SERIES
	if (!test_and_clear_bit(FAULT_SKIP_RELEASE, &faults))
		vfio_ap_release_migration_data(matrix_mdev);
#endif
	mutex_unlock(&matrix_dev->mdevs_lock);
}

noinline int vfio_ap_mdev_probe(struct mdev_device_model *mdev)
{
	struct ap_matrix_mdev *matrix_mdev;
	int ret;

	bool hold;

	matrix_mdev = core_alloc_device(mdev);
	if (IS_ERR(matrix_mdev))
		return PTR_ERR(matrix_mdev);

	/*
	 * The series' probe holds mdevs_lock across registration, which takes the core's
	 * dev_set->lock, while the core calls open_device (which takes mdevs_lock) under
	 * dev_set->lock: an AB-BA (fault probe-holds-lock; register-fail keeps it too, its
	 * error path is the seed's self-deadlock). The fixed probe takes the lock for the
	 * list only.
	 */
	hold = test_and_clear_bit(FAULT_PROBE_HOLDS_LOCK, &faults) ||
	       test_bit(FAULT_REGISTER_FAIL, &faults);
	if (hold)
		mutex_lock(&matrix_dev->mdevs_lock);

	/*
	 * Migration capabilities must be initialized before calling
	 * vfio_register_emulated_iommu_dev; otherwise, the VFIO core
	 * will see mig_ops as NULL during the registration.
	 */
#ifdef APTRACE_SERIES
	vfio_ap_init_migration_capabilities(matrix_mdev);
#endif

	ret = core_register(&matrix_mdev->vdev);
	if (ret)
		goto err_put_vdev;
	matrix_mdev->req_trigger = NULL;
	matrix_mdev->cfg_chg_trigger = NULL;
	dev_set_drvdata(&mdev->dev, matrix_mdev);
	if (!hold)
		mutex_lock(&matrix_dev->mdevs_lock);
	list_add(&matrix_mdev->node, &matrix_dev->mdev_list);
	mutex_unlock(&matrix_dev->mdevs_lock);
	return 0;

err_put_vdev:
	/* the seed's bug: .release takes mdevs_lock, which this task holds */
	core_put_device(&matrix_mdev->vdev);
	if (hold)
		mutex_unlock(&matrix_dev->mdevs_lock);
	return ret;
}

noinline void vfio_ap_mdev_remove(struct mdev_device_model *mdev)
{
	struct ap_matrix_mdev *matrix_mdev = dev_get_drvdata(&mdev->dev);

	core_unregister(&matrix_mdev->vdev);

	mutex_lock(&matrix_dev->guests_lock);
	mutex_lock(&matrix_dev->mdevs_lock);
	list_del(&matrix_mdev->node);
	mutex_unlock(&matrix_dev->mdevs_lock);
	mutex_unlock(&matrix_dev->guests_lock);
	core_put_device(&matrix_mdev->vdev);
}

noinline int vfio_ap_mdev_set_kvm(struct ap_matrix_mdev *matrix_mdev, struct kvm_model *kvm)
{
	if (test_and_clear_bit(FAULT_OPEN_FAIL, &faults) ||
	    test_bit(FAULT_OPEN_FAIL_NOCLEAN, &faults))
		return -EPERM;

	mutex_lock(&matrix_dev->guests_lock);
	mutex_lock(&matrix_dev->mdevs_lock);
	matrix_mdev->kvm = kvm;
	mutex_unlock(&matrix_dev->mdevs_lock);
	mutex_unlock(&matrix_dev->guests_lock);
	return 0;
}

noinline void vfio_ap_mdev_unset_kvm(struct ap_matrix_mdev *matrix_mdev)
{
	mutex_lock(&matrix_dev->guests_lock);
	mutex_lock(&matrix_dev->mdevs_lock);
	matrix_mdev->kvm = NULL;
	mutex_unlock(&matrix_dev->mdevs_lock);
	mutex_unlock(&matrix_dev->guests_lock);
}

noinline int vfio_ap_mdev_open_device(struct vfio_device_model *vdev)
{
	struct kvm_model *kvm = vfio_ap_guest(vdev);
	struct ap_matrix_mdev *matrix_mdev;
	int __maybe_unused ret;

	if (!kvm)
		return -EINVAL;

#ifndef APTRACE_SERIES
	/* mainline: the KVM pointer only */
	matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	return vfio_ap_mdev_set_kvm(matrix_mdev, kvm);
#else
	if (test_and_clear_bit(FAULT_INIT_UNLOCKED, &faults)) {
		matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
		ret = vfio_ap_init_migration_data(matrix_mdev);
	} else {
		mutex_lock(&matrix_dev->mdevs_lock);
		matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
		ret = vfio_ap_init_migration_data(matrix_mdev);
		if (!ret && test_and_clear_bit(FAULT_DOUBLE_INIT, &faults))
			ret = vfio_ap_init_migration_data(matrix_mdev);
		mutex_unlock(&matrix_dev->mdevs_lock);
	}

	if (ret)
		return ret;

	ret = vfio_ap_mdev_set_kvm(matrix_mdev, kvm);
	if (ret) {
		if (test_and_clear_bit(FAULT_OPEN_FAIL_NOCLEAN, &faults))
			return ret;
		/* Clean up migration data on failure */
		mutex_lock(&matrix_dev->mdevs_lock);
		vfio_ap_release_migration_data(matrix_mdev);
		mutex_unlock(&matrix_dev->mdevs_lock);
	}

	return ret;
#endif
}

noinline void vfio_ap_mdev_close_device(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev;

	matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
#ifdef APTRACE_SERIES
	mutex_lock(&matrix_dev->mdevs_lock);
	if (!test_bit(FAULT_SKIP_RELEASE, &faults))
		vfio_ap_release_migration_data(matrix_mdev);
	mutex_unlock(&matrix_dev->mdevs_lock);
#endif

	vfio_ap_mdev_unset_kvm(matrix_mdev);
}

/* vfio_ap_mdev_reset_queues(): the queues' reset is hardware, stubbed */
static int vfio_ap_mdev_reset_queues(struct ap_matrix_mdev *matrix_mdev)
{
	lockdep_assert_held(&matrix_dev->mdevs_lock);
	return 0;
}

#define MODEL_VFIO_DEVICE_RESET 0x3b6f	/* _IO(VFIO_TYPE, VFIO_BASE + 11) */

/* The device ioctl; only VFIO_DEVICE_RESET is modelled. */
noinline ssize_t vfio_ap_mdev_ioctl(struct vfio_device_model *vdev, unsigned int cmd,
				    unsigned long arg)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	ssize_t ret;

	mutex_lock(&matrix_dev->mdevs_lock);
	switch (cmd) {
	case MODEL_VFIO_DEVICE_RESET:
		ret = vfio_ap_mdev_reset_queues(matrix_mdev);
#ifdef APTRACE_SERIES
		if (ret == 0)
			vfio_ap_reset_migration_state(matrix_mdev);
#endif
		break;
	default:
		ret = -EOPNOTSUPP;
	}
	mutex_unlock(&matrix_dev->mdevs_lock);
	return ret;
}

static const struct vfio_device_ops_model vfio_ap_matrix_dev_ops = {
	.name = "vfio_ap",
	.init = vfio_ap_mdev_init_dev,
	.release = vfio_ap_mdev_release_dev,
	.open_device = vfio_ap_mdev_open_device,
	.close_device = vfio_ap_mdev_close_device,
#ifdef APTRACE_REAL_CORE
	.ioctl = vfio_ap_mdev_ioctl,
#endif
};

#ifdef APTRACE_REAL_CORE
#ifndef APTRACE_NO_MDEV
/* The mdev driver and parent, as vfio_ap_drv.c/vfio_ap_ops.c register them upstream. */
static struct mdev_driver vfio_ap_matrix_driver = {
	.device_api = VFIO_DEVICE_API_AP_STRING,
	.max_instances = MAX_MDEVS,
	.driver = {
		.name = "vfio_ap_mdev",
		.owner = THIS_MODULE,
		.mod_name = KBUILD_MODNAME,
	},
	.probe = vfio_ap_mdev_probe,
	.remove = vfio_ap_mdev_remove,
};
#else
static void set_result(const char *fmt, ...);
static struct ap_matrix_mdev *find_matrix_mdev(const char *name);

/*
 * APTRACE_NO_MDEV (a kernel with VFIO but no mdev: Debian's s390x 6.12): the devices are the
 * model's own, children of the matrix device, created and removed by ctl's `vcreate` and
 * `vremove`, which do what the mdev core does around the driver's probe and remove. The
 * objects come from a static pool so that no allocation in the module's text is the model's.
 */
static struct {
	bool used;
	struct mdev_device mdev;
} own_mdevs[MAX_MDEVS];
static DEFINE_MUTEX(own_lock);

static void own_mdev_release(struct device *dev)
{
	int i;

	mutex_lock(&own_lock);
	for (i = 0; i < MAX_MDEVS; i++)
		if (&own_mdevs[i].mdev.dev == dev)
			own_mdevs[i].used = false;
	mutex_unlock(&own_lock);
}

static int do_vcreate(const char *name)
{
	struct mdev_device *mdev = NULL;
	int i, ret;

	mutex_lock(&own_lock);
	for (i = 0; i < MAX_MDEVS && !mdev; i++)
		if (!own_mdevs[i].used) {
			own_mdevs[i].used = true;
			mdev = &own_mdevs[i].mdev;
		}
	mutex_unlock(&own_lock);
	if (!mdev)
		return -ENOSPC;
	memset(mdev, 0, sizeof(*mdev));
	device_initialize(&mdev->dev);
	mdev->dev.parent = &matrix_dev->device;
	mdev->dev.release = own_mdev_release;
	dev_set_name(&mdev->dev, "%s", name);
	ret = device_add(&mdev->dev);
	if (!ret) {
		ret = vfio_ap_mdev_probe(mdev);
		if (ret)
			device_del(&mdev->dev);
	}
	if (ret)
		put_device(&mdev->dev);
	else
		set_result("vcreate %s\n", name);
	return ret;
}

/* As the mdev core's remove: the driver's remove (which waits while a file pins the
 * device), then the device goes. */
static int do_vremove(const char *name)
{
	struct ap_matrix_mdev *m;
	struct mdev_device *mdev;

	mutex_lock(&matrix_dev->mdevs_lock);
	m = find_matrix_mdev(name);
	mdev = m ? m->mdev : NULL;
	mutex_unlock(&matrix_dev->mdevs_lock);
	if (!mdev || model_owned(mdev))
		return -ENOENT;
	vfio_ap_mdev_remove(mdev);
	device_unregister(&mdev->dev);
	set_result("vremove %s\n", name);
	return 0;
}
#endif

static struct device *vfio_ap_root;

/* matrix_dev is freed by the module's exit, after the device is gone */
static void vfio_ap_matrix_dev_release(struct device *dev)
{
}

/* /sys/devices/vfio_ap/matrix, the parent of the mdevs (upstream: on the AP bus) */
static int vfio_ap_real_core_init(void)
{
	int ret;

	vfio_ap_root = root_device_register(VFIO_AP_DRV_NAME);
	if (IS_ERR(vfio_ap_root))
		return PTR_ERR(vfio_ap_root);
	device_initialize(&matrix_dev->device);
	matrix_dev->device.parent = vfio_ap_root;
	matrix_dev->device.release = vfio_ap_matrix_dev_release;
	dev_set_name(&matrix_dev->device, "matrix");
	ret = device_add(&matrix_dev->device);
	if (ret)
		goto err_put;
#ifdef APTRACE_NO_MDEV
	return 0;
#else
	ret = mdev_register_driver(&vfio_ap_matrix_driver);
	if (ret)
		goto err_del;
	matrix_dev->mdev_type.sysfs_name = "passthrough";
	matrix_dev->mdev_type.pretty_name = "VFIO AP Passthrough Device";
	matrix_dev->mdev_types[0] = &matrix_dev->mdev_type;
	ret = mdev_register_parent(&matrix_dev->parent, &matrix_dev->device,
				   &vfio_ap_matrix_driver, matrix_dev->mdev_types, 1);
	if (ret)
		goto err_drv;
	return 0;
err_drv:
	mdev_unregister_driver(&vfio_ap_matrix_driver);
err_del:
	device_del(&matrix_dev->device);
#endif
err_put:
	put_device(&matrix_dev->device);
	root_device_unregister(vfio_ap_root);
	return ret;
}

static void vfio_ap_real_core_exit(void)
{
#ifdef APTRACE_NO_MDEV
	char name[40];
	int i;

	/* the devices still there go, as the mdev core's parent unregistration would */
	for (i = 0; i < MAX_MDEVS; i++)
		if (own_mdevs[i].used && device_is_registered(&own_mdevs[i].mdev.dev)) {
			strscpy(name, dev_name(&own_mdevs[i].mdev.dev), sizeof(name));
			do_vremove(name);
		}
#else
	mdev_unregister_parent(&matrix_dev->parent);
	mdev_unregister_driver(&vfio_ap_matrix_driver);
#endif
	device_unregister(&matrix_dev->device);
	root_device_unregister(vfio_ap_root);
}
#endif

/* A probe point that does nothing: lets a tracer read the lock word in any state. */
noinline unsigned long vfio_ap_model_ping(struct ap_matrix_dev *md)
{
	return atomic_long_read(&md->mdevs_lock.owner);
}

/* ---------------------------------------------------------------------------------------
 * Control surface
 */
static struct dentry *dbg_dir;
static DEFINE_MUTEX(result_lock);
static char result[512];
static struct task_struct *holder_task;
static DECLARE_COMPLETION(holder_release);

static void set_result(const char *fmt, ...)
{
	va_list ap;

	mutex_lock(&result_lock);
	va_start(ap, fmt);
	vsnprintf(result, sizeof(result), fmt, ap);
	va_end(ap);
	mutex_unlock(&result_lock);
	pr_info("vfio_ap_model: %s", result);
}

static struct model_slot *find_slot(const char *name)
{
	int i;

	for (i = 0; i < MAX_MDEVS; i++)
		if (slots[i].used && !strcmp(slots[i].name, name))
			return &slots[i];
	return NULL;
}

static const char * const state_names[VFIO_DEVICE_NUM_STATES] = {
	"ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY",
	"PRE_COPY_P2P",
};

static int parse_state(const char *s, unsigned int *out)
{
	int i;

	for (i = 0; i < VFIO_DEVICE_NUM_STATES; i++)
		if (!strcasecmp(s, state_names[i])) {
			*out = i;
			return 0;
		}
	return kstrtouint(s, 0, out);
}

static int probe_thread_fn(void *data)
{
	struct model_slot *slot = data;
	int ret;

	ret = vfio_ap_mdev_probe(&slot->mdev);
	/* reached only if the error path did not deadlock */
	set_result("create %s (thread) ret=%d\n", slot->name, ret);
	return 0;
}

static int holder_fn(void *data)
{
	mutex_lock(&matrix_dev->mdevs_lock);
	wait_for_completion(&holder_release);
	mutex_unlock(&matrix_dev->mdevs_lock);
	return 0;
}

/*
 * A crowd: threads that each call vfio_ap_get_state twice. Started while "hold" keeps
 * mdevs_lock, they all sleep inside the function at once, more of them than a kretprobe
 * has instances (maxactive defaults to max(10, 2 * CPUs)): the kernel misses their
 * returns, and the second call finds the first one's entry still pending.
 */
static atomic_t crowd_left = ATOMIC_INIT(0);

static int crowd_fn(void *data)
{
	struct model_slot *slot __maybe_unused = data;
#ifdef APTRACE_SERIES
	enum vfio_device_mig_state st;

	vfio_ap_get_state(&slot->matrix_mdev.vdev, &st);
	vfio_ap_get_state(&slot->matrix_mdev.vdev, &st);
#endif
	atomic_dec(&crowd_left);
	return 0;
}

static int do_crowd(struct model_slot *slot, const char *count)
{
	unsigned int n, i;
	struct task_struct *t;

	if (!IS_ENABLED(APTRACE_SERIES_ENABLED))
		return -EOPNOTSUPP;	/* mainline: no vfio_ap_get_state */
	if (kstrtouint(count, 0, &n) || n == 0 || n > 256)
		return -EINVAL;
	for (i = 0; i < n; i++) {
		atomic_inc(&crowd_left);
		t = kthread_run(crowd_fn, slot, "vfio_ap_crowd");
		if (IS_ERR(t)) {
			atomic_dec(&crowd_left);
			return PTR_ERR(t);
		}
	}
	set_result("crowd %s started %u threads\n", slot->name, n);
	return 0;
}

static const char *owner_kind(unsigned long owner)
{
	struct task_struct *t = (struct task_struct *)(owner & ~0x7UL);

	if (!t)
		return "free";
	return t == current ? "this-task" : "other-task";
}

static void report_lockinfo(void)
{
	unsigned long owner = vfio_ap_model_ping(matrix_dev);

	set_result("matrix_dev_var=%px matrix_dev=%px mdevs_lock_off=%zu guests_lock_off=%zu "
		   "mutex_owner_off=%zu sizeof_mutex=%zu mig_data_off=%zu vdev_off=%zu "
		   "sizeof_ap_matrix_dev=%zu sizeof_ap_matrix_mdev=%zu mdevs_lock_addr=%px "
		   "owner=0x%lx current=%px state=%s\n",
		   &matrix_dev, matrix_dev, offsetof(struct ap_matrix_dev, mdevs_lock),
		   offsetof(struct ap_matrix_dev, guests_lock), offsetof(struct mutex, owner),
		   sizeof(struct mutex), MODEL_MIG_DATA_OFF,
		   offsetof(struct ap_matrix_mdev, vdev), sizeof(struct ap_matrix_dev),
		   sizeof(struct ap_matrix_mdev), &matrix_dev->mdevs_lock, owner, current,
		   owner_kind(owner));
}

static int do_create(const char *name)
{
	struct model_slot *slot = NULL;
	int i, ret;

	mutex_lock(&slots_lock);
	if (find_slot(name)) {
		mutex_unlock(&slots_lock);
		return -EEXIST;
	}
	for (i = 0; i < MAX_MDEVS; i++)
		if (!slots[i].used) {
			slot = &slots[i];
			break;
		}
	if (!slot) {
		mutex_unlock(&slots_lock);
		return -ENOSPC;
	}
	memset(slot, 0, sizeof(*slot));
	slot->used = true;
	strscpy(slot->name, name, sizeof(slot->name));
	slot->mdev.dev.kobj.name = slot->name;	/* dev_name(&mdev->dev) */
	mutex_unlock(&slots_lock);

	if (test_bit(FAULT_REGISTER_FAIL, &faults)) {
		struct task_struct *t = kthread_run(probe_thread_fn, slot, "vfio_ap_probe");

		if (IS_ERR(t))
			return PTR_ERR(t);
		set_result("create %s started in kthread pid=%d\n", name, t->pid);
		return 0;
	}
	ret = vfio_ap_mdev_probe(&slot->mdev);
	if (ret) {
		/* the put on the error path released the slot already */
		return ret;
	}
	/* the model's stand-in for assign_adapter/assign_domain: adapter = slot + 1,
	 * usage domains 4 and 5, control domain 4 (two queues to migrate) */
	mutex_lock(&matrix_dev->mdevs_lock);
	model_set_bit_inv(slot - slots + 1, slot->matrix_mdev.shadow_apcb.apm);
	model_set_bit_inv(4, slot->matrix_mdev.shadow_apcb.aqm);
	model_set_bit_inv(5, slot->matrix_mdev.shadow_apcb.aqm);
	model_set_bit_inv(4, slot->matrix_mdev.shadow_apcb.adm);
	slot->matrix_mdev.matrix = slot->matrix_mdev.shadow_apcb;
	mutex_unlock(&matrix_dev->mdevs_lock);
	slot->mdev.active = true;
	set_result("create %s mdev=%px matrix_mdev=%px\n", name, &slot->mdev,
		   &slot->matrix_mdev);
	return 0;
}

static int do_open(struct model_slot *slot)
{
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;
	int ret;

	if (vdev->open_count)
		return -EBUSY;
	slot->kvm.guest_pid = task_tgid_nr(current);
	get_task_comm(slot->kvm.guest_comm, current);
	slot->guest = &slot->kvm;
	ret = vdev->ops->open_device(vdev);
	if (ret) {
		slot->guest = NULL;
		return ret;
	}
	vdev->open_count = 1;
	set_result("open %s guest=%d mig_data=%px\n", slot->name, slot->kvm.guest_pid,
		   model_mig_data(&slot->matrix_mdev));
	return 0;
}

static int do_close(struct model_slot *slot)
{
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;

	if (!vdev->open_count)
		return -EINVAL;
	vdev->ops->close_device(vdev);
	vdev->open_count = 0;
	slot->guest = NULL;
	set_result("close %s\n", slot->name);
	return 0;
}

static int do_remove(struct model_slot *slot)
{
	char name[40];

	if (slot->matrix_mdev.vdev.open_count)
		return -EBUSY;
	/* a migration file pins the registration: the real core would wait here */
	if (atomic_read(&slot->registrations) > 1)
		return -EBUSY;
	strscpy(name, slot->name, sizeof(name));
	vfio_ap_mdev_remove(&slot->mdev);
	set_result("remove %s\n", name);
	return 0;
}

static int do_migrate(struct model_slot *slot, const char *state)
{
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;
	unsigned int st;
	struct file *f;
	int fd;

	if (parse_state(state, &st))
		return -EINVAL;
	if (!vdev->mig_ops)
		return -EOPNOTSUPP;
	f = vdev->mig_ops->migration_set_state(vdev, st);
	if (IS_ERR(f)) {
		set_result("migrate %s %u refused %ld\n", slot->name, st, PTR_ERR(f));
		return PTR_ERR(f);
	}
	if (!f) {
		set_result("migrate %s %u ok\n", slot->name, st);
		return 0;
	}
	/* as the core's VFIO_DEVICE_FEATURE does: the file becomes an fd of the caller */
	fd = get_unused_fd_flags(O_CLOEXEC);
	if (fd < 0) {
		fput(f);
		return fd;
	}
	fd_install(fd, f);
	set_result("migrate %s %u ok fd=%d\n", slot->name, st, fd);
	return 0;
}

static int do_reset(struct model_slot *slot)
{
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;
	ssize_t ret;

	if (!vdev->open_count)
		return -EINVAL;
	ret = vfio_ap_mdev_ioctl(vdev, MODEL_VFIO_DEVICE_RESET, 0);
	if (ret)
		return ret;
	set_result("reset %s\n", slot->name);
	return 0;
}

#ifndef APTRACE_SERIES
static int do_getstate(struct model_slot *slot)
{
	return -EOPNOTSUPP;	/* mainline: no migration */
}
#else
static int do_getstate(struct model_slot *slot)
{
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;
	enum vfio_device_mig_state st;
	unsigned long sz = 0;
	int ret;

	ret = vdev->mig_ops->migration_get_state(vdev, &st);
	if (ret)
		return ret;
	ret = vfio_ap_get_data_size(vdev, &sz);
	if (ret)
		return ret;
	set_result("state %s %u %s data_size=%lu adapter=%lu domains=%d\n", slot->name, st,
		   st < VFIO_DEVICE_NUM_STATES ? state_names[st] : "?", sz,
		   model_bit_inv(find_first_bit(slot->matrix_mdev.shadow_apcb.apm, AP_DEVICES)),
		   bitmap_weight(slot->matrix_mdev.shadow_apcb.aqm, AP_DOMAINS));
	return 0;
}
#endif

/* Any mdev the driver knows (the model core's or the kernel's), by its name. */
static struct ap_matrix_mdev *find_matrix_mdev(const char *name)
{
	struct ap_matrix_mdev *m;

	lockdep_assert_held(&matrix_dev->mdevs_lock);
	list_for_each_entry(m, &matrix_dev->mdev_list, node)
		if (!strcmp(dev_name(m->vdev.dev), name))
			return m;
	return NULL;
}

/*
 * assign NAME: the stand-in for the assign_adapter/assign_domain/assign_control_domain
 * attributes on an mdev of the real core (`create` does it for the model's own):
 * the next free adapter (17, 18, ...: never a model slot's), usage domains 4 and 5,
 * control domain 4. show NAME: its configuration and migration state, read under
 * mdevs_lock without calling a driver function.
 */
static atomic_t next_adapter = ATOMIC_INIT(MAX_MDEVS + 1);

static int do_config(const char *cmd, const char *name)
{
	struct ap_matrix_mdev *m;
	int ret = 0;

	mutex_lock(&matrix_dev->mdevs_lock);
	m = find_matrix_mdev(name);
	if (!m) {
		ret = -ENOENT;
	} else if (!strcmp(cmd, "assign")) {
		unsigned long apid = atomic_inc_return(&next_adapter) - 1;

		model_set_bit_inv(apid, m->shadow_apcb.apm);
		model_set_bit_inv(4, m->shadow_apcb.aqm);
		model_set_bit_inv(5, m->shadow_apcb.aqm);
		model_set_bit_inv(4, m->shadow_apcb.adm);
		m->matrix = m->shadow_apcb;
		set_result("assign %s adapter=%lu\n", name, apid);
	} else {
		set_result("config %s mig_data=%s state=%s adapter=%lu domains=%d\n", name,
			   model_mig_data(m) ? "yes" : "no",
			   model_mig_data(m) &&
			   model_mig_data(m)->mig_state < VFIO_DEVICE_NUM_STATES ?
			   state_names[model_mig_data(m)->mig_state] : "-",
			   model_bit_inv(find_first_bit(m->shadow_apcb.apm, AP_DEVICES)),
			   bitmap_weight(m->shadow_apcb.aqm, AP_DOMAINS));
	}
	mutex_unlock(&matrix_dev->mdevs_lock);
	return ret;
}

static int do_fault(const char *f)
{
	int i;

	if (!strcmp(f, "none")) {
		faults = 0;
		set_result("faults cleared\n");
		return 0;
	}
	for (i = 0; i < FAULT_MAX; i++)
		if (!strcmp(f, fault_names[i])) {
			set_bit(i, &faults);
			set_result("fault %s armed\n", f);
			return 0;
		}
	return -EINVAL;
}

static int do_list(void)
{
	char buf[480];
	int i, n = 0;

	buf[0] = 0;
	for (i = 0; i < MAX_MDEVS && n < sizeof(buf) - 80; i++)
		if (slots[i].used)
			n += scnprintf(buf + n, sizeof(buf) - n, "%s open=%u mig_data=%px;",
				       slots[i].name, slots[i].matrix_mdev.vdev.open_count,
				       model_mig_data(&slots[i].matrix_mdev));
	set_result("list %s\n", buf);
	return 0;
}

static ssize_t ctl_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	char buf[128], cmd[24], a1[48], a2[24];
	struct model_slot *slot;
	int n, ret;

	if (len >= sizeof(buf))
		return -E2BIG;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	a1[0] = a2[0] = 0;
	n = sscanf(buf, "%23s %47s %23s", cmd, a1, a2);
	if (n < 1)
		return -EINVAL;

	if (!strcmp(cmd, "lockinfo") || !strcmp(cmd, "ping")) {
		report_lockinfo();
		return len;
	}
	if (!strcmp(cmd, "lock")) {
		mutex_lock(&matrix_dev->mdevs_lock);
		report_lockinfo();
		return len;
	}
	if (!strcmp(cmd, "unlock")) {
		if (((unsigned long)atomic_long_read(&matrix_dev->mdevs_lock.owner) & ~0x7UL) !=
		    (unsigned long)current)
			return -EPERM;
		mutex_unlock(&matrix_dev->mdevs_lock);
		report_lockinfo();
		return len;
	}
	if (!strcmp(cmd, "hold")) {
		if (holder_task)
			return -EBUSY;
		reinit_completion(&holder_release);
		holder_task = kthread_run(holder_fn, NULL, "vfio_ap_holder");
		if (IS_ERR(holder_task)) {
			ret = PTR_ERR(holder_task);
			holder_task = NULL;
			return ret;
		}
		/* wait until it owns the lock */
		while (!mutex_is_locked(&matrix_dev->mdevs_lock))
			schedule_timeout_uninterruptible(1);
		report_lockinfo();
		return len;
	}
	if (!strcmp(cmd, "unhold")) {
		if (!holder_task)
			return -EINVAL;
		complete(&holder_release);
		holder_task = NULL;
		while (mutex_is_locked(&matrix_dev->mdevs_lock))
			schedule_timeout_uninterruptible(1);
		report_lockinfo();
		return len;
	}
	if (!strcmp(cmd, "fault"))
		return do_fault(a1) ?: len;
	if (!strcmp(cmd, "assign") || !strcmp(cmd, "show"))
		return do_config(cmd, a1) ?: len;
#ifdef APTRACE_NO_MDEV
	if (!strcmp(cmd, "vcreate"))
		return do_vcreate(a1) ?: len;
	if (!strcmp(cmd, "vremove"))
		return do_vremove(a1) ?: len;
#endif
	if (!strcmp(cmd, "list"))
		return do_list() ?: len;
	if (!strcmp(cmd, "crowdleft")) {
		set_result("crowdleft %d\n", atomic_read(&crowd_left));
		return len;
	}
	if (!strcmp(cmd, "create")) {
		if (!a1[0])
			return -EINVAL;
		ret = do_create(a1);
		return ret ?: len;
	}

	mutex_lock(&slots_lock);
	slot = find_slot(a1);
	mutex_unlock(&slots_lock);
	if (!slot)
		return -ENOENT;

	if (!strcmp(cmd, "open"))
		ret = do_open(slot);
	else if (!strcmp(cmd, "close"))
		ret = do_close(slot);
	else if (!strcmp(cmd, "remove"))
		ret = do_remove(slot);
	else if (!strcmp(cmd, "migrate"))
		ret = do_migrate(slot, a2);
	else if (!strcmp(cmd, "reset"))
		ret = do_reset(slot);
	else if (!strcmp(cmd, "getstate"))
		ret = do_getstate(slot);
	else if (!strcmp(cmd, "crowd"))
		ret = do_crowd(slot, a2);
	else
		ret = -EINVAL;
	return ret ?: len;
}

static ssize_t ctl_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	char buf[sizeof(result)];
	size_t n;

	mutex_lock(&result_lock);
	n = strscpy(buf, result, sizeof(buf));
	mutex_unlock(&result_lock);
	if ((ssize_t)n < 0)
		n = strlen(buf);
	return simple_read_from_buffer(ubuf, len, ppos, buf, n);
}

static const struct file_operations ctl_fops = {
	.owner = THIS_MODULE,
	.write = ctl_write,
	.read = ctl_read,
	.llseek = default_llseek,
};

static int __init vfio_ap_init(void)
{
	matrix_dev = kzalloc(sizeof(*matrix_dev), GFP_KERNEL);
	if (!matrix_dev)
		return -ENOMEM;
	INIT_LIST_HEAD(&matrix_dev->mdev_list);
	mutex_init(&matrix_dev->mdevs_lock);
	mutex_init(&matrix_dev->guests_lock);
	matrix_dev->info.apxa = 1;
	matrix_dev->info.na = 255;
	matrix_dev->info.nd = 255;

#ifdef APTRACE_REAL_CORE
	{
		int ret = vfio_ap_real_core_init();

		if (ret) {
			pr_err("vfio_ap_model: registering with the VFIO/mdev core failed: %d\n",
			       ret);
			kfree(matrix_dev);
			return ret;
		}
	}
#endif
	dbg_dir = debugfs_create_dir("vfio_ap_model", NULL);
	debugfs_create_file("ctl", 0600, dbg_dir, NULL, &ctl_fops);
	pr_info("vfio_ap_model: loaded, matrix_dev=%px mdevs_lock_off=%zu mig_data_off=%zu\n",
		matrix_dev, offsetof(struct ap_matrix_dev, mdevs_lock),
		MODEL_MIG_DATA_OFF);
	return 0;
}

static void __exit vfio_ap_exit(void)
{
	int i;

	debugfs_remove_recursive(dbg_dir);
	if (holder_task)
		complete(&holder_release);
	if (mutex_is_locked(&matrix_dev->mdevs_lock)) {
		/* a deadlocked probe owns the lock: leave everything */
		pr_warn("vfio_ap_model: mdevs_lock held at exit, leaking the model\n");
		return;
	}
	for (i = 0; i < MAX_MDEVS; i++) {
		if (!slots[i].used)
			continue;
		if (slots[i].matrix_mdev.vdev.open_count)
			do_close(&slots[i]);
		if (slots[i].registered)
			vfio_ap_mdev_remove(&slots[i].mdev);
	}
#ifdef APTRACE_REAL_CORE
	vfio_ap_real_core_exit();
#endif
	kfree(matrix_dev);
}

module_init(vfio_ap_init);
module_exit(vfio_ap_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vfio_ap model: the s390 vfio_ap mdev/migration functions for tracing tests");

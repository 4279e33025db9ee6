// SPDX-License-Identifier: GPL-2.0
/*
 * vfio_ap model: the s390 vfio_ap driver's mdev lifecycle and live-migration functions
 * (patch 03 of the v3 "s390/vfio-ap: live guest migration" series, plus the later
 * patches' set_state logic) with their real names, signatures, call order, locking and
 * allocations, running on any kernel (x86_64 or s390x) without AP hardware or the VFIO
 * core. The VFIO/mdev core is modelled by the model_vfio_* functions below; the driver
 * functions are exactly where aptrace puts its probes.
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

#define VFIO_AP_MODULE_NAME "vfio_ap"
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

/* struct kvm stand-in: the guest that opened the device */
struct kvm_model {
	pid_t guest_pid;
	char guest_comm[TASK_COMM_LEN];
};

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
	struct kref kref;	/* object life (device.kref in the real core) */
	unsigned int open_count;
	bool registered;
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

struct vfio_ap_migration_file;

/* vfio_ap_migration.c: what init_migration_data allocates */
struct vfio_ap_migration_data {
	enum vfio_device_mig_state mig_state;
	struct vfio_ap_migration_file *saving_migf;
	struct vfio_ap_migration_file *resuming_migf;
	size_t config_sz;
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
	struct vfio_ap_migration_data *mig_data;
};

/* What set_state returns for an arc into STOP_COPY or RESUMING (a struct file in the
 * real driver). One per mdev slot, never allocated: nothing to leak. */
struct vfio_ap_migration_file {
	struct ap_matrix_mdev *matrix_mdev;
	enum vfio_device_mig_state mode;
	bool in_use;
};

struct ap_matrix_dev *matrix_dev;

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
	FAULT_MAX,
};
static const char * const fault_names[FAULT_MAX] = {
	"skip-release", "double-init", "init-unlocked", "register-fail",
	"accept-bad-state", "open-fail", "open-fail-noclean",
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
	struct mdev_device_model mdev;
	struct ap_matrix_mdev matrix_mdev;
	struct vfio_ap_migration_file mig_file;
	struct kvm_model kvm;
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

/* ---------------------------------------------------------------------------------------
 * Model of the VFIO core.
 */
static const struct vfio_device_ops_model vfio_ap_matrix_dev_ops;

static void model_vfio_device_release(struct kref *kref)
{
	struct vfio_device_model *vdev = container_of(kref, struct vfio_device_model, kref);
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	struct model_slot *slot = slot_of_matrix_mdev(matrix_mdev);

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
	kref_init(&matrix_mdev->vdev.kref);
	ret = matrix_mdev->vdev.ops->init(&matrix_mdev->vdev);
	if (ret)
		return ERR_PTR(ret);
	return matrix_mdev;
}

noinline int model_vfio_register_emulated_iommu_dev(struct vfio_device_model *vdev)
{
	if (test_and_clear_bit(FAULT_REGISTER_FAIL, &faults))
		return -EIO;
	vdev->registered = true;
	return 0;
}

noinline void model_vfio_unregister_group_dev(struct vfio_device_model *vdev)
{
	vdev->registered = false;
}

noinline void model_vfio_put_device(struct vfio_device_model *vdev)
{
	kref_put(&vdev->kref, model_vfio_device_release);
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

static bool model_state_supported(unsigned int flags, unsigned int s)
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

/* ---------------------------------------------------------------------------------------
 * vfio_ap_migration.c
 */
noinline struct file *vfio_ap_transition_to_state(struct ap_matrix_mdev *matrix_mdev,
						  enum vfio_device_mig_state new_state)
{
	struct vfio_ap_migration_data *mig_data = matrix_mdev->mig_data;
	struct vfio_ap_migration_file *migf = &slot_of_matrix_mdev(matrix_mdev)->mig_file;
	enum vfio_device_mig_state cur_state = mig_data->mig_state;
	struct file *filp = NULL;

	lockdep_assert_held(&matrix_dev->mdevs_lock);

	if ((cur_state == VFIO_DEVICE_STATE_RUNNING && new_state == VFIO_DEVICE_STATE_STOP) ||
	    (cur_state == VFIO_DEVICE_STATE_STOP && new_state == VFIO_DEVICE_STATE_RUNNING)) {
		/* nothing to quiesce or resume in the model */
	} else if (cur_state == VFIO_DEVICE_STATE_STOP &&
		   (new_state == VFIO_DEVICE_STATE_STOP_COPY ||
		    new_state == VFIO_DEVICE_STATE_RESUMING)) {
		migf->matrix_mdev = matrix_mdev;
		migf->mode = new_state;
		migf->in_use = true;
		if (new_state == VFIO_DEVICE_STATE_STOP_COPY)
			mig_data->saving_migf = migf;
		else
			mig_data->resuming_migf = migf;
		filp = (struct file *)migf;
	} else if ((cur_state == VFIO_DEVICE_STATE_STOP_COPY ||
		    cur_state == VFIO_DEVICE_STATE_RESUMING) &&
		   new_state == VFIO_DEVICE_STATE_STOP) {
		migf->in_use = false;
		mig_data->saving_migf = NULL;
		mig_data->resuming_migf = NULL;
	} else if (!model_state_supported(matrix_mdev->vdev.migration_flags, new_state)) {
		/* only reached through the accept-bad-state fault: the driver's bug */
	} else {
		return ERR_PTR(-EINVAL);
	}

	mig_data->mig_state = new_state;
	return filp;
}

noinline struct file *vfio_ap_set_state(struct vfio_device_model *vdev,
					enum vfio_device_mig_state new_state)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	enum vfio_device_mig_state next_state;
	struct file *res = NULL;
	int ret;

	mutex_lock(&matrix_dev->mdevs_lock);
	if (!matrix_mdev->mig_data) {
		res = ERR_PTR(-ENODEV);
		goto out;
	}
	if (!model_state_supported(vdev->migration_flags, new_state) &&
	    new_state < VFIO_DEVICE_NUM_STATES && new_state != VFIO_DEVICE_STATE_ERROR &&
	    test_and_clear_bit(FAULT_ACCEPT_BAD_STATE, &faults)) {
		/* the fault: a state the device cannot honour, taken in one step */
		res = vfio_ap_transition_to_state(matrix_mdev, new_state);
		goto out;
	}
	while (matrix_mdev->mig_data->mig_state != new_state) {
		ret = model_vfio_mig_get_next_state(vdev, matrix_mdev->mig_data->mig_state,
						    new_state, &next_state);
		if (ret) {
			res = ERR_PTR(ret);
			break;
		}
		res = vfio_ap_transition_to_state(matrix_mdev, next_state);
		if (IS_ERR(res))
			break;
		if (res && next_state != new_state) {
			/* a file on an intermediate arc: cannot happen with STOP_COPY only */
			res = ERR_PTR(-EINVAL);
			break;
		}
	}
out:
	mutex_unlock(&matrix_dev->mdevs_lock);
	return res;
}

noinline int vfio_ap_get_state(struct vfio_device_model *vdev,
			       enum vfio_device_mig_state *current_state)
{
	struct ap_matrix_mdev *matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	int ret = 0;

	mutex_lock(&matrix_dev->mdevs_lock);
	if (matrix_mdev->mig_data)
		*current_state = matrix_mdev->mig_data->mig_state;
	else
		ret = -ENODEV;
	mutex_unlock(&matrix_dev->mdevs_lock);
	return ret;
}

noinline int vfio_ap_get_data_size(struct vfio_device_model *vdev,
				   unsigned long *stop_copy_length)
{
	*stop_copy_length = sizeof(struct ap_config_info) + sizeof(struct ap_matrix);
	return 0;
}

static const struct vfio_migration_ops_model vfio_ap_migration_ops = {
	.migration_set_state = vfio_ap_set_state,
	.migration_get_state = vfio_ap_get_state,
	.migration_get_data_size = vfio_ap_get_data_size,
};

noinline void vfio_ap_init_migration_capabilities(struct ap_matrix_mdev *matrix_mdev)
{
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

noinline void vfio_ap_release_migration_data(struct ap_matrix_mdev *matrix_mdev)
{
	lockdep_assert_held(&matrix_dev->mdevs_lock);

	if (!matrix_mdev->mig_data)
		return;

	kfree(matrix_mdev->mig_data);
	matrix_mdev->mig_data = NULL;
}

/* ---------------------------------------------------------------------------------------
 * vfio_ap_ops.c
 */
static void vfio_ap_matrix_init(struct ap_config_info *info, struct ap_matrix *matrix)
{
	matrix->apm_max = info->apxa ? info->na : 63;
	matrix->aqm_max = info->apxa ? info->nd : 15;
	matrix->adm_max = info->apxa ? info->nd : 15;
}

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
	if (!test_and_clear_bit(FAULT_SKIP_RELEASE, &faults))
		vfio_ap_release_migration_data(matrix_mdev);
	mutex_unlock(&matrix_dev->mdevs_lock);
}

noinline int vfio_ap_mdev_probe(struct mdev_device_model *mdev)
{
	struct ap_matrix_mdev *matrix_mdev;
	int ret;

	matrix_mdev = model_vfio_alloc_device(mdev);
	if (IS_ERR(matrix_mdev))
		return PTR_ERR(matrix_mdev);

	mutex_lock(&matrix_dev->mdevs_lock);

	/*
	 * Migration capabilities must be initialized before calling
	 * vfio_register_emulated_iommu_dev; otherwise, the VFIO core
	 * will see mig_ops as NULL during the registration.
	 */
	vfio_ap_init_migration_capabilities(matrix_mdev);

	ret = model_vfio_register_emulated_iommu_dev(&matrix_mdev->vdev);
	if (ret)
		goto err_put_vdev;
	matrix_mdev->req_trigger = NULL;
	matrix_mdev->cfg_chg_trigger = NULL;
	dev_set_drvdata(&mdev->dev, matrix_mdev);
	list_add(&matrix_mdev->node, &matrix_dev->mdev_list);
	mutex_unlock(&matrix_dev->mdevs_lock);
	return 0;

err_put_vdev:
	/* the seed's bug: .release takes mdevs_lock, which this task holds */
	model_vfio_put_device(&matrix_mdev->vdev);
	mutex_unlock(&matrix_dev->mdevs_lock);
	return ret;
}

noinline void vfio_ap_mdev_remove(struct mdev_device_model *mdev)
{
	struct ap_matrix_mdev *matrix_mdev = dev_get_drvdata(&mdev->dev);

	model_vfio_unregister_group_dev(&matrix_mdev->vdev);

	mutex_lock(&matrix_dev->guests_lock);
	mutex_lock(&matrix_dev->mdevs_lock);
	list_del(&matrix_mdev->node);
	mutex_unlock(&matrix_dev->mdevs_lock);
	mutex_unlock(&matrix_dev->guests_lock);
	model_vfio_put_device(&matrix_mdev->vdev);
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
	struct ap_matrix_mdev *matrix_mdev;
	int ret;

	if (!vdev->kvm)
		return -EINVAL;

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

	ret = vfio_ap_mdev_set_kvm(matrix_mdev, vdev->kvm);
	if (ret) {
		if (test_and_clear_bit(FAULT_OPEN_FAIL_NOCLEAN, &faults))
			return ret;
		/* Clean up migration data on failure */
		mutex_lock(&matrix_dev->mdevs_lock);
		vfio_ap_release_migration_data(matrix_mdev);
		mutex_unlock(&matrix_dev->mdevs_lock);
	}

	return ret;
}

noinline void vfio_ap_mdev_close_device(struct vfio_device_model *vdev)
{
	struct ap_matrix_mdev *matrix_mdev;

	mutex_lock(&matrix_dev->mdevs_lock);
	matrix_mdev = container_of(vdev, struct ap_matrix_mdev, vdev);
	if (!test_bit(FAULT_SKIP_RELEASE, &faults))
		vfio_ap_release_migration_data(matrix_mdev);
	mutex_unlock(&matrix_dev->mdevs_lock);

	vfio_ap_mdev_unset_kvm(matrix_mdev);
}

static const struct vfio_device_ops_model vfio_ap_matrix_dev_ops = {
	.name = "vfio_ap",
	.init = vfio_ap_mdev_init_dev,
	.release = vfio_ap_mdev_release_dev,
	.open_device = vfio_ap_mdev_open_device,
	.close_device = vfio_ap_mdev_close_device,
};

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
		if (slots[i].used && !strcmp(slots[i].mdev.uuid, name))
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
	set_result("create %s (thread) ret=%d\n", slot->mdev.uuid, ret);
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
	struct model_slot *slot = data;
	enum vfio_device_mig_state st;

	vfio_ap_get_state(&slot->matrix_mdev.vdev, &st);
	vfio_ap_get_state(&slot->matrix_mdev.vdev, &st);
	atomic_dec(&crowd_left);
	return 0;
}

static int do_crowd(struct model_slot *slot, const char *count)
{
	unsigned int n, i;
	struct task_struct *t;

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
	set_result("crowd %s started %u threads\n", slot->mdev.uuid, n);
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
		   sizeof(struct mutex), offsetof(struct ap_matrix_mdev, mig_data),
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
	strscpy(slot->mdev.uuid, name, sizeof(slot->mdev.uuid));
	slot->mdev.dev.kobj.name = slot->mdev.uuid;	/* dev_name(&mdev->dev) */
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
	vdev->kvm = &slot->kvm;
	ret = vdev->ops->open_device(vdev);
	if (ret) {
		vdev->kvm = NULL;
		return ret;
	}
	vdev->open_count = 1;
	set_result("open %s guest=%d mig_data=%px\n", slot->mdev.uuid, slot->kvm.guest_pid,
		   slot->matrix_mdev.mig_data);
	return 0;
}

static int do_close(struct model_slot *slot)
{
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;

	if (!vdev->open_count)
		return -EINVAL;
	vdev->ops->close_device(vdev);
	vdev->open_count = 0;
	vdev->kvm = NULL;
	set_result("close %s\n", slot->mdev.uuid);
	return 0;
}

static int do_remove(struct model_slot *slot)
{
	char name[40];

	if (slot->matrix_mdev.vdev.open_count)
		return -EBUSY;
	strscpy(name, slot->mdev.uuid, sizeof(name));
	vfio_ap_mdev_remove(&slot->mdev);
	set_result("remove %s\n", name);
	return 0;
}

static int do_migrate(struct model_slot *slot, const char *state)
{
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;
	unsigned int st;
	struct file *f;

	if (parse_state(state, &st))
		return -EINVAL;
	if (!vdev->mig_ops)
		return -EOPNOTSUPP;
	f = vdev->mig_ops->migration_set_state(vdev, st);
	if (IS_ERR(f)) {
		set_result("migrate %s %u refused %ld\n", slot->mdev.uuid, st, PTR_ERR(f));
		return PTR_ERR(f);
	}
	set_result("migrate %s %u ok file=%px\n", slot->mdev.uuid, st, f);
	return 0;
}

static int do_getstate(struct model_slot *slot)
{
	struct vfio_device_model *vdev = &slot->matrix_mdev.vdev;
	enum vfio_device_mig_state st;
	unsigned long sz = 0;
	int ret;

	ret = vdev->mig_ops->migration_get_state(vdev, &st);
	if (ret)
		return ret;
	ret = vdev->mig_ops->migration_get_data_size(vdev, &sz);
	if (ret)
		return ret;
	set_result("state %s %u %s data_size=%lu\n", slot->mdev.uuid, st,
		   st < VFIO_DEVICE_NUM_STATES ? state_names[st] : "?", sz);
	return 0;
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
				       slots[i].mdev.uuid, slots[i].matrix_mdev.vdev.open_count,
				       slots[i].matrix_mdev.mig_data);
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

	dbg_dir = debugfs_create_dir("vfio_ap_model", NULL);
	debugfs_create_file("ctl", 0600, dbg_dir, NULL, &ctl_fops);
	pr_info("vfio_ap_model: loaded, matrix_dev=%px mdevs_lock_off=%zu mig_data_off=%zu\n",
		matrix_dev, offsetof(struct ap_matrix_dev, mdevs_lock),
		offsetof(struct ap_matrix_mdev, mig_data));
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
		if (slots[i].matrix_mdev.vdev.registered)
			vfio_ap_mdev_remove(&slots[i].mdev);
	}
	kfree(matrix_dev);
}

module_init(vfio_ap_init);
module_exit(vfio_ap_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("vfio_ap model: the s390 vfio_ap mdev/migration functions for tracing tests");

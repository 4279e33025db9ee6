// SPDX-License-Identifier: GPL-2.0
/*
 * vfioclient: the testbed's userspace VFIO client, standing in for QEMU. It drives the
 * vfio_ap model through one of two cores, with the same steps:
 *
 *   --core real   the kernel's own VFIO core: mdevs created and removed through the mdev
 *                 core's sysfs, the device opened through the container/group uAPI
 *                 (VFIO_GROUP_SET_CONTAINER, VFIO_SET_IOMMU type1, VFIO_GROUP_GET_DEVICE_FD),
 *                 migration through VFIO_DEVICE_FEATURE, VFIO_DEVICE_RESET;
 *   --core model  the model core of the module's debugfs control file (the same requests,
 *                 written to /sys/kernel/debug/vfio_ap_model/ctl by this process, so it is
 *                 the guest and migration files become its fds as they would from the core).
 *
 * Usage: vfioclient [--core real|model] STEP...   (one argument per step; testbed/README.md)
 * A step prefixed with "!" must fail. Every step prints one line; the first step that does
 * not do what it should ends the client with status 1, naming the step and the error.
 * Built static by xtask (gcc -static, s390x-linux-gnu-gcc -static) into every initramfs.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <libgen.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <linux/vfio.h>

#ifndef VFIO_DEVICE_FEATURE_MIG_DATA_SIZE
/* 6.2's uAPI; the host headers may be older. The 6.1 core answers it with an error. */
#define VFIO_DEVICE_FEATURE_MIG_DATA_SIZE 9
struct vfio_device_feature_mig_data_size {
	__aligned_u64 stop_copy_length;
};
#endif

#define CTL "/sys/kernel/debug/vfio_ap_model/ctl"
#define MAX_DEVS 8

static const char *const state_names[] = {
	"ERROR", "STOP", "RUNNING", "STOP_COPY", "RESUMING", "RUNNING_P2P", "PRE_COPY",
	"PRE_COPY_P2P",
};
#define NUM_STATES (sizeof(state_names) / sizeof(state_names[0]))

struct dev {
	char name[64];
	int group;	/* real core: the group's fd */
	int fd;		/* real core: the device fd; model: 1 while open */
	int mig;	/* the migration file's fd */
	pid_t remover;	/* real core: a remove still waiting in the kernel */
};

static struct dev devs[MAX_DEVS];
static int real_core;
static int container = -1;
static int groups_in_container;
static char err[512];
static int last_errno;	/* of the last failed write to a file (EBUSY: a refusal) */

static int fail(const char *fmt, ...)
{
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(err, sizeof(err), fmt, ap);
	va_end(ap);
	return -1;
}

static struct dev *dev_of(const char *name, int create)
{
	struct dev *free_slot = NULL;

	for (int i = 0; i < MAX_DEVS; i++) {
		if (devs[i].name[0] && !strcmp(devs[i].name, name))
			return &devs[i];
		if (!devs[i].name[0] && !free_slot)
			free_slot = &devs[i];
	}
	if (!create || !free_slot)
		return NULL;
	snprintf(free_slot->name, sizeof(free_slot->name), "%s", name);
	free_slot->group = free_slot->fd = free_slot->mig = -1;
	return free_slot;
}

/* Writes one line to a file, as `echo LINE > PATH` would: one write(). */
static int write_file(const char *path, const char *line)
{
	int fd = open(path, O_WRONLY);
	ssize_t n;

	if (fd < 0)
		return fail("%s: %s", path, strerror(errno));
	n = write(fd, line, strlen(line));
	if (n < 0) {
		int e = errno;

		close(fd);
		last_errno = e;
		return fail("write '%s' to %s: %s", line, path, strerror(e));
	}
	close(fd);
	return 0;
}

/* One request to the model's control file; its result line into out. */
static int ctl(char *out, size_t len, const char *fmt, ...)
{
	char line[256];
	va_list ap;
	ssize_t n;
	int fd;

	va_start(ap, fmt);
	vsnprintf(line, sizeof(line), fmt, ap);
	va_end(ap);
	if (write_file(CTL, line))
		return -1;
	if (!out)
		return 0;
	fd = open(CTL, O_RDONLY);
	if (fd < 0)
		return fail("%s: %s", CTL, strerror(errno));
	n = read(fd, out, len - 1);
	close(fd);
	if (n < 0)
		return fail("reading %s: %s", CTL, strerror(errno));
	out[n] = 0;
	out[strcspn(out, "\n")] = 0;
	return 0;
}

static int parse_state(const char *s)
{
	for (unsigned int i = 0; i < NUM_STATES; i++)
		if (!strcasecmp(s, state_names[i]))
			return i;
	return -1;
}

/* ---- the real core ---------------------------------------------------------------- */

/* A kernel with VFIO but no mdev: the module's own devices under its matrix device,
 * created and removed through ctl's vcreate and vremove. */
static int no_mdev(void)
{
	return access("/sys/class/mdev_bus", F_OK) != 0;
}

static int real_create(const char *name)
{
	glob_t g;
	char path[PATH_MAX];

	if (no_mdev()) {
		if (ctl(NULL, 0, "vcreate %s", name))
			return -1;
		return ctl(NULL, 0, "assign %s", name);
	}
	/* the parent's one type: /sys/class/mdev_bus/matrix/mdev_supported_types/<type> */
	if (glob("/sys/class/mdev_bus/matrix/mdev_supported_types/*/create", 0, NULL, &g) ||
	    g.gl_pathc < 1)
		return fail("no mdev type under /sys/class/mdev_bus/matrix (module built without "
			    "the real core, or mdev.ko not loaded?)");
	snprintf(path, sizeof(path), "%s", g.gl_pathv[0]);
	globfree(&g);
	if (write_file(path, name))
		return -1;
	/* the adapter and domains, as assign_adapter/assign_domain would */
	return ctl(NULL, 0, "assign %s", name);
}

static int real_open(struct dev *d)
{
	char link[PATH_MAX], target[PATH_MAX], path[64];
	struct vfio_group_status status = { .argsz = sizeof(status) };
	ssize_t n;

	if (container < 0) {
		container = open("/dev/vfio/vfio", O_RDWR);
		if (container < 0)
			return fail("/dev/vfio/vfio: %s (vfio.ko loaded?)", strerror(errno));
		if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION)
			return fail("VFIO_GET_API_VERSION: not %d", VFIO_API_VERSION);
		if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1_IOMMU) <= 0)
			return fail("the container has no type1 IOMMU (vfio_iommu_type1.ko loaded?)");
	}
	snprintf(link, sizeof(link), no_mdev() ? "/sys/devices/vfio_ap/matrix/%s/iommu_group" :
		 "/sys/bus/mdev/devices/%s/iommu_group", d->name);
	n = readlink(link, target, sizeof(target) - 1);
	if (n < 0)
		return fail("%s: %s", link, strerror(errno));
	target[n] = 0;
	snprintf(path, sizeof(path), "/dev/vfio/%s", basename(target));
	d->group = open(path, O_RDWR);
	if (d->group < 0)
		return fail("%s: %s", path, strerror(errno));
	if (ioctl(d->group, VFIO_GROUP_GET_STATUS, &status))
		return fail("VFIO_GROUP_GET_STATUS %s: %s", path, strerror(errno));
	if (!(status.flags & VFIO_GROUP_FLAGS_VIABLE))
		return fail("group %s is not viable", path);
	if (ioctl(d->group, VFIO_GROUP_SET_CONTAINER, &container))
		return fail("VFIO_GROUP_SET_CONTAINER %s: %s", path, strerror(errno));
	/* the IOMMU is set once, when the container gets its first group */
	if (!groups_in_container && ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1_IOMMU))
		return fail("VFIO_SET_IOMMU type1: %s", strerror(errno));
	groups_in_container++;
	d->fd = ioctl(d->group, VFIO_GROUP_GET_DEVICE_FD, d->name);
	if (d->fd < 0)
		return fail("VFIO_GROUP_GET_DEVICE_FD %s: %s", d->name, strerror(errno));
	return 0;
}

static void real_drop_group(struct dev *d)
{
	if (d->group < 0)
		return;
	close(d->group);	/* the group leaves the container */
	d->group = -1;
	groups_in_container--;
}

/* VFIO_DEVICE_FEATURE with a payload: GET or SET of one feature. */
static int feature(struct dev *d, unsigned int flags, void *data, size_t len)
{
	char buf[sizeof(struct vfio_device_feature) + 64];
	struct vfio_device_feature *f = (void *)buf;

	memset(buf, 0, sizeof(buf));
	f->argsz = sizeof(*f) + len;
	f->flags = flags;
	memcpy(f->data, data, len);
	if (ioctl(d->fd, VFIO_DEVICE_FEATURE, f))
		return -1;
	memcpy(data, f->data, len);
	return 0;
}

static int real_set_state(struct dev *d, int state, int *fd)
{
	struct vfio_device_feature_mig_state mig = { .device_state = state, .data_fd = -1 };

	if (feature(d, VFIO_DEVICE_FEATURE_SET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &mig,
		    sizeof(mig)))
		return fail("VFIO_DEVICE_FEATURE SET MIG_DEVICE_STATE %s: %s", state_names[state],
			    strerror(errno));
	*fd = mig.data_fd;
	return 0;
}

static int real_getstate(struct dev *d, char *out, size_t len)
{
	struct vfio_device_feature_mig_state mig = { 0 };
	struct vfio_device_feature_mig_data_size size = { 0 };
	struct vfio_device_feature_migration m = { 0 };
	char cfg[256], sz[32] = "-", *a;

	if (feature(d, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIGRATION, &m, sizeof(m)))
		return fail("VFIO_DEVICE_FEATURE GET MIGRATION: %s", strerror(errno));
	if (feature(d, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DEVICE_STATE, &mig,
		    sizeof(mig)))
		return fail("VFIO_DEVICE_FEATURE GET MIG_DEVICE_STATE: %s", strerror(errno));
	/* the core asks the driver's migration_get_data_size where it has one (6.2+) */
	if (!feature(d, VFIO_DEVICE_FEATURE_GET | VFIO_DEVICE_FEATURE_MIG_DATA_SIZE, &size,
		     sizeof(size)))
		snprintf(sz, sizeof(sz), "%llu", (unsigned long long)size.stop_copy_length);
	if (ctl(cfg, sizeof(cfg), "show %s", d->name))
		return -1;
	a = strstr(cfg, " adapter=");
	snprintf(out, len, "state %s %u %s data_size=%s flags=0x%llx%s", d->name,
		 mig.device_state,
		 mig.device_state < NUM_STATES ? state_names[mig.device_state] : "?", sz,
		 (unsigned long long)m.flags, a ? a : "");
	return 0;
}

/* The remove, in a child: the kernel waits there while a file pins the device. */
static int real_remove_start(struct dev *d)
{
	char path[PATH_MAX];
	pid_t pid;

	real_drop_group(d);
	snprintf(path, sizeof(path), "/sys/bus/mdev/devices/%s/remove", d->name);
	pid = fork();
	if (pid < 0)
		return fail("fork: %s", strerror(errno));
	if (pid == 0) {
		/* the child must not hold the device's files: a copy of the migration fd
		 * would keep the file, and so the pin the remove waits for */
		for (int fd = 3; fd < 1024; fd++)
			close(fd);
		if (no_mdev())
			_exit(ctl(NULL, 0, "vremove %s", d->name) ? 1 : 0);
		_exit(write_file(path, "1") ? 1 : 0);
	}
	d->remover = pid;
	return 0;
}

/* Up to 60 s: a remove that waits longer has a pin nobody drops (the run fails, not hangs). */
static int real_remove_wait(struct dev *d)
{
	struct timespec tick = { .tv_nsec = 100000000L };
	int st, i;
	pid_t r = 0;

	for (i = 0; i < 600 && !(r = waitpid(d->remover, &st, WNOHANG)); i++)
		nanosleep(&tick, NULL);
	if (r == 0)
		return fail("remove of %s still waits after 60 s: something pins the device",
			    d->name);
	if (r < 0)
		return fail("waitpid: %s", strerror(errno));
	d->remover = 0;
	if (!WIFEXITED(st) || WEXITSTATUS(st))
		return fail("the remove of %s failed", d->name);
	return 0;
}

/* Whether the remover is still waiting after ms milliseconds. */
static int still_waiting(pid_t pid, int ms)
{
	struct timespec ts = { .tv_sec = ms / 1000, .tv_nsec = (ms % 1000) * 1000000L };

	nanosleep(&ts, NULL);
	return waitpid(pid, NULL, WNOHANG) == 0;
}

/* ---- the steps ---------------------------------------------------------------------- */

static int set_states(struct dev *d, int argc, char **argv, char *out, size_t len)
{
	char res[256];
	int fd = -1;

	for (int i = 0; i < argc; i++) {
		int st = parse_state(argv[i]);

		if (st < 0)
			return fail("unknown state %s", argv[i]);
		if (fd >= 0)
			close(fd);	/* a file of a step on the way: no data to move */
		fd = -1;
		if (real_core) {
			if (real_set_state(d, st, &fd))
				return -1;
		} else {
			char *p;

			if (ctl(res, sizeof(res), "migrate %s %s", d->name, argv[i]))
				return -1;
			p = strstr(res, " ok fd=");
			if (p)
				fd = atoi(p + 7);
		}
	}
	if (fd >= 0) {
		if (d->mig >= 0) {
			close(fd);
			return fail("%s has a migration fd open already", d->name);
		}
		d->mig = fd;
	}
	snprintf(out, len, "state-set %s %s fd=%s", d->name, argv[argc - 1],
		 fd >= 0 ? "yes" : "no");
	return 0;
}

static int do_read(struct dev *d, const char *file, long max, char *out, size_t len)
{
	char buf[4096];
	long total = 0;
	int o;

	if (d->mig < 0)
		return fail("%s has no migration fd", d->name);
	o = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
	if (o < 0)
		return fail("%s: %s", file, strerror(errno));
	while (max < 0 || total < max) {
		size_t want = sizeof(buf);
		ssize_t n;

		if (max >= 0 && (size_t)(max - total) < want)
			want = max - total;
		n = read(d->mig, buf, want);
		if (n < 0) {
			int e = errno;

			close(o);
			return fail("read %s's migration fd after %ld bytes: %s", d->name, total,
				    strerror(e));
		}
		if (n == 0)
			break;
		if (write(o, buf, n) != n) {
			close(o);
			return fail("%s: short write", file);
		}
		total += n;
	}
	close(o);
	snprintf(out, len, "read %s %ld bytes", d->name, total);
	return 0;
}

/* The file's bytes from its start, in writes of `chunk` bytes, at most `count` of them. */
static int do_write(struct dev *d, const char *file, long chunk, long count, char *out,
		    size_t len)
{
	char buf[4096];
	long total = 0, writes = 0;
	int in;

	if (d->mig < 0)
		return fail("%s has no migration fd", d->name);
	if (chunk <= 0 || chunk > (long)sizeof(buf))
		return fail("chunk %ld: 1 to %zu bytes", chunk, sizeof(buf));
	in = open(file, O_RDONLY);
	if (in < 0)
		return fail("%s: %s", file, strerror(errno));
	while (count < 0 || writes < count) {
		ssize_t n = read(in, buf, chunk), w;

		if (n <= 0)
			break;
		w = write(d->mig, buf, n);
		if (w != n) {
			int e = errno;

			close(in);
			return fail("write of %zd bytes (after %ld) into %s's migration fd: %s", n,
				    total, d->name, w < 0 ? strerror(e) : "short write");
		}
		total += n;
		writes++;
	}
	close(in);
	snprintf(out, len, "wrote %s %ld bytes in %ld writes", d->name, total, writes);
	return 0;
}

static int step(int argc, char **argv, char *out, size_t len)
{
	const char *op = argv[0];
	struct dev *d;

	if (argc >= 2 && !strcmp(op, "fault"))
		return ctl(NULL, 0, "fault %s", argv[1]) ?: (snprintf(out, len, "fault %s", argv[1]), 0);
	if (argc < 2)
		return fail("a step needs a device name");
	d = dev_of(argv[1], !strcmp(op, "create"));
	if (!d)
		return fail("unknown device %s (create it first)", argv[1]);

	if (!strcmp(op, "create") && argc == 2) {
		if (real_core ? real_create(d->name) : ctl(NULL, 0, "create %s", d->name))
			return -1;
	} else if (!strcmp(op, "open") && argc == 2) {
		if (real_core ? real_open(d) : ctl(NULL, 0, "open %s", d->name))
			return -1;
		if (!real_core)
			d->fd = 1;
	} else if (!strcmp(op, "state") && argc >= 3) {
		return set_states(d, argc - 2, argv + 2, out, len);
	} else if (!strcmp(op, "getstate") && argc == 2) {
		if (real_core)
			return real_getstate(d, out, len);
		return ctl(out, len, "getstate %s", d->name);
	} else if (!strcmp(op, "read") && (argc == 3 || argc == 4)) {
		return do_read(d, argv[2], argc == 4 ? atol(argv[3]) : -1, out, len);
	} else if (!strcmp(op, "write") && (argc == 4 || argc == 5)) {
		return do_write(d, argv[2], atol(argv[3]), argc == 5 ? atol(argv[4]) : -1, out,
				len);
	} else if (!strcmp(op, "fdclose") && argc == 2) {
		if (d->mig < 0)
			return fail("%s has no migration fd", d->name);
		close(d->mig);	/* the file's release runs on the way out of close */
		d->mig = -1;
	} else if (!strcmp(op, "reset") && argc == 2) {
		if (real_core ? ioctl(d->fd, VFIO_DEVICE_RESET) :
				ctl(NULL, 0, "reset %s", d->name))
			return fail("VFIO_DEVICE_RESET %s: %s", d->name, strerror(errno));
	} else if (!strcmp(op, "close") && argc == 2) {
		if (d->fd < 0)
			return fail("%s is not open", d->name);
		if (real_core ? close(d->fd) : ctl(NULL, 0, "close %s", d->name))
			return fail("close %s: %s", d->name, strerror(errno));
		d->fd = -1;
	} else if (!strcmp(op, "remove-blocked") && argc == 2) {
		/* a migration file pins the device: the real core waits in remove until it is
		 * released, the model core refuses with EBUSY */
		if (real_core) {
			if (real_remove_start(d))
				return -1;
			if (!still_waiting(d->remover, 1500))
				return fail("remove of %s returned while a file pins it", d->name);
			snprintf(out, len, "remove %s waiting", d->name);
			return 0;
		}
		last_errno = 0;
		if (!ctl(NULL, 0, "remove %s", d->name))
			return fail("remove of %s succeeded while a file pins it", d->name);
		if (last_errno != EBUSY)
			return -1;
		snprintf(out, len, "remove %s refused (EBUSY)", d->name);
		return 0;
	} else if (!strcmp(op, "remove") && argc == 2) {
		if (real_core) {
			if (!d->remover && real_remove_start(d))
				return -1;
			if (real_remove_wait(d))
				return -1;
		} else if (ctl(NULL, 0, "remove %s", d->name)) {
			return -1;
		}
		/* the name stays known: a migration fd may outlive the device */
		snprintf(out, len, "remove %s", d->name);
		return 0;
	} else {
		return fail("unknown step (create, open, state, getstate, read, write, fdclose, "
			    "reset, close, remove-blocked, remove, fault)");
	}
	snprintf(out, len, "%s %s", op, d->name);
	return 0;
}

int main(int argc, char **argv)
{
	int first = 1;

	setvbuf(stdout, NULL, _IOLBF, 0);
	if (argc >= 3 && !strcmp(argv[1], "--core")) {
		if (!strcmp(argv[2], "real"))
			real_core = 1;
		else if (strcmp(argv[2], "model"))
			return fprintf(stderr, "vfioclient: --core real|model, not %s\n", argv[2]), 2;
		first = 3;
	}
	if (first >= argc) {
		fprintf(stderr, "usage: vfioclient [--core real|model] STEP...\n");
		return 2;
	}
	for (int i = first; i < argc; i++) {
		char copy[512], *words[16], out[512] = "", *save = NULL, *w;
		int n = 0, must_fail = 0, rc;

		snprintf(copy, sizeof(copy), "%s", argv[i]);
		for (w = strtok_r(copy, " \t", &save); w && n < 16; w = strtok_r(NULL, " \t", &save))
			words[n++] = w;
		if (n && !strcmp(words[0], "!")) {
			must_fail = 1;
			memmove(words, words + 1, --n * sizeof(*words));
		}
		if (!n)
			continue;
		err[0] = 0;
		rc = step(n, words, out, sizeof(out));
		if (must_fail) {
			if (rc == 0) {
				fprintf(stderr, "vfioclient: step '%s' succeeded but must fail (%s)\n",
					argv[i], out);
				return 1;
			}
			printf("failed as expected: %s: %s\n", argv[i], err);
			continue;
		}
		if (rc) {
			fprintf(stderr, "vfioclient: step '%s': %s\n", argv[i],
				err[0] ? err : strerror(errno));
			return 1;
		}
		printf("%s\n", out);
	}
	return 0;
}

// SPDX-License-Identifier: GPL-2.0
/*
 * aptrace_bench: the testbed's benchmark loops, a module unrelated to vfio_ap (issue 7 b-d).
 * /sys/kernel/debug/aptrace_bench/ctl, one command per write, `cat ctl` for the last result:
 *   call ADDR N        call the function at ADDR (from /proc/kallsyms, e.g.
 *                      vfio_ap_get_data_size) N times as int f(void *, unsigned long *)
 *                      with a NULL first argument; time the loop with ktime
 *   alloc N SIZE       N kmalloc(SIZE, GFP_KERNEL) + kfree pairs from this module's text
 *   rate ADDR K MS     for MS milliseconds, K calls of ADDR every millisecond (a sustained
 *                      event rate of about 2K/ms for the agent: entry and return)
 * Result line: "<cmd> n=<calls> ns=<total ns> per_call_ps=<picoseconds per call>".
 */
#include <linux/module.h>
#include <linux/debugfs.h>
#include <linux/slab.h>
#include <linux/ktime.h>
#include <linux/delay.h>
#include <linux/uaccess.h>

static struct dentry *dir;
static char result[160];
static DEFINE_MUTEX(lock);

typedef int (*get_size_fn)(void *, unsigned long *);

static noinline void set_result(const char *cmd, u64 n, u64 ns)
{
	snprintf(result, sizeof(result), "%s n=%llu ns=%llu per_call_ps=%llu\n", cmd, n, ns,
		 n ? div64_u64(ns * 1000, n) : 0);
}

static noinline u64 call_loop(get_size_fn f, u64 n)
{
	unsigned long len = 0;
	u64 i, t0 = ktime_get_ns();

	for (i = 0; i < n; i++)
		f(NULL, &len);
	return ktime_get_ns() - t0;
}

static noinline u64 alloc_loop(u64 n, size_t size)
{
	u64 i, t0 = ktime_get_ns();

	for (i = 0; i < n; i++) {
		char *p = kmalloc(size, GFP_KERNEL);

		if (!p)
			break;
		WRITE_ONCE(p[0], (char)i);
		kfree(p);
	}
	return ktime_get_ns() - t0;
}

static ssize_t ctl_write(struct file *file, const char __user *ubuf, size_t len, loff_t *ppos)
{
	char buf[96], cmd[16];
	unsigned long long a = 0, b = 0, c = 0;
	u64 ns, i;
	int n;

	if (len >= sizeof(buf))
		return -EINVAL;
	if (copy_from_user(buf, ubuf, len))
		return -EFAULT;
	buf[len] = 0;
	n = sscanf(buf, "%15s %llx %llu %llu", cmd, &a, &b, &c);
	mutex_lock(&lock);
	if (n == 3 && !strcmp(cmd, "call") && a) {
		set_result(cmd, b, call_loop((get_size_fn)(unsigned long)a, b));
	} else if (n >= 2 && !strcmp(cmd, "alloc")) {
		/* alloc N SIZE: N is parsed as hex above; re-read both as decimal */
		sscanf(buf, "%15s %llu %llu", cmd, &a, &b);
		set_result(cmd, a, alloc_loop(a, b ? b : 64));
	} else if (n == 4 && !strcmp(cmd, "rate") && a) {
		ns = 0;
		for (i = 0; i < c; i++) {
			ns += call_loop((get_size_fn)(unsigned long)a, b);
			usleep_range(1000, 1000);
		}
		set_result(cmd, b * c, ns);
	} else {
		mutex_unlock(&lock);
		return -EINVAL;
	}
	mutex_unlock(&lock);
	return len;
}

static ssize_t ctl_read(struct file *file, char __user *ubuf, size_t len, loff_t *ppos)
{
	return simple_read_from_buffer(ubuf, len, ppos, result, strlen(result));
}

static const struct file_operations ctl_fops = {
	.owner = THIS_MODULE,
	.write = ctl_write,
	.read = ctl_read,
};

static int __init bench_init(void)
{
	dir = debugfs_create_dir("aptrace_bench", NULL);
	debugfs_create_file("ctl", 0600, dir, NULL, &ctl_fops);
	return 0;
}

static void __exit bench_exit(void)
{
	debugfs_remove_recursive(dir);
}

module_init(bench_init);
module_exit(bench_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("aptrace testbed benchmark loops (unrelated to vfio_ap)");

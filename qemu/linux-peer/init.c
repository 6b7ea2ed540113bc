/*
 * PID 1 of the Linux peer run (`cargo xtask bench --linux`,
 * xtask/src/linux_peer.rs): Linux's own SMMUv3 driver measured on the same
 * QEMU machine as the project, through VFIO type1 (the Debian kernel has no
 * iommufd), with the same clock: under `-icount shift=0,sleep=off` and
 * `-cpu max` CNTFRQ is 1 GHz, so one CNTVCT tick is one guest instruction.
 *
 * Steps: mount proc, sysfs and devtmpfs; load the VFIO modules listed in
 * /mods/order (the xtask resolved their dependencies from modules.dep);
 * hand QEMU's edu device (1234:11e8) to vfio-pci; open the container and
 * edu's IOMMU group; measure; power off. Every figure is the minimum over
 * ITER iterations, counter-read overhead subtracted, printed as
 * `BENCH <name> <value> instructions` lines (the project's own format).
 * Any failure prints `PEER-FAIL <what>: <errno text>` and powers off, so the
 * xtask never waits for its timeout on a broken run.
 *
 * Built with `aarch64-linux-gnu-gcc -O2 -static` by the xtask.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/reboot.h>
#include <linux/vfio.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/mount.h>
#include <sys/reboot.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

/* Same count as qemu/bench-smmu: the first round is cold, the minimum warm. */
#define ITER 24
#define PAGE 4096UL
/* The project's bench maps at this IOVA too; it is outside the MSI window
 * QEMU's virt machine reserves (0x08000000..). */
#define IOVA 0x1000000UL
#define BUF (512 * PAGE)

static void power_off(void)
{
	sync();
	reboot(RB_POWER_OFF);
	/* reboot() only returns on failure; nothing else is left to do. */
	for (;;)
		pause();
}

static void fail(const char *what)
{
	printf("PEER-FAIL %s: %s\n", what, strerror(errno));
	fflush(stdout);
	power_off();
}

static inline uint64_t counter(void)
{
	uint64_t v;
	/* isb: the read is not hoisted above the work it measures. */
	__asm__ volatile("isb\n\tmrs %0, cntvct_el0" : "=r"(v)::"memory");
	return v;
}

static uint64_t overhead;

/* Profile marker for xtask/profile/insnprof.c (the `--linux` profile
 * boot): `hint #0x71 + k - 1` starts phase k, `hint #0x70` stops.
 * Unallocated hints execute as NOPs, so they change nothing else; they
 * sit outside the counter reads. */
static inline void phase(int k)
{
	switch (k) {
	case 1: __asm__ volatile("hint #0x71" ::: "memory"); break;
	case 2: __asm__ volatile("hint #0x72" ::: "memory"); break;
	case 3: __asm__ volatile("hint #0x73" ::: "memory"); break;
	case 4: __asm__ volatile("hint #0x74" ::: "memory"); break;
	case 5: __asm__ volatile("hint #0x75" ::: "memory"); break;
	default: __asm__ volatile("hint #0x70" ::: "memory"); break;
	}
}

static void keep_min(uint64_t *best, uint64_t t0, uint64_t t1)
{
	uint64_t d = t1 - t0;
	d = d > overhead ? d - overhead : 0;
	if (d < *best)
		*best = d;
}

static void report(const char *name, uint64_t v)
{
	printf("BENCH %s %llu instructions\n", name, (unsigned long long)v);
}

static int write_file(const char *path, const char *text)
{
	int fd = open(path, O_WRONLY);
	if (fd < 0)
		return -1;
	ssize_t n = write(fd, text, strlen(text));
	close(fd);
	return n == (ssize_t)strlen(text) ? 0 : -1;
}

/* Reads a small sysfs file into buf (NUL-terminated, newline dropped). */
static int read_file(const char *path, char *buf, size_t len)
{
	int fd = open(path, O_RDONLY);
	if (fd < 0)
		return -1;
	ssize_t n = read(fd, buf, len - 1);
	close(fd);
	if (n < 0)
		return -1;
	buf[n] = 0;
	if (n > 0 && buf[n - 1] == '\n')
		buf[n - 1] = 0;
	return 0;
}

static void load_modules(void)
{
	FILE *f = fopen("/mods/order", "r");
	if (!f)
		fail("open /mods/order");
	char name[256], path[300];
	while (fgets(name, sizeof name, f)) {
		name[strcspn(name, "\n")] = 0;
		if (!name[0])
			continue;
		snprintf(path, sizeof path, "/mods/%s", name);
		int fd = open(path, O_RDONLY);
		if (fd < 0)
			fail(path);
		if (syscall(SYS_finit_module, fd, "", 0) != 0 && errno != EEXIST)
			fail(path);
		close(fd);
	}
	fclose(f);
}

/* Finds edu, binds it to vfio-pci, returns its IOMMU group number. */
static int bind_edu(void)
{
	DIR *d = opendir("/sys/bus/pci/devices");
	if (!d)
		fail("opendir /sys/bus/pci/devices");
	struct dirent *e;
	char bdf[256] = "", p[512], v[64];
	while ((e = readdir(d))) {
		if (e->d_name[0] == '.')
			continue;
		snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/vendor", e->d_name);
		if (read_file(p, v, sizeof v) || strcmp(v, "0x1234"))
			continue;
		snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/device", e->d_name);
		if (read_file(p, v, sizeof v) || strcmp(v, "0x11e8"))
			continue;
		snprintf(bdf, sizeof bdf, "%s", e->d_name);
	}
	closedir(d);
	if (!bdf[0]) {
		errno = ENODEV;
		fail("find edu (1234:11e8)");
	}
	snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/driver_override", bdf);
	if (write_file(p, "vfio-pci"))
		fail("driver_override");
	if (write_file("/sys/bus/pci/drivers_probe", bdf))
		fail("drivers_probe");
	snprintf(p, sizeof p, "/sys/bus/pci/devices/%s/iommu_group", bdf);
	char link[256];
	ssize_t n = readlink(p, link, sizeof link - 1);
	if (n < 0)
		fail("iommu_group link");
	link[n] = 0;
	const char *slash = strrchr(link, '/');
	printf("peer: edu at %s, IOMMU group %s\n", bdf, slash ? slash + 1 : link);
	return atoi(slash ? slash + 1 : link);
}

static void set_container(int group, int container)
{
	if (ioctl(group, VFIO_GROUP_SET_CONTAINER, &container))
		fail("VFIO_GROUP_SET_CONTAINER");
}

static void set_iommu(int container)
{
	if (ioctl(container, VFIO_SET_IOMMU, VFIO_TYPE1v2_IOMMU))
		fail("VFIO_SET_IOMMU");
}

static void map(int container, void *va, uint64_t size)
{
	struct vfio_iommu_type1_dma_map m = {
		.argsz = sizeof m,
		.flags = VFIO_DMA_MAP_FLAG_READ | VFIO_DMA_MAP_FLAG_WRITE,
		.vaddr = (uint64_t)(uintptr_t)va,
		.iova = IOVA,
		.size = size,
	};
	if (ioctl(container, VFIO_IOMMU_MAP_DMA, &m))
		fail("VFIO_IOMMU_MAP_DMA");
}

static void unmap(int container, uint64_t size)
{
	struct vfio_iommu_type1_dma_unmap u = {
		.argsz = sizeof u,
		.iova = IOVA,
		.size = size,
	};
	if (ioctl(container, VFIO_IOMMU_UNMAP_DMA, &u))
		fail("VFIO_IOMMU_UNMAP_DMA");
	if (u.size != size) {
		errno = EIO;
		fail("VFIO_IOMMU_UNMAP_DMA unmapped less than asked");
	}
}

/* The kernel's text symbols, for the xtask to name the profile's
 * addresses (Debian's package has no real System.map). Run after every
 * measurement; only on a boot that asks for it. */
static void dump_kallsyms(void)
{
	FILE *f = fopen("/proc/kallsyms", "r");
	if (!f)
		fail("open /proc/kallsyms");
	char line[512], addr[32], type[8], name[400];
	while (fgets(line, sizeof line, f)) {
		/* Module symbols carry a "[module]" field: modules are reported
		 * as one part, so only the kernel image's text is needed. */
		if (sscanf(line, "%31s %7s %399s", addr, type, name) != 3 || strchr(line, '['))
			continue;
		if (strchr("tTwW", type[0]) || !strcmp(name, "_etext"))
			printf("KSYM %s %s\n", addr, name);
	}
	fclose(f);
}

/* Map then unmap `pages` pages in one call each, ITER times; the last
 * (warm) round is marked as profile phases `map_phase` and `map_phase + 1`. */
static void map_unmap(int container, void *buf, unsigned pages, int map_phase)
{
	uint64_t best_map = UINT64_MAX, best_unmap = UINT64_MAX;
	for (int i = 0; i < ITER; i++) {
		int last = i + 1 == ITER;
		if (last)
			phase(map_phase);
		uint64_t t0 = counter();
		map(container, buf, pages * PAGE);
		uint64_t t1 = counter();
		if (last)
			phase(map_phase + 1);
		unmap(container, pages * PAGE);
		uint64_t t2 = counter();
		if (last)
			phase(0);
		keep_min(&best_map, t0, t1);
		keep_min(&best_unmap, t1, t2);
	}
	char name[64];
	snprintf(name, sizeof name, "linux_map%u_ioctl", pages);
	report(name, best_map);
	snprintf(name, sizeof name, "linux_unmap%u_ioctl", pages);
	report(name, best_unmap);
}

int main(void)
{
	mkdir("/proc", 0755);
	mkdir("/sys", 0755);
	mkdir("/dev", 0755);
	/* The kernel found no /dev/console in the initramfs: open it once
	 * devtmpfs is there, so printf reaches the serial console. */
	if (mount("devtmpfs", "/dev", "devtmpfs", 0, NULL))
		power_off();
	int con = open("/dev/console", O_RDWR);
	if (con < 0)
		power_off();
	dup2(con, 0);
	dup2(con, 1);
	dup2(con, 2);
	setvbuf(stdout, NULL, _IOLBF, 0);
	if (mount("proc", "/proc", "proc", 0, NULL))
		fail("mount /proc");
	if (mount("sysfs", "/sys", "sysfs", 0, NULL))
		fail("mount /sys");

	uint64_t a = counter(), b = counter();
	overhead = b - a;

	load_modules();
	int gnum = bind_edu();
	int container = open("/dev/vfio/vfio", O_RDWR);
	if (container < 0)
		fail("open /dev/vfio/vfio");
	if (ioctl(container, VFIO_GET_API_VERSION) != VFIO_API_VERSION) {
		errno = EPROTO;
		fail("VFIO_GET_API_VERSION");
	}
	if (ioctl(container, VFIO_CHECK_EXTENSION, VFIO_TYPE1v2_IOMMU) != 1) {
		errno = ENOTSUP;
		fail("VFIO_CHECK_EXTENSION(TYPE1v2)");
	}
	char gpath[64];
	snprintf(gpath, sizeof gpath, "/dev/vfio/%d", gnum);
	int group = open(gpath, O_RDWR);
	if (group < 0)
		fail(gpath);
	struct vfio_group_status st = {.argsz = sizeof st};
	if (ioctl(group, VFIO_GROUP_GET_STATUS, &st))
		fail("VFIO_GROUP_GET_STATUS");
	if (!(st.flags & VFIO_GROUP_FLAGS_VIABLE)) {
		errno = EBUSY;
		fail("group not viable");
	}

	/* A null system call, for scale. */
	uint64_t null_call = UINT64_MAX;
	for (int i = 0; i < ITER; i++) {
		uint64_t t0 = counter();
		syscall(SYS_getppid);
		uint64_t t1 = counter();
		keep_min(&null_call, t0, t1);
	}
	report("linux_null_syscall", null_call);

	/* Attach: the group joins the container (VFIO claims DMA ownership:
	 * the SMMUv3 driver attaches its blocking domain) and the container
	 * gets a type1 IOMMU (a paging domain allocated and attached). Each
	 * round but the last detaches again (UNSET_CONTAINER), which also
	 * frees the domain, so every round attaches a fresh one. */
	uint64_t set_c = UINT64_MAX, set_i = UINT64_MAX, attach = UINT64_MAX,
		 detach = UINT64_MAX;
	for (int i = 0; i < ITER; i++) {
		if (i + 1 == ITER)
			phase(3);
		uint64_t t0 = counter();
		set_container(group, container);
		uint64_t t1 = counter();
		set_iommu(container);
		uint64_t t2 = counter();
		phase(0);
		keep_min(&set_c, t0, t1);
		keep_min(&set_i, t1, t2);
		keep_min(&attach, t0, t2);
		if (i + 1 < ITER) {
			uint64_t t3 = counter();
			if (ioctl(group, VFIO_GROUP_UNSET_CONTAINER))
				fail("VFIO_GROUP_UNSET_CONTAINER");
			uint64_t t4 = counter();
			keep_min(&detach, t3, t4);
		}
	}
	report("linux_attach_set_container", set_c);
	report("linux_attach_set_iommu", set_i);
	report("linux_attach_ioctls", attach);
	report("linux_detach_unset_container", detach);

	/* 2 MiB of anonymous memory in 4 KiB pages, faulted in before
	 * measuring so the map calls pin present pages (as the project's
	 * client maps memory it owns). No transparent huge page: a 2 MiB
	 * mapping is PMD-aligned, and one huge folio would make pinning and
	 * mapping a single contiguous run, which is not what a VFIO user's
	 * ordinary memory looks like (nor the 4 KiB pages the project maps). */
	void *buf = mmap(NULL, BUF, PROT_READ | PROT_WRITE,
			 MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (buf == MAP_FAILED)
		fail("mmap");
	if (madvise(buf, BUF, MADV_NOHUGEPAGE))
		fail("madvise(MADV_NOHUGEPAGE)");
	memset(buf, 0x5a, BUF);
	map_unmap(container, buf, 64, 1);
	map_unmap(container, buf, 512, 4);

	char cmdline[1024] = "";
	read_file("/proc/cmdline", cmdline, sizeof cmdline);
	if (strstr(cmdline, "peer.kallsyms"))
		dump_kallsyms();

	printf("PEER-DONE\n");
	power_off();
	return 0;
}

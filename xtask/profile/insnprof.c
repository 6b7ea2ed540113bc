/*
 * insnprof: a QEMU TCG plugin (plugin API 4, QEMU 10) counting executed
 * guest instructions per instruction address, in phases the guest selects
 * itself with marker hints: `hint #0x71`..`hint #0x77` start phase 1..7,
 * `hint #0x70` stops counting. Unallocated hints execute as NOPs, so the
 * markers cost one instruction each and change nothing else.
 *
 * args: out=FILE. Output lines: "<phase> <vaddr hex> <count>", one per
 * (phase, address); addresses are virtual, so the reader symbolizes them
 * against the ELF that was running (tasks share their link address: use
 * windows where one task dominates).
 */
#include <inttypes.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The few declarations of QEMU's plugin API used here (qemu-plugin.h,
 * API version 4), so no QEMU headers are needed to build. */
typedef uint64_t qemu_plugin_id_t;
struct qemu_info_t;
struct qemu_plugin_tb;
struct qemu_plugin_insn;
enum qemu_plugin_cb_flags { CB_NO_REGS, CB_R_REGS, CB_RW_REGS };
typedef void (*udata_cb_t)(qemu_plugin_id_t id, void *userdata);
typedef void (*vcpu_udata_cb_t)(unsigned int vcpu_index, void *userdata);
typedef void (*tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_insn_exec_cb(struct qemu_plugin_insn *insn, vcpu_udata_cb_t cb,
                                            enum qemu_plugin_cb_flags flags, void *userdata);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
struct qemu_plugin_insn *qemu_plugin_tb_get_insn(const struct qemu_plugin_tb *tb, size_t idx);
size_t qemu_plugin_insn_data(const struct qemu_plugin_insn *insn, void *dest, size_t len);
uint64_t qemu_plugin_insn_vaddr(const struct qemu_plugin_insn *insn);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 4;

#define PHASES 8
#define HINT(n) (0xD503201Fu | ((uint32_t)(n) << 5))

struct rec {
	uint64_t vaddr;
	uint64_t n[PHASES];
	struct rec *next;
};

static struct rec *recs;
static unsigned phase;
static FILE *out;

static void exec_insn(unsigned int vcpu, void *u)
{
	(void)vcpu;
	((struct rec *)u)->n[phase]++;
}

static void exec_marker(unsigned int vcpu, void *u)
{
	(void)vcpu;
	phase = (unsigned)(uintptr_t)u;
}

static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
	(void)id;
	size_t n = qemu_plugin_tb_n_insns(tb);
	for (size_t i = 0; i < n; i++) {
		struct qemu_plugin_insn *insn = qemu_plugin_tb_get_insn(tb, i);
		uint32_t op = 0;
		qemu_plugin_insn_data(insn, &op, sizeof op);
		if (op >= HINT(0x70) && op <= HINT(0x77) && (op - HINT(0x70)) % 32 == 0) {
			qemu_plugin_register_vcpu_insn_exec_cb(insn, exec_marker, CB_NO_REGS,
							       (void *)(uintptr_t)((op - HINT(0x70)) / 32));
			continue;
		}
		struct rec *r = calloc(1, sizeof *r);
		if (!r)
			abort();
		r->vaddr = qemu_plugin_insn_vaddr(insn);
		r->next = recs;
		recs = r;
		qemu_plugin_register_vcpu_insn_exec_cb(insn, exec_insn, CB_NO_REGS, r);
	}
}

static void at_exit(qemu_plugin_id_t id, void *u)
{
	(void)id;
	(void)u;
	for (struct rec *r = recs; r; r = r->next)
		for (unsigned p = 1; p < PHASES; p++)
			if (r->n[p])
				fprintf(out, "%u %" PRIx64 " %" PRIu64 "\n", p, r->vaddr, r->n[p]);
	fclose(out);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id,
							       const struct qemu_info_t *info,
							       int argc, char **argv)
{
	(void)info;
	const char *path = "insnprof.out";
	for (int i = 0; i < argc; i++)
		if (strncmp(argv[i], "out=", 4) == 0)
			path = argv[i] + 4;
	out = fopen(path, "w");
	if (!out)
		return -1;
	qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
	qemu_plugin_register_atexit_cb(id, at_exit, NULL);
	return 0;
}

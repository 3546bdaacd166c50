/* A qemu-user TCG plugin that counts guest instructions executed per translation block start
 * address and prints them at exit ("pc count" lines after "start_code: ADDR", where the
 * program's text was loaded), for attributing an
 * embedding's cost to functions (scripts/arm-profile maps addresses to symbols).
 * API declarations: plugin-api.h. Build: gcc -shared -fPIC -O2 -o insn-profile.so insn-profile.c
 * Use: qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin ./insn-profile.so -d plugin PROGRAM... */
#include <stdio.h>
#include <stdlib.h>
#include "plugin-api.h"

/* Open addressing on the block's start address; a block translated again (a new TB for the
 * same code) adds to the same slot. 2^21 slots: far more blocks than one program executes. */
#define SLOTS (1u << 21)
struct slot { uint64_t pc; uint64_t insns; };
static struct slot *table;

static struct slot *slot_of(uint64_t pc) {
  uint64_t h = (pc * 0x9E3779B97F4A7C15ull) >> 43;
  for (uint64_t i = 0; i < SLOTS; i++) {
    struct slot *s = &table[(h + i) & (SLOTS - 1)];
    if (s->pc == pc) return s;
    if (s->pc == 0) { s->pc = pc; return s; }
  }
  abort();
}

static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  struct slot *s = slot_of(qemu_plugin_tb_vaddr(tb));
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &s->insns, qemu_plugin_tb_n_insns(tb));
}

static void done(qemu_plugin_id_t id, void *p) {
  char buf[96];
  snprintf(buf, sizeof buf, "start_code: %llx\n", (unsigned long long)qemu_plugin_start_code());
  qemu_plugin_outs(buf);
  for (uint64_t i = 0; i < SLOTS; i++) {
    if (table[i].insns == 0) continue;
    snprintf(buf, sizeof buf, "%llx %llu\n", (unsigned long long)table[i].pc, (unsigned long long)table[i].insns);
    qemu_plugin_outs(buf);
  }
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv) {
  table = calloc(SLOTS, sizeof *table);
  if (!table) return -1;
  qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
  qemu_plugin_register_atexit_cb(id, done, NULL);
  return 0;
}

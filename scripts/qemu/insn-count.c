/* A qemu-user TCG plugin that counts guest instructions executed and prints the total at exit.
 * API declarations: plugin-api.h. Build: gcc -shared -fPIC -O2 -o insn-count.so insn-count.c
 * Use: qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin ./insn-count.so -d plugin PROGRAM...
 * Used by scripts/arm-cost. */
#include <stdio.h>
#include "plugin-api.h"
static uint64_t count;
static void trans(qemu_plugin_id_t id, struct qemu_plugin_tb *tb) {
  qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &count, qemu_plugin_tb_n_insns(tb));
}
static void done(qemu_plugin_id_t id, void *p) {
  char buf[64]; snprintf(buf, sizeof buf, "insns: %llu\n", (unsigned long long)count); qemu_plugin_outs(buf);
}
__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const void *info, int argc, char **argv) {
  qemu_plugin_register_vcpu_tb_trans_cb(id, trans);
  qemu_plugin_register_atexit_cb(id, done, NULL);
  return 0;
}

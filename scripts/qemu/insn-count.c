/* A qemu-user TCG plugin that counts guest instructions executed and prints the total at exit.
 * Debian's qemu-user is built with plugin support but ships no plugins, and its headers are
 * not packaged, so the few declarations needed are written out here (plugin API version 1,
 * QEMU 7.2). Build: gcc -shared -fPIC -O2 -o insn-count.so insn-count.c
 * Use: qemu-aarch64 -L /usr/aarch64-linux-gnu -plugin ./insn-count.so -d plugin PROGRAM...
 * Used by scripts/arm-cost. */
#include <stdint.h>
#include <stdio.h>
#include <stdbool.h>
#include <stddef.h>
typedef uint64_t qemu_plugin_id_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
__attribute__((visibility("default"))) int qemu_plugin_version = 1;
extern void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, struct qemu_plugin_tb *));
extern size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *);
extern void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *, enum qemu_plugin_op, void *, uint64_t);
extern void qemu_plugin_register_atexit_cb(qemu_plugin_id_t, void (*)(qemu_plugin_id_t, void *), void *);
extern void qemu_plugin_outs(const char *);
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

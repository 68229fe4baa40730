/*
 * A QEMU TCG plugin that counts the guest instructions a program runs between its own marks
 * (bench/pi_estimate.py): the instruction counts of the door's stages on an emulated Cortex-A72
 * or A76, from which the Pi estimate is made; and (bench/x86_estimate.py) of each pipeline's frame
 * on an emulated x86 CPU without AVX-512 or int8 dot-product instructions.
 *
 * The guest marks a point with lseek(-1, MARK_MAGIC, label), a call that fails harmlessly (EBADF);
 * the plugin prints "icount <label> <instructions so far>" to stderr there and at exit.
 * Counts are exact for one guest thread; run the measured work on one thread.
 *
 * The declarations are QEMU's plugin API (include/qemu/qemu-plugin.h, version 1, QEMU 4.2 to 8.x),
 * written out here because distributions ship the plugin loader but not the header:
 *
 *   gcc -shared -fPIC -O2 -o qemu_icount.so bench/qemu_icount.c
 *   qemu-aarch64 -cpu cortex-a72 -plugin ./qemu_icount.so PROGRAM ...
 */
#include <inttypes.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef uint64_t qemu_plugin_id_t;
typedef struct qemu_info_t qemu_info_t;
struct qemu_plugin_tb;
enum qemu_plugin_op { QEMU_PLUGIN_INLINE_ADD_U64 };
typedef void (*qemu_plugin_vcpu_tb_trans_cb_t)(qemu_plugin_id_t id, struct qemu_plugin_tb *tb);
typedef void (*qemu_plugin_vcpu_syscall_cb_t)(qemu_plugin_id_t id, unsigned int vcpu_index, int64_t num, uint64_t a1,
                                              uint64_t a2, uint64_t a3, uint64_t a4, uint64_t a5, uint64_t a6,
                                              uint64_t a7, uint64_t a8);
typedef void (*qemu_plugin_udata_cb_t)(qemu_plugin_id_t id, void *userdata);
void qemu_plugin_register_vcpu_tb_trans_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_tb_trans_cb_t cb);
void qemu_plugin_register_vcpu_tb_exec_inline(struct qemu_plugin_tb *tb, enum qemu_plugin_op op, void *ptr, uint64_t imm);
size_t qemu_plugin_tb_n_insns(const struct qemu_plugin_tb *tb);
void qemu_plugin_register_vcpu_syscall_cb(qemu_plugin_id_t id, qemu_plugin_vcpu_syscall_cb_t cb);
void qemu_plugin_register_atexit_cb(qemu_plugin_id_t id, qemu_plugin_udata_cb_t cb, void *userdata);

__attribute__((visibility("default"))) int qemu_plugin_version = 1;

#define AARCH64_LSEEK 62
#define X86_64_LSEEK 8
#define MARK_MAGIC 0x1C0DE5EEDULL

static uint64_t instructions;

static void on_translate(qemu_plugin_id_t id, struct qemu_plugin_tb *tb)
{
    (void)id;
    qemu_plugin_register_vcpu_tb_exec_inline(tb, QEMU_PLUGIN_INLINE_ADD_U64, &instructions, qemu_plugin_tb_n_insns(tb));
}

static void on_syscall(qemu_plugin_id_t id, unsigned int vcpu, int64_t num, uint64_t a1, uint64_t a2, uint64_t a3,
                       uint64_t a4, uint64_t a5, uint64_t a6, uint64_t a7, uint64_t a8)
{
    (void)id; (void)vcpu; (void)a4; (void)a5; (void)a6; (void)a7; (void)a8;
    if ((num == AARCH64_LSEEK || num == X86_64_LSEEK) && (uint32_t)a1 == UINT32_MAX && a2 == MARK_MAGIC) {
        fprintf(stderr, "icount %" PRIu64 " %" PRIu64 "\n", a3, instructions);
    }
}

static void on_exit(qemu_plugin_id_t id, void *userdata)
{
    (void)id; (void)userdata;
    fprintf(stderr, "icount exit %" PRIu64 "\n", instructions);
}

__attribute__((visibility("default"))) int qemu_plugin_install(qemu_plugin_id_t id, const qemu_info_t *info, int argc, char **argv)
{
    (void)info; (void)argc; (void)argv;
    qemu_plugin_register_vcpu_tb_trans_cb(id, on_translate);
    qemu_plugin_register_vcpu_syscall_cb(id, on_syscall);
    qemu_plugin_register_atexit_cb(id, on_exit, NULL);
    return 0;
}

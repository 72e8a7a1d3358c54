// Temporary files removed when the process is killed mid-write (qlora_system.h). The table is
// fixed-size and each slot is claimed and released with atomics, so the handler reads it
// without locks or allocation: unlink(2), sigaction(2) and raise(3) are async-signal-safe.

#include "include/qlora_system.h"
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

#define TMP_SLOTS 64
#define TMP_PATH_MAX 4096

static char tmp_paths[TMP_SLOTS][TMP_PATH_MAX];
static atomic_int tmp_state[TMP_SLOTS]; // 0 free, 1 being written, 2 registered
static atomic_int handlers_installed;
static const int cleanup_signals[] = {SIGINT, SIGTERM, SIGHUP};
#define NSIG_CLEANUP (int)(sizeof cleanup_signals / sizeof cleanup_signals[0])
static struct sigaction previous[NSIG_CLEANUP];

static void cleanup_handler(int sig, siginfo_t *info, void *ctx) {
    for (int i = 0; i < TMP_SLOTS; i++) {
        if (atomic_load(&tmp_state[i]) == 2) unlink(tmp_paths[i]);
    }
    for (int k = 0; k < NSIG_CLEANUP; k++) {
        if (cleanup_signals[k] != sig) continue;
        struct sigaction *old = &previous[k];
        if (old->sa_flags & SA_SIGINFO) {
            if (old->sa_sigaction) old->sa_sigaction(sig, info, ctx);
            return;
        }
        if (old->sa_handler == SIG_IGN) return;
        if (old->sa_handler != SIG_DFL) { old->sa_handler(sig); return; }
        // Default action: restore it and deliver the signal again, so the exit status says
        // "killed by SIGTERM" as before.
        sigaction(sig, old, NULL);
        sigset_t set;
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(sig);
        return;
    }
}

static void install_handlers(void) {
    int expected = 0;
    if (!atomic_compare_exchange_strong(&handlers_installed, &expected, 1)) return;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_sigaction = cleanup_handler;
    sa.sa_flags = SA_SIGINFO | SA_RESTART;
    sigemptyset(&sa.sa_mask);
    for (int k = 0; k < NSIG_CLEANUP; k++) sigaddset(&sa.sa_mask, cleanup_signals[k]);
    for (int k = 0; k < NSIG_CLEANUP; k++) {
        struct sigaction old;
        if (sigaction(cleanup_signals[k], NULL, &old) != 0) continue;
        // A signal the process ignores (nohup) stays ignored.
        if (!(old.sa_flags & SA_SIGINFO) && old.sa_handler == SIG_IGN) { previous[k] = old; continue; }
        sigaction(cleanup_signals[k], &sa, &previous[k]);
    }
}

int ql_tmp_register(const char *path) {
    size_t n = strlen(path);
    if (n >= TMP_PATH_MAX) return -1;
    install_handlers();
    for (int i = 0; i < TMP_SLOTS; i++) {
        int expected = 0;
        if (atomic_compare_exchange_strong(&tmp_state[i], &expected, 1)) {
            memcpy(tmp_paths[i], path, n + 1);
            atomic_store(&tmp_state[i], 2);
            return i;
        }
    }
    return -1;
}

void ql_tmp_forget(int slot) {
    if (slot < 0 || slot >= TMP_SLOTS) return;
    atomic_store(&tmp_state[slot], 0);
}

// Persistent thread pool behind ql_parallel_for. One pool per process, sized by QLORA_THREADS or
// the online core count. Task i goes to the contiguous range of thread t = the one with
// t*ntasks/parts <= i < (t+1)*ntasks/parts (the caller is thread 0), so the assignment is fixed.
// Idle workers spin briefly, then sleep on a condition variable. Nested calls (from inside a
// task) and calls that find the pool busy with another caller run serially on the calling thread.
#ifndef _GNU_SOURCE
#define _GNU_SOURCE // CPU_COUNT / sched_getaffinity
#endif
#include "kernels_internal.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <unistd.h>

#if QL_X86
#include <immintrin.h>
#define cpu_relax() _mm_pause()
#elif defined(__aarch64__)
#define cpu_relax() __asm__ volatile("yield")
#else
#define cpu_relax() ((void)0)
#endif

#define MAX_THREADS 256
#define WORKER_SPINS 4000   // pause iterations before a worker sleeps (~100 us)
#define CALLER_SPINS 20000  // pause iterations before the caller sleeps waiting for workers
#define YIELD_EVERY 128     // spinning threads yield now and then (helps when oversubscribed)

static inline void spin_pause(int spins) {
    if (spins % YIELD_EVERY == 0) sched_yield();
    else cpu_relax();
}

static _Atomic int g_threads = 0; // 0 = not yet initialised

static _Thread_local int tl_in_task = 0;

static struct {
    pthread_mutex_t call_lock; // owned by the one caller currently using the workers
    pthread_mutex_t mu;        // protects the sleep/wake handshakes
    pthread_cond_t cv_work, cv_done;
    _Atomic uint64_t job;      // (generation << 16) | parts of the current job
    _Atomic int pending;       // participating workers that have not finished yet
    _Atomic int sleepers;      // workers blocked (or about to block) on cv_work
    uint64_t gen;              // last generation issued (under call_lock)
    int nworkers;              // workers created, ids 1..nworkers (under call_lock)
    // the current job, written under call_lock before `job` is published
    ql_task_fn fn;
    void *ctx;
    int64_t ntasks;
} P = {
    .call_lock = PTHREAD_MUTEX_INITIALIZER,
    .mu = PTHREAD_MUTEX_INITIALIZER,
    .cv_work = PTHREAD_COND_INITIALIZER,
    .cv_done = PTHREAD_COND_INITIALIZER,
};

static uint64_t worker_start_job[MAX_THREADS]; // job word current when worker i was created

static int clamp_threads(long n) { return n < 1 ? 1 : (n > MAX_THREADS ? MAX_THREADS : (int)n); }

static int default_threads(void) {
    const char *e = getenv("QLORA_THREADS");
    if (e && *e) {
        char *end;
        long v = strtol(e, &end, 10);
        if (*end == 0 && v > 0) return clamp_threads(v);
    }
    long n = sysconf(_SC_NPROCESSORS_ONLN);
#ifdef CPU_COUNT
    cpu_set_t set;
    if (sched_getaffinity(0, sizeof set, &set) == 0) {
        long a = CPU_COUNT(&set);
        if (a > 0 && (n <= 0 || a < n)) n = a;
    }
#endif
    return clamp_threads(n);
}

int ql_threads(void) {
    int t = atomic_load_explicit(&g_threads, memory_order_relaxed);
    if (t == 0) {
        int expected = 0;
        atomic_compare_exchange_strong(&g_threads, &expected, default_threads());
        t = atomic_load(&g_threads);
    }
    return t;
}

void ql_set_threads(int n) { atomic_store(&g_threads, clamp_threads(n)); }

static void run_range(ql_task_fn fn, void *ctx, int64_t ntasks, int part, int parts) {
    int64_t lo = ntasks * part / parts, hi = ntasks * (part + 1) / parts;
    for (int64_t i = lo; i < hi; i++) fn(ctx, i);
}

static void *worker_main(void *arg) {
    int id = (int)(intptr_t)arg;
    tl_in_task = 1; // anything a worker calls is nested
    uint64_t seen = worker_start_job[id];
    for (;;) {
        uint64_t w;
        int spins = 0;
        while ((w = atomic_load_explicit(&P.job, memory_order_acquire)) == seen) {
            if (++spins < WORKER_SPINS) {
                spin_pause(spins);
                continue;
            }
            pthread_mutex_lock(&P.mu);
            atomic_fetch_add(&P.sleepers, 1);
            while ((w = atomic_load(&P.job)) == seen) pthread_cond_wait(&P.cv_work, &P.mu);
            atomic_fetch_sub(&P.sleepers, 1);
            pthread_mutex_unlock(&P.mu);
            break;
        }
        seen = w;
        int parts = (int)(w & 0xFFFF);
        if (id >= parts) continue; // not part of this job; its fields are not ours to read
        run_range(P.fn, P.ctx, P.ntasks, id, parts);
        if (atomic_fetch_sub_explicit(&P.pending, 1, memory_order_acq_rel) == 1) {
            pthread_mutex_lock(&P.mu);
            pthread_cond_signal(&P.cv_done);
            pthread_mutex_unlock(&P.mu);
        }
    }
    return NULL;
}

// Grows the pool to `want` workers (call_lock held). Returns the number available.
static int ensure_workers(int want) {
    while (P.nworkers < want) {
        int id = P.nworkers + 1;
        worker_start_job[id] = atomic_load(&P.job);
        pthread_attr_t attr;
        pthread_attr_init(&attr);
        pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
        pthread_attr_setstacksize(&attr, 2u << 20);
        pthread_t th;
        int rc = pthread_create(&th, &attr, worker_main, (void *)(intptr_t)id);
        pthread_attr_destroy(&attr);
        if (rc != 0) break;
        P.nworkers = id;
    }
    return P.nworkers;
}

// After fork() only the forking thread exists in the child: forget the workers.
static void atfork_child(void) {
    pthread_mutex_init(&P.call_lock, NULL);
    pthread_mutex_init(&P.mu, NULL);
    pthread_cond_init(&P.cv_work, NULL);
    pthread_cond_init(&P.cv_done, NULL);
    P.nworkers = 0;
    atomic_store(&P.pending, 0);
    atomic_store(&P.sleepers, 0);
    tl_in_task = 0;
}
static pthread_once_t atfork_once = PTHREAD_ONCE_INIT;
static void register_atfork(void) { pthread_atfork(NULL, NULL, atfork_child); }

static void run_serial(int64_t ntasks, ql_task_fn fn, void *ctx) {
    int saved = tl_in_task;
    tl_in_task = 1;
    for (int64_t i = 0; i < ntasks; i++) fn(ctx, i);
    tl_in_task = saved;
}

void ql_parallel_for(int64_t ntasks, ql_task_fn fn, void *ctx) {
    if (ntasks <= 0) return;
    int T = ql_threads();
    if (ntasks == 1 || T == 1) { // inline, no synchronisation
        for (int64_t i = 0; i < ntasks; i++) fn(ctx, i);
        return;
    }
    if (tl_in_task || pthread_mutex_trylock(&P.call_lock) != 0) {
        run_serial(ntasks, fn, ctx);
        return;
    }
    pthread_once(&atfork_once, register_atfork);
    int parts = (int64_t)T < ntasks ? T : (int)ntasks;
    int avail = ensure_workers(parts - 1);
    if (parts > avail + 1) parts = avail + 1;
    if (parts <= 1) {
        pthread_mutex_unlock(&P.call_lock);
        run_serial(ntasks, fn, ctx);
        return;
    }
    P.fn = fn;
    P.ctx = ctx;
    P.ntasks = ntasks;
    atomic_store(&P.pending, parts - 1);
    P.gen++;
    atomic_store(&P.job, (P.gen << 16) | (uint64_t)parts); // seq_cst: pairs with `sleepers`
    if (atomic_load(&P.sleepers) > 0) {
        pthread_mutex_lock(&P.mu);
        pthread_cond_broadcast(&P.cv_work);
        pthread_mutex_unlock(&P.mu);
    }
    tl_in_task = 1;
    run_range(fn, ctx, ntasks, 0, parts);
    tl_in_task = 0;
    int spins = 0;
    while (atomic_load_explicit(&P.pending, memory_order_acquire) > 0) {
        if (++spins < CALLER_SPINS) {
            spin_pause(spins);
            continue;
        }
        pthread_mutex_lock(&P.mu);
        while (atomic_load(&P.pending) > 0) pthread_cond_wait(&P.cv_done, &P.mu);
        pthread_mutex_unlock(&P.mu);
        break;
    }
    pthread_mutex_unlock(&P.call_lock);
}

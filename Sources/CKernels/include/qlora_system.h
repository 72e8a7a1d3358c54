// Process-level helpers the Swift side cannot write safely itself (cleanup.c): temporary files
// that a SIGINT/SIGTERM/SIGHUP must not leave behind. A signal handler may only make
// async-signal-safe calls, so the paths live in a fixed table it can walk without allocating.
#ifndef QLORA_SYSTEM_H
#define QLORA_SYSTEM_H

// Registers a temporary path (copied) to be unlinked if the process is killed by SIGINT, SIGTERM
// or SIGHUP before ql_tmp_forget. Installs the handlers on first use; a handler unlinks every
// registered path, then lets the signal do what it did before (default: end the process with
// that signal; a handler the program had installed is called). Returns a slot >= 0, or -1 when
// the table is full or the path too long (the write still works; only the cleanup is lost).
int ql_tmp_register(const char *path);
// Forgets a slot from ql_tmp_register (the file was renamed into place or removed).
void ql_tmp_forget(int slot);

#endif

// The one door from Lua into Swift. Lua's error functions longjmp, and a longjmp must never
// cross a Swift frame; so Swift functions report failure by status and this C side raises.
#ifndef QLORA_TRAMPOLINE_H
#define QLORA_TRAMPOLINE_H

#include <lua.h>

// The Swift dispatcher: runs bound function number `index`. Returns the number of results it
// pushed (>= 0), or -1 after pushing exactly one error message string.
typedef int (*qlora_dispatch_fn)(lua_State *L, int index);

// Installs the dispatcher (once per process).
void qlora_set_dispatcher(qlora_dispatch_fn fn);

// Pushes a C closure that calls bound function `index` through the trampoline.
void qlora_push_bound(lua_State *L, int index);

// Runs `chunk` (already loaded, on top of the stack) with nargs arguments under a message handler
// that appends a traceback. Returns the lua_pcall status; on error the message is on the stack.
int qlora_pcall_traceback(lua_State *L, int nargs, int nresults);

// Pushes the text of the error value at idx (always a string, never raises): strings and numbers
// as they are; a value with __tostring through it (protected); a table by its "message", "msg",
// "error" or "reason" field, else its string/number/boolean fields as {k = v, ...}; anything
// else as "(error object is a T value)". A yield inside a non-yieldable callback is said plainly.
void qlora_push_error_text(lua_State *L, int idx);

// lua_pcall of a C function that opens the standard libraries (luaL_openlibs may raise on OOM).
int qlora_open_libs(lua_State *L);



// lua_gc is variadic (Swift cannot call it): a full collection, and the memory in use in KiB.
void qlora_gc_collect(lua_State *L);
int qlora_gc_count_kb(lua_State *L);
// LUA_REGISTRYINDEX, which Swift cannot import (a macro expression).
int qlora_registry_index(void);
#endif

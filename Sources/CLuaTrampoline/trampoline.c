// The trampoline: every Lua-callable Swift function runs through qlora_trampoline, which raises
// the Lua error (with the caller's file:line) only after the Swift frame has returned.
#include "qlora_trampoline.h"
#include <lauxlib.h>
#include <lualib.h>
#include <string.h>

static qlora_dispatch_fn g_dispatch = 0;

void qlora_set_dispatcher(qlora_dispatch_fn fn) { g_dispatch = fn; }

static int qlora_trampoline(lua_State *L) {
    int index = (int)lua_tointeger(L, lua_upvalueindex(1));
    if (!g_dispatch) return luaL_error(L, "qlora: no dispatcher installed");
    int n = g_dispatch(L, index);
    if (n >= 0) return n;
    // Error: the message is on top. Append where the script called us, as "(file:line)".
    const char *msg = lua_tostring(L, -1);
    luaL_where(L, 1);
    const char *where = lua_tostring(L, -1);
    size_t wl = where ? strlen(where) : 0;
    if (msg && wl > 2) {
        // luaL_where gives "file:line: "; drop the trailing ": ".
        lua_pushfstring(L, "%s (%s", msg, where);
        lua_remove(L, -2);
        const char *s = lua_tostring(L, -1);
        size_t sl = strlen(s);
        lua_pushlstring(L, s, sl - 2);
        lua_pushliteral(L, ")");
        lua_concat(L, 2);
        lua_remove(L, -2);
    } else {
        lua_pop(L, 1);
    }
    return lua_error(L);
}

void qlora_push_bound(lua_State *L, int index) {
    lua_pushinteger(L, index);
    lua_pushcclosure(L, qlora_trampoline, 1);
}

static int qlora_traceback_handler(lua_State *L) {
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int qlora_pcall_traceback(lua_State *L, int nargs, int nresults) {
    int base = lua_gettop(L) - nargs;
    lua_pushcfunction(L, qlora_traceback_handler);
    lua_insert(L, base);
    int status = lua_pcall(L, nargs, nresults, base);
    lua_remove(L, base);
    return status;
}

static int open_libs(lua_State *L) {
    luaL_openlibs(L);
    return 0;
}

int qlora_open_libs(lua_State *L) {
    lua_pushcfunction(L, open_libs);
    return lua_pcall(L, 0, 0, 0);
}

void qlora_gc_collect(lua_State *L) { lua_gc(L, LUA_GCCOLLECT); }
int qlora_gc_count_kb(lua_State *L) { return lua_gc(L, LUA_GCCOUNT); }
int qlora_registry_index(void) { return LUA_REGISTRYINDEX; }

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

static int describe_error(lua_State *L) {
    int t = lua_type(L, 1);
    if (t == LUA_TSTRING || t == LUA_TNUMBER) {
        const char *s = lua_tostring(L, 1);
        if (strstr(s, "attempt to yield across a C-call boundary") || strstr(s, "attempt to yield from outside a coroutine")) {
            lua_pushfstring(L, "%s (a callback qlora calls may not yield: run coroutines around qlora calls, not through them)", s);
        } else {
            lua_pushstring(L, s);
        }
        return 1;
    }
    if (luaL_callmeta(L, 1, "__tostring")) {
        if (lua_type(L, -1) == LUA_TSTRING) return 1;
        lua_pop(L, 1);
    }
    if (t == LUA_TTABLE) {
        static const char *const fields[] = {"message", "msg", "error", "reason"};
        for (int i = 0; i < 4; i++) {
            int ft = lua_getfield(L, 1, fields[i]);
            if (ft == LUA_TSTRING || ft == LUA_TNUMBER) { lua_tostring(L, -1); return 1; }
            lua_pop(L, 1);
        }
        int n = 0;
        lua_pushnil(L);
        while (lua_next(L, 1) != 0) {
            int vt = lua_type(L, -1);
            if (lua_type(L, -2) == LUA_TSTRING && (vt == LUA_TSTRING || vt == LUA_TNUMBER || vt == LUA_TBOOLEAN)) {
                const char *k = lua_tostring(L, -2);
                const char *v = vt == LUA_TBOOLEAN ? (lua_toboolean(L, -1) ? "true" : "false") : lua_tostring(L, -1);
                lua_pushfstring(L, "%s%s = %s", n == 0 ? "{" : ", ", k, v);
                lua_insert(L, -3);      // below key and value, so lua_next keeps its key on top
                n++;
            }
            lua_pop(L, 1);
            if (n >= 8) { lua_pop(L, 1); break; }  // enough: drop the key and stop
        }
        // The pieces sit below the stack top in order; join them.
        if (n > 0) {
            lua_pushliteral(L, "}");
            lua_concat(L, n + 1);
            return 1;
        }
    }
    lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    return 1;
}

void qlora_push_error_text(lua_State *L, int idx) {
    idx = lua_absindex(L, idx);
    lua_pushcfunction(L, describe_error);
    lua_pushvalue(L, idx);
    if (lua_pcall(L, 1, 1, 0) != 0 || lua_type(L, -1) != LUA_TSTRING) {
        lua_pop(L, 1);
        lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, idx));
    }
}

static int qlora_traceback_handler(lua_State *L) {
    qlora_push_error_text(L, 1);
    const char *msg = lua_tostring(L, -1);
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

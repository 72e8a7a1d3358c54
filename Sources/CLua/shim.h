// Lua 5.4 C API headers, exposed to Swift as the CLua module.
#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

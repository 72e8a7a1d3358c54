// Tensors as Lua userdata (through ObjectUserdata, metatable "qlora.Tensor"), plus the pacing of
// Lua's collector by the bytes tensors hold, which Lua cannot see on its own.

import CLua
import CLuaTrampoline
import Tensor

enum TensorUserdata {
    static let metatableName = "qlora.Tensor"
    /// Bytes of tensor memory allocated between forced collections (grows with live memory).
    static let collectThreshold = 64 << 20

    static func push(_ L: LuaState, _ t: Tensor) {
        if Storage.allocatedSinceReset > collectThreshold + Storage.liveBytes / 4 {
            Storage.allocatedSinceReset = 0
            qlora_gc_collect(L)
        }
        ObjectUserdata.push(L, t, metatableName)
    }

    /// The tensor at index i, or nil when the value is not a live qlora tensor.
    static func tensor(_ L: LuaState, _ i: Int32) -> Tensor? {
        ObjectUserdata.object(L, i, metatableName) as? Tensor
    }

    /// __gc: drops the reference once (a second call, or one on a foreign value, does nothing).
    static func release(_ L: LuaState, _ i: Int32) {
        ObjectUserdata.release(L, i, metatableName)
    }
}

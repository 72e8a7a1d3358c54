// swift-tools-version:6.0
// qlora: a QLoRA fine-tuning runtime whose experiments are Lua scripts.
// Layers (each imports only those above it): CKernels, CLua/COpenBLAS shims,
// CLuaTrampoline, Tensor, Quant, NN, IO, Train, LuaBridge, then the `qlora` executable.
import PackageDescription

let optimize: [CSetting] = [.unsafeFlags(["-O3", "-fno-math-errno"])]

let package = Package(
    name: "qlora",
    products: [
        .executable(name: "qlora", targets: ["qlora"]),
    ],
    targets: [
        // System-library shims: headers and link flags from pkg-config, nothing else.
        .systemLibrary(name: "CLua", path: "Sources/CLua", pkgConfig: "lua5.4",
                       providers: [.apt(["liblua5.4-dev"])]),
        .systemLibrary(name: "COpenBLAS", path: "Sources/COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"])]),
        // Hot loops: a scalar reference per kernel plus AVX2 / AVX-512 versions, thread pool, RNG.
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: optimize),
        // The one C function through which Lua calls Swift (raises Lua errors on Swift's behalf).
        .target(name: "CLuaTrampoline", dependencies: ["CLua"], path: "Sources/CLuaTrampoline"),
        .target(name: "Tensor", dependencies: ["CKernels", "COpenBLAS"], path: "Sources/Tensor"),
        // NF4 / FP4 quantized tensors and the frozen 4-bit linear layer.
        .target(name: "Quant", dependencies: ["Tensor", "CKernels"], path: "Sources/Quant"),
        // Llama-family models, linear layers with LoRA adapters.
        .target(name: "NN", dependencies: ["Tensor", "Quant"], path: "Sources/NN"),
        .target(name: "IO", dependencies: ["CKernels", "Tensor", "Quant", "NN"], path: "Sources/IO"),
        // Optimizers, learning-rate schedules, datasets and the trainer.
        .target(name: "Train", dependencies: ["Tensor", "Quant", "NN", "IO", "CKernels"], path: "Sources/Train"),
        .target(name: "LuaBridge",
                dependencies: ["CLua", "CLuaTrampoline", "Tensor", "Quant", "NN", "IO", "Train"],
                path: "Sources/LuaBridge"),
        .executableTarget(name: "qlora", dependencies: ["LuaBridge", "Tensor", "Quant", "IO", "CKernels", "COpenBLAS"],
                          path: "Sources/qlora"),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "CKernels", "IO"], path: "Tests/TensorTests"),
        .testTarget(name: "IOTests", dependencies: ["IO", "Tensor"], path: "Tests/IOTests",
                    resources: []),
        .testTarget(name: "LuaBridgeTests", dependencies: ["LuaBridge", "Tensor"],
                    path: "Tests/LuaBridgeTests"),
    ],
    swiftLanguageModes: [.v5]
)

// swift-tools-version:6.0
// qlora: a QLoRA fine-tuning runtime whose experiments are Lua scripts.
// Layers (each imports only those above it): CKernels, CLua/COpenBLAS shims,
// CLuaTrampoline, CMPIShim, Tensor, Quant, NN, Jinja, IO, Train, LuaBridge, then the `qlora`
// executable.
import PackageDescription

// The kernels build warning-clean under -Wall -Wextra -Wmissing-prototypes (every function has
// a prototype in a header its definition includes). -Werror only in CI (CI=true) or on request
// (QLORA_WERROR=1): a fresh clone built by a newer clang with new warnings still builds.
let werror = Context.environment["CI"] == "true" || Context.environment["QLORA_WERROR"] == "1"
let kernelFlags: [CSetting] = [
    .unsafeFlags(["-O3", "-fno-math-errno", "-Wall", "-Wextra", "-Wmissing-prototypes"] + (werror ? ["-Werror"] : [])),
]

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
        .target(name: "CKernels", path: "Sources/CKernels", cSettings: kernelFlags),
        // The one C function through which Lua calls Swift (raises Lua errors on Swift's behalf).
        .target(name: "CLuaTrampoline", dependencies: ["CLua"], path: "Sources/CLuaTrampoline"),
        // OpenMPI's libmpi opened at run time (dlopen): qlora builds and runs where MPI is absent.
        .target(name: "CMPIShim", path: "Sources/CMPIShim", linkerSettings: [.linkedLibrary("dl")]),
        .target(name: "Tensor", dependencies: ["CKernels", "COpenBLAS"], path: "Sources/Tensor"),
        // NF4 / FP4 quantized tensors and the frozen 4-bit linear layer.
        .target(name: "Quant", dependencies: ["Tensor", "CKernels"], path: "Sources/Quant"),
        // Llama-family models, linear layers with LoRA adapters.
        .target(name: "NN", dependencies: ["Tensor", "Quant", "COpenBLAS"], path: "Sources/NN"),
        // A Jinja interpreter for chat templates (no dependencies).
        .target(name: "Jinja", path: "Sources/Jinja"),
        .target(name: "IO", dependencies: ["Tensor", "Quant", "NN", "Jinja", "CKernels"], path: "Sources/IO"),
        // Optimizers, learning-rate schedules, datasets and the trainer.
        .target(name: "Train", dependencies: ["Tensor", "Quant", "NN", "Jinja", "IO", "CKernels"], path: "Sources/Train"),
        .target(name: "LuaBridge",
                dependencies: ["CLua", "CLuaTrampoline", "CMPIShim", "Tensor", "Quant", "NN", "Jinja", "IO", "Train"],
                path: "Sources/LuaBridge"),
        .executableTarget(name: "qlora", dependencies: ["LuaBridge", "Tensor", "Quant", "Jinja", "IO", "CKernels", "COpenBLAS"],
                          path: "Sources/qlora"),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "CKernels", "COpenBLAS", "IO"], path: "Tests/TensorTests"),
        .testTarget(name: "IOTests", dependencies: ["IO", "Tensor"], path: "Tests/IOTests",
                    resources: []),
        .testTarget(name: "JinjaTests", dependencies: ["Jinja"], path: "Tests/JinjaTests"),
        .testTarget(name: "LuaBridgeTests", dependencies: ["LuaBridge", "Tensor"],
                    path: "Tests/LuaBridgeTests"),
    ],
    swiftLanguageModes: [.v5]
)

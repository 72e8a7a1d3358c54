// The Tensor layer on its own: a small computation's values and gradients against hand results,
// gradient accumulation, and gradcheck agreeing with backward on a composed function.

import CKernels
import Tensor
import XCTest

final class AutogradTests: XCTestCase {
    override func setUp() { try? Runtime.start() }

    func testLinearLayerGradients() throws {
        // y = sum((x W^T) * 2); dy/dW = 2 * sum over rows of x, dy/dx = 2 * column sums of W
        let x = try Tensor([1, 2, 3, 4, 5, 6], shape: [2, 3])
        let w = try Tensor([1, 0, -1, 2, 1, 0], shape: [2, 3])
        w.requiresGrad = true
        x.requiresGrad = true
        let y = try x.matmul(w.transpose(0, 1)).binary(.mul, scalar: 2).reduceAll(.sum)
        XCTAssertEqual(y.value(at: 0), 2 * ((1 - 3) + (2 + 2) + (4 - 6) + (8 + 5)), accuracy: 1e-5)
        try y.backward()
        let gw = try XCTUnwrap(w.grad), gx = try XCTUnwrap(x.grad)
        XCTAssertEqual((0..<6).map { gw.value(at: $0) }, [10, 14, 18, 10, 14, 18])
        XCTAssertEqual((0..<6).map { gx.value(at: $0) }, [6, 2, -2, 6, 2, -2])
    }

    func testLinearMatchesMatmulWithTransposeAndGradchecks() throws {
        let x = try Tensor.randn([2, 3, 5], seed: 11), w = try Tensor.randn([4, 5], seed: 12)
        let viaLinear = try x.linear(w), viaMatmul = try x.matmul(w.transpose(0, 1))
        XCTAssertEqual(viaLinear.shape, [2, 3, 4])
        for i in 0..<viaLinear.count { XCTAssertEqual(viaLinear.value(at: i), viaMatmul.value(at: i), accuracy: 1e-5) }
        let r = try Tensor.gradcheck([x, w]) { ts in try ts[0].linear(ts[1]).unary(.tanh) }
        XCTAssertTrue(r.ok, r.worst)
        XCTAssertThrowsError(try x.linear(try Tensor.randn([4, 6], seed: 1)))
    }

    func testGradcheckOnComposedFunction() throws {
        let a = try Tensor.randn([3, 4], seed: 1), b = try Tensor.randn([4], seed: 2)
        let r = try Tensor.gradcheck([a, b]) { ts in
            try ts[0].binary(.add, ts[1]).unary(.tanh).softmax(1).binary(.mul, ts[0]).reduceDim(.sum, 1, keepDim: false)
        }
        XCTAssertTrue(r.ok, r.worst)
        XCTAssertEqual(r.checked, 16)
    }

    func testSharedInputAccumulatesOnce() throws {
        let x = try Tensor([3], shape: [1])
        x.requiresGrad = true
        // x*x + x: gradient 2x + 1 = 7
        let y = try x.binary(.mul, x).binary(.add, x).reduceAll(.sum)
        try y.backward()
        XCTAssertEqual(try XCTUnwrap(x.grad).value(at: 0), 7)
    }

    func testDeepGraphDoesNotOverflowTheStack() throws {
        var t = try Tensor([1], shape: [1])
        t.requiresGrad = true
        let leaf = t
        for _ in 0..<20_000 { t = try t.binary(.mul, scalar: 1) }
        try t.reduceAll(.sum).backward()
        XCTAssertEqual(try XCTUnwrap(leaf.grad).value(at: 0), 1)
    }

    func testGraphsAreFreedOnceUnreferenced() throws {
        // Every op that saves tensors for its backward, run on tensors that need gradients; when
        // the last reference to the graph goes, all its memory must go with it (no cycles).
        let before = Storage.liveBytes
        do {
            let x = try Tensor.randn([64, 64], seed: 1)
            x.requiresGrad = true
            var y = try x.binary(.mul, x).binary(.div, x.unary(.exp).binary(.add, scalar: 1))
            y = try y.unary(.tanh).unary(.sigmoid).softmax(1).logSoftmax(0)
            y = try y.matmul(x).pow(2).clamp(-1, 1).reduceDim(.max, 1, keepDim: true)
            try y.reduceAll(.sum).backward()
            XCTAssertNotNil(x.grad)
        }
        XCTAssertEqual(Storage.liveBytes, before, "a graph (or its gradients) outlived its last reference")
    }
}

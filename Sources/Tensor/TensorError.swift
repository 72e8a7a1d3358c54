// The error every Tensor-layer operation throws: a message a script can read.

public struct TensorError: Error, CustomStringConvertible {
    public let message: String
    public init(_ message: String) { self.message = message }
    public var description: String { message }
}

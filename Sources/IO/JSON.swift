// JSON values: `JSONValue` (the tree a parse returns and the writer takes), `JSONObject` (an
// object that keeps its key order and looks keys up by exact UTF-8 bytes), accessor helpers and
// literal conformances. The parser lives in JSONParser.swift, the writer in JSONWriter.swift.

#if canImport(Glibc)
import Glibc
#elseif canImport(Musl)
import Musl
#elseif canImport(Darwin)
import Darwin
#endif

/// A JSON value (RFC 8259).
///
/// Numbers: an integer literal (no fraction, no exponent) that fits in Int64 parses as `.int`;
/// every other number (with `.` or `e`, or an integer too large for Int64) parses as `.double`.
///
/// Equality: objects compare as unordered maps (same keys, equal values; key order ignored);
/// `.int(1)` and `.double(1)` are different values; `.double(.nan)` is not equal to itself.
public enum JSONValue: Sendable, Equatable {
    case null
    case bool(Bool)
    case int(Int64)
    case double(Double)
    case string(String)
    case array([JSONValue])
    case object(JSONObject)
}

// MARK: - Accessors

extension JSONValue {
    /// The string, if this is `.string`.
    public var stringValue: String? {
        if case .string(let s) = self { return s }
        return nil
    }

    /// The integer, if this is `.int`, or a `.double` holding an exact integer that fits in Int.
    public var intValue: Int? {
        switch self {
        case .int(let i): return Int(exactly: i)
        case .double(let d): return Int(exactly: d)
        default: return nil
        }
    }

    /// Like `intValue`, as Int64.
    public var int64Value: Int64? {
        switch self {
        case .int(let i): return i
        case .double(let d): return Int64(exactly: d)
        default: return nil
        }
    }

    /// The number as a Double, if this is `.double` or `.int` (an Int64 beyond 2^53 is rounded).
    public var doubleValue: Double? {
        switch self {
        case .double(let d): return d
        case .int(let i): return Double(i)
        default: return nil
        }
    }

    /// The Bool, if this is `.bool`.
    public var boolValue: Bool? {
        if case .bool(let b) = self { return b }
        return nil
    }

    /// The elements, if this is `.array`.
    public var arrayValue: [JSONValue]? {
        if case .array(let a) = self { return a }
        return nil
    }

    /// The object, if this is `.object`.
    public var objectValue: JSONObject? {
        if case .object(let o) = self { return o }
        return nil
    }

    /// True for `.null`.
    public var isNull: Bool {
        if case .null = self { return true }
        return false
    }

    /// `self[key]` on an object: the member's value, or nil if this is not an object or has no
    /// such key.
    public subscript(key: String) -> JSONValue? {
        if case .object(let o) = self { return o[key] }
        return nil
    }

    /// `self[i]` on an array: the element, or nil if this is not an array or `i` is out of range.
    public subscript(index: Int) -> JSONValue? {
        if case .array(let a) = self, index >= 0, index < a.count { return a[index] }
        return nil
    }
}

// MARK: - Literals

extension JSONValue: ExpressibleByNilLiteral, ExpressibleByBooleanLiteral,
    ExpressibleByIntegerLiteral, ExpressibleByFloatLiteral, ExpressibleByStringLiteral,
    ExpressibleByArrayLiteral, ExpressibleByDictionaryLiteral
{
    public init(nilLiteral: ()) { self = .null }
    public init(booleanLiteral value: Bool) { self = .bool(value) }
    public init(integerLiteral value: Int64) { self = .int(value) }
    public init(floatLiteral value: Double) { self = .double(value) }
    public init(stringLiteral value: String) { self = .string(value) }
    public init(arrayLiteral elements: JSONValue...) { self = .array(elements) }
    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self = .object(JSONObject(elements))
    }
}

extension JSONValue: CustomStringConvertible {
    /// Compact JSON text (see `serialized`).
    public var description: String { serialized() }
}

// MARK: - JSONObject

/// A JSON object that keeps its members in order.
///
/// Keys are compared by their exact UTF-8 bytes (not by Swift's canonical-equivalence String
/// equality), so "é" and "e\u{301}" are two different keys, as JSON (and a tokenizer
/// vocabulary) requires. Keys are unique: `init` and the subscript setter keep the position of
/// the first occurrence and the value of the last one.
public struct JSONObject: Sendable, Equatable, Sequence, ExpressibleByDictionaryLiteral {
    public typealias Element = (key: String, value: JSONValue)

    /// The members in order.
    public private(set) var entries: [Element]
    /// Key -> position, built once the object has more than `indexThreshold` members.
    private var index: [UTF8Key: Int]?

    static let indexThreshold = 8

    /// An empty object.
    public init() {
        entries = []
        index = nil
    }

    /// An object from pairs in order; a repeated key keeps its first position and last value.
    public init(_ pairs: [(String, JSONValue)]) {
        self.init()
        entries.reserveCapacity(pairs.count)
        for (k, v) in pairs { self[k] = v }
    }

    public init(dictionaryLiteral elements: (String, JSONValue)...) {
        self.init(elements)
    }

    /// Trusted construction by the parser: keys already unique; `index` (if given) maps every key
    /// to its position.
    init(uniqueEntries: [Element], index: [UTF8Key: Int]?) {
        self.entries = uniqueEntries
        if let index, uniqueEntries.count > JSONObject.indexThreshold {
            self.index = index
        } else if uniqueEntries.count > JSONObject.indexThreshold {
            var idx = [UTF8Key: Int](minimumCapacity: uniqueEntries.count)
            for (i, e) in uniqueEntries.enumerated() { idx[UTF8Key(e.key)] = i }
            self.index = idx
        } else {
            self.index = nil
        }
    }

    /// Number of members.
    public var count: Int { entries.count }
    public var isEmpty: Bool { entries.isEmpty }
    /// The keys in order.
    public var keys: [String] { entries.map { $0.key } }
    /// The values in order.
    public var values: [JSONValue] { entries.map { $0.value } }

    public func makeIterator() -> IndexingIterator<[Element]> { entries.makeIterator() }

    /// Position of `key` among the members, if present.
    public func position(of key: String) -> Int? {
        if let index { return index[UTF8Key(key)] }
        for i in entries.indices where utf8Equal(entries[i].key, key) { return i }
        return nil
    }

    /// The value for `key`; setting replaces in place or appends; setting nil removes.
    public subscript(key: String) -> JSONValue? {
        get {
            guard let i = position(of: key) else { return nil }
            return entries[i].value
        }
        set {
            if let i = position(of: key) {
                if let newValue {
                    entries[i].value = newValue
                } else {
                    entries.remove(at: i)
                    rebuildIndex()
                }
            } else if let newValue {
                entries.append((key: key, value: newValue))
                if index != nil {
                    index?[UTF8Key(key)] = entries.count - 1
                } else if entries.count > JSONObject.indexThreshold {
                    rebuildIndex()
                }
            }
        }
    }

    private mutating func rebuildIndex() {
        guard entries.count > JSONObject.indexThreshold else {
            index = nil
            return
        }
        var idx = [UTF8Key: Int](minimumCapacity: entries.count)
        for (i, e) in entries.enumerated() { idx[UTF8Key(e.key)] = i }
        index = idx
    }

    /// Unordered comparison: same keys (by bytes) with equal values.
    public static func == (a: JSONObject, b: JSONObject) -> Bool {
        guard a.count == b.count else { return false }
        for (k, v) in a.entries {
            guard let w = b[k], w == v else { return false }
        }
        return true
    }
}

// MARK: - Byte-exact string keys

/// True if the two strings have identical UTF-8 bytes (Swift's `==` uses canonical equivalence).
@inline(__always)
func utf8Equal(_ a: String, _ b: String) -> Bool {
    let fast: Bool?? = a.utf8.withContiguousStorageIfAvailable { pa in
        b.utf8.withContiguousStorageIfAvailable { pb in
            pa.count == pb.count
                && (pa.count == 0 || memcmp(pa.baseAddress!, pb.baseAddress!, pa.count) == 0)
        }
    }
    if let f = fast, let r = f { return r }
    return a.utf8.elementsEqual(b.utf8)
}

/// A dictionary key that hashes and compares a String by its UTF-8 bytes.
struct UTF8Key: Hashable, Sendable {
    let string: String
    init(_ string: String) { self.string = string }

    static func == (a: UTF8Key, b: UTF8Key) -> Bool { utf8Equal(a.string, b.string) }

    func hash(into hasher: inout Hasher) {
        let done: Void? = string.utf8.withContiguousStorageIfAvailable { p in
            hasher.combine(bytes: UnsafeRawBufferPointer(p))
        }
        if done == nil {
            Array(string.utf8).withUnsafeBytes { hasher.combine(bytes: $0) }
        }
    }
}

// Untrusted templates: deep nesting, runaway recursion, huge loops and huge output end with a
// JinjaError (never a crash, a hang or a stack overflow), and errors name the line and column.

import Foundation
import XCTest
@testable import Jinja

final class HostileTemplateTests: XCTestCase {
    func error(_ src: String, _ ctx: [String: Value] = [:], limits: JinjaLimits = JinjaLimits()) -> JinjaError? {
        do {
            _ = try Template(src, limits: limits).render(ctx)
            return nil
        } catch let e as JinjaError {
            return e
        } catch {
            XCTFail("not a JinjaError: \(error)")
            return nil
        }
    }

    func testDeepExpressionNesting() {
        let src = "{{ " + String(repeating: "(", count: 5000) + "1" + String(repeating: ")", count: 5000) + " }}"
        let e = error(src)
        XCTAssertNotNil(e)
        XCTAssertTrue(e?.message.contains("nesting") ?? false, "\(String(describing: e))")
        XCTAssertEqual(e?.line, 1)
        let unary = "{{ " + String(repeating: "not ", count: 5000) + "1 }}"
        XCTAssertNotNil(error(unary))
        let lists = "{{ " + String(repeating: "[", count: 3000) + String(repeating: "]", count: 3000) + " }}"
        XCTAssertNotNil(error(lists))
    }

    func testDeepStatementNesting() {
        let src = String(repeating: "{% if true %}", count: 3000) + "x" + String(repeating: "{% endif %}", count: 3000)
        XCTAssertTrue(error(src)?.message.contains("nesting") ?? false)
        // Moderate nesting is fine.
        let ok = String(repeating: "{% if true %}", count: 50) + "x" + String(repeating: "{% endif %}", count: 50)
        XCTAssertEqual(try Template(ok).render([:]), "x")
    }

    func testRunawayRecursion() {
        let src = "{% macro f(n) %}{{ f(n + 1) }}{% endmacro %}\n{{ f(0) }}"
        let e = error(src)
        XCTAssertTrue(e?.message.contains("macro calls nested deeper") ?? false, "\(String(describing: e))")
        XCTAssertEqual(e?.line, 1)
    }

    func testHugeLoopsStopAtTheStepLimit() {
        var limits = JinjaLimits()
        limits.maxSteps = 50_000
        let src = "{% for i in range(100000) %}{% for j in range(100000) %}{% endfor %}{% endfor %}"
        let start = Date()
        XCTAssertTrue(error(src, limits: limits)?.message.contains("steps") ?? false)
        XCTAssertLessThan(Date().timeIntervalSince(start), 10)
        XCTAssertTrue(error("{{ range(1000000)|length }}")?.message.contains("range too big") ?? false)
    }

    func testHugeOutputStopsAtTheOutputLimit() {
        var limits = JinjaLimits()
        limits.maxOutput = 1 << 20
        XCTAssertTrue(error("{% for i in range(1000) %}{{ 'x' * 10000 }}{% endfor %}", limits: limits)?.message.contains("output") ?? false)
        XCTAssertNotNil(error("{{ 'x' * 100000000000 }}"))
        XCTAssertNotNil(error("{{ [1] * 100000000000 }}"))
        XCTAssertNotNil(error("{% set ns = namespace(s='xx') %}{% for i in range(100) %}{% set ns.s = ns.s ~ ns.s %}{% endfor %}"))
        XCTAssertNotNil(error("{{ 9223372036854775807 + 1 }}"))
        XCTAssertNotNil(error("{{ 2 ** 100 }}"))
        XCTAssertNotNil(error("{{ 1 // 0 }}"))
    }

    func testErrorsNameLineAndColumn() {
        let e = error("first line\n  {{ messages[0].content.strip() }}\n", ["messages": .list([])])
        XCTAssertEqual(e?.line, 2)
        XCTAssertEqual(e?.column, 17)  // the ".content" taken from Undefined
        XCTAssertTrue(e?.description.hasPrefix("line 2, column ") ?? false)
        let s = error("ok\n{% for x in %}")
        XCTAssertEqual(s?.line, 2)
        let r = error("a\nb\n{{ raise_exception('bad roles') }}")
        XCTAssertEqual(r?.message, "bad roles")
        XCTAssertEqual(r?.raised, true)
        XCTAssertEqual(r?.line, 3)
        XCTAssertNotNil(error("{% if x %}"))
        XCTAssertNotNil(error("{{ 'unterminated }}"))
        XCTAssertNotNil(error("{# unterminated comment"))
        XCTAssertNotNil(error("{% include 'other.jinja' %}"))
        XCTAssertNotNil(error("{{ x | }}"))
        XCTAssertNotNil(error("{{ ) }}"))
        XCTAssertNotNil(error("{% set ns = namespace(_secret=1) %}"))
    }

    func testGenerationRanges() throws {
        let t = try Template("{% for m in messages %}<{{ m.role }}>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}!{% endgeneration %}{% else %}{{ m.content }}{% endif %}{% endfor %}")
        XCTAssertTrue(t.hasGenerationBlocks)
        let msgs: Value = .list([.dict(OrderedDict([("role", .string("user")), ("content", .string("héllo"))])),
                                 .dict(OrderedDict([("role", .string("assistant")), ("content", .string("ünï"))]))])
        let (text, ranges) = try t.renderTracked(["messages": msgs])
        XCTAssertEqual(text, "<user>héllo<assistant>ünï!")
        XCTAssertEqual(ranges.count, 1)
        XCTAssertEqual(String(text[ranges[0]]), "ünï!")
        XCTAssertFalse(try Template("{{ 1 }}").hasGenerationBlocks)
    }

    func testStrftimeUsesTheGivenClock() throws {
        let d = try XCTUnwrap(Template.parseDate("2025-01-02"))
        XCTAssertEqual(try Template("{{ strftime_now('%d %b %Y') }}").render([:], now: d), "02 Jan 2025")
    }
}

final class HostileValueTests: XCTestCase {
    func render(_ src: String, _ limits: JinjaLimits = JinjaLimits()) throws -> String { try Template(src, limits: limits).render([:]) }

    func testBuildingHugeValuesIsBounded() {
        var limits = JinjaLimits()
        limits.maxSteps = 2_000_000
        // A list doubling in a loop, ranges built again and again, empty repetitions.
        XCTAssertThrowsError(try render("{% set ns = namespace(l=[1]) %}{% for i in range(100) %}{% set ns.l = ns.l + ns.l %}{% endfor %}", limits))
        XCTAssertThrowsError(try render("{% for i in range(100000) %}{% set x = range(100000) %}{% endfor %}", limits))
        XCTAssertEqual(try render("[{{ '' * 100000000000 }}][{{ [] * 100000000000 }}]"), "[][[]]")
        XCTAssertThrowsError(try render("{{ range(-9223372036854775807, 9223372036854775807) }}"))
        XCTAssertThrowsError(try render("{{ range(9223372036854775807, -9223372036854775807, -1) }}"))
        XCTAssertEqual(try render("{{ range(9223372036854775806, 9223372036854775807)|length }}"), "1")
        XCTAssertThrowsError(try render("{{ '%d' % 1e300 }}"))
        XCTAssertEqual(try render("{{ 'x'[9223372036854775807] }}|{{ [1][-9223372036854775807] }}|{{ 'abc'[-9223372036854775807:9223372036854775807] }}"), "||abc")
        XCTAssertEqual(try render("{{ [1,2,3][::-9223372036854775807] }}"), "[3]")
        XCTAssertThrowsError(try render("{{ 1e308|int }}x{{ (1e308 * 10)|round }}{{ -9223372036854775807 - 1 }}{{ (-9223372036854775807 - 1) // -1 }}"))
    }
}

/// Real templates cut, repeated and spliced at random (a fixed seed): every result parses and
/// renders, or ends with a JinjaError -- no crash, hang or other error.
final class MutatedTemplateTests: XCTestCase {
    func testMutatedRealTemplatesNeverCrash() throws {
        let files = try FileManager.default.contentsOfDirectory(atPath: GoldenRenderTests.dir.path).filter { $0.hasSuffix(".jinja") }.sorted()
        XCTAssertGreaterThanOrEqual(files.count, 16)
        var rng: UInt64 = 0x9E3779B97F4A7C15
        func next(_ n: Int) -> Int {
            rng = rng &* 6364136223846793005 &+ 1442695040888963407
            return Int((rng >> 33) % UInt64(max(1, n)))
        }
        let pieces = ["{%", "%}", "{{", "}}", "{#", "#}", "(", ")", "[", "]", "{", "}", "|", "'", "\"", "-", "+", "~", "**", ".",
                      "for x in messages", "endfor", "if", "endif", "else", "macro m(a)", "endmacro", "m(m)", "loop.", "set ns.x = ",
                      "namespace(", "raise_exception(", "range(99999)", "\\", "\n", " is ", " not ", "tojson(indent=", ":-1]"]
        let msg = Value.dict(OrderedDict([("role", .string("user")), ("content", .string("hi {{ x }}"))]))
        let ctx: [String: Value] = ["messages": .list([msg, msg]), "tools": .none, "add_generation_prompt": .bool(true),
                                    "bos_token": .string("<s>"), "eos_token": .string("</s>")]
        var limits = JinjaLimits()
        limits.maxSteps = 300_000
        limits.maxOutput = 1 << 20
        var parsed = 0, rendered = 0, failed = 0
        for f in files {
            let src = Array(try String(contentsOf: GoldenRenderTests.dir.appendingPathComponent(f), encoding: .utf8).unicodeScalars)
            for _ in 0..<(Int(ProcessInfo.processInfo.environment["QLORA_FUZZ_ROUNDS"] ?? "") ?? 50) {
                var u = src
                for _ in 0...next(3) {
                    let a = next(u.count + 1), b = min(u.count, a + next(40))
                    switch next(3) {
                    case 0: u.removeSubrange(a..<b)
                    case 1: u.insert(contentsOf: u[a..<b], at: next(u.count + 1))
                    default: u.insert(contentsOf: pieces[next(pieces.count)].unicodeScalars, at: a)
                    }
                }
                do {
                    let t = try Template(Python.string(u), limits: limits)
                    parsed += 1
                    _ = try t.render(ctx, now: GoldenRenderTests.fixedNow)
                    rendered += 1
                } catch is JinjaError {
                    failed += 1
                } catch {
                    XCTFail("\(f): not a JinjaError: \(error)")
                }
            }
        }
        print("mutated templates: \(parsed) parsed, \(rendered) rendered, \(failed) JinjaErrors")
        XCTAssertGreaterThan(rendered, 0)
        XCTAssertGreaterThan(failed, 0)
    }
}

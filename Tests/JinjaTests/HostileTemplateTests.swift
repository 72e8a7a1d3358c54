// Untrusted templates: deep nesting, runaway recursion, huge loops and huge output end with a
// JinjaError (never a crash, a hang or a stack overflow), and errors name the line and column.

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

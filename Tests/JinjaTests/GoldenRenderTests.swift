// Renders the real chat templates in Tests/fixtures/chat_templates over the golden conversations
// and the feature snippets, and compares byte for byte with what transformers' renderer wrote
// (scripts/fixtures/make_chat_template_goldens.py); where transformers failed, so must we.

import Foundation
import XCTest
@testable import Jinja

final class GoldenRenderTests: XCTestCase {
    static let dir = URL(fileURLWithPath: #filePath).deletingLastPathComponent()
        .appendingPathComponent("../fixtures/chat_templates").standardized
    static let fixedNow = Template.parseDate("2024-07-26T12:00:00")!

    func load(_ name: String) throws -> Value {
        try OrderedJSON.parse(try Data(contentsOf: GoldenRenderTests.dir.appendingPathComponent(name)))
    }

    func testRealTemplatesMatchTransformers() throws {
        let golden = try load("golden.json")
        let cases = try XCTUnwrap(golden["cases"]?.listValue)
        XCTAssertGreaterThanOrEqual(cases.count, 60)
        var templates: [String: Template] = [:]
        var families = Set<String>()
        var matched = 0, failedAlike = 0
        for c in cases {
            let name = try XCTUnwrap(c["template"]?.stringValue)
            let caseName = try XCTUnwrap(c["case"]?.stringValue)
            families.insert(name)
            if templates[name] == nil {
                let src = try String(contentsOf: GoldenRenderTests.dir.appendingPathComponent(name + ".jinja"), encoding: .utf8)
                templates[name] = try Template(src)
            }
            // Through renderChat, as apply_chat_template builds the context (tools and documents
            // always defined, none when absent).
            var o = ChatRenderOptions()
            o.addGenerationPrompt = c["add_generation_prompt"]?.truthy ?? false
            o.tools = c["tools"]
            o.now = GoldenRenderTests.fixedNow
            if let b = c["bos_token"], !b.isNone { o.variables["bos_token"] = b }
            if let e = c["eos_token"], !e.isNone { o.variables["eos_token"] = e }
            let messages = c["messages"]?.listValue ?? []
            let label = "\(name) / \(caseName)"
            if let want = c["output"]?.stringValue {
                do {
                    let got = try templates[name]!.renderChat(messages, o)
                    XCTAssertEqual(got, want, label)
                    if got == want { matched += 1 } else { firstDifference(got, want, label) }
                } catch {
                    XCTFail("\(label): \(error)")
                }
            } else {
                let want = try XCTUnwrap(c["error"]?.stringValue)
                XCTAssertThrowsError(try templates[name]!.renderChat(messages, o), label) { e in
                    if want.hasPrefix("TemplateError: ") {
                        XCTAssertEqual((e as? JinjaError)?.message, String(want.dropFirst("TemplateError: ".count)), label)
                    }
                }
                failedAlike += 1
            }
        }
        XCTAssertGreaterThanOrEqual(families.count, 10)
        print("chat templates: \(families.count) templates, \(matched) renderings identical, \(failedAlike) failing as transformers does")
    }

    func testSnippetsMatchJinja() throws {
        let golden = try load("snippets.json")
        for c in try XCTUnwrap(golden["cases"]?.listValue) {
            let name = try XCTUnwrap(c["name"]?.stringValue)
            let src = try XCTUnwrap(c["template"]?.stringValue)
            var ctx: [String: Value] = [:]
            if case .dict(let d)? = c["variables"] { for (k, v) in d.pairs { ctx[k] = v } }
            if let want = c["output"]?.stringValue {
                do {
                    let got = try Template(src).render(ctx, now: GoldenRenderTests.fixedNow)
                    XCTAssertEqual(got, want, name)
                    if got != want { firstDifference(got, want, name) }
                } catch {
                    XCTFail("\(name): \(error)")
                }
            } else {
                XCTAssertThrowsError(try Template(src).render(ctx, now: GoldenRenderTests.fixedNow), name)
            }
        }
    }

    func firstDifference(_ got: String, _ want: String, _ label: String) {
        let g = Array(got.unicodeScalars), w = Array(want.unicodeScalars)
        var i = 0
        while i < min(g.count, w.count), g[i] == w[i] { i += 1 }
        let ctx = { (a: [Unicode.Scalar]) in Python.string(a[max(0, i - 40)..<min(a.count, i + 40)]) }
        print("\(label): first difference at \(i):\n  got:  \(ctx(g).debugDescription)\n  want: \(ctx(w).debugDescription)")
    }
}

// The assistant's part of a rendered conversation, found by rendering prefixes, on the real
// templates: each span starts with the assistant's words and holds nothing of the user's.

import Foundation
import XCTest
@testable import Jinja

final class AssistantSpanTests: XCTestCase {
    func message(_ role: String, _ content: String) -> Value {
        .dict(OrderedDict([("role", .string(role)), ("content", .string(content))]))
    }

    func testPrefixSpansOnRealTemplates() throws {
        let conv = [message("user", "Translate 'cat' to French."), message("assistant", "chat"),
                    message("user", "And 'dog'?"), message("assistant", "chien")]
        var o = ChatRenderOptions()
        o.variables = ["bos_token": .string("<s>"), "eos_token": .string("</s>")]
        o.now = Template.parseDate("2024-07-26")
        o.endOfTurnMarkers = ["<|im_end|>", "<｜end▁of▁sentence｜>", "<|end|>", "<|return|>", "<turn|>", "<|END_OF_TURN_TOKEN|>", "</s>"]
        // Every family but the Hermes tool_use template (which needs tools).
        let names = ["HuggingFaceTB-SmolLM2-135M-Instruct", "meta-llama-Llama-3.1-8B-Instruct", "meta-llama-Llama-3.2-3B-Instruct",
                     "Qwen-Qwen2.5-7B-Instruct", "mistralai-Mistral-Nemo-Instruct-2407", "google-gemma-2-2b-it",
                     "microsoft-Phi-3.5-mini-instruct", "ibm-granite-granite-3.3-2B-Instruct", "Qwen-Qwen3-0.6B",
                     "HuggingFaceTB-SmolLM3-3B", "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B", "Mistral-Small-3.2-24B-Instruct-2506",
                     "google-gemma-4-31B-it", "openai-gpt-oss-120b", "CohereForAI-c4ai-command-r7b-12-2024-tool_use"]
        for name in names {
            let src = try String(contentsOf: GoldenRenderTests.dir.appendingPathComponent(name + ".jinja"), encoding: .utf8)
            let t = try Template(src)
            let (text, spans) = try t.assistantSpans(conv, o)
            XCTAssertEqual(text, try t.renderChat(conv, o), name)
            XCTAssertEqual(spans.count, 2, name)
            guard spans.count == 2 else { continue }
            let a = String(text[spans[0]]), b = String(text[spans[1]])
            print("\(name): \(a.debugDescription) \(b.debugDescription)")
            XCTAssertTrue(a.contains("chat") && b.contains("chien"), "\(name): \(a.debugDescription) \(b.debugDescription)")
            XCTAssertFalse(a.contains("dog") || b.contains("dog") || a.contains("Translate") || a.contains("chien"), name)
            XCTAssertTrue(spans[0].upperBound <= spans[1].lowerBound, name)
        }
    }

    func testGenerationBlocksGiveTheSpans() throws {
        let t = try Template("{% for m in messages %}{% if m.role == 'assistant' %}A: {% generation %}{{ m.content }}<end>{% endgeneration %}\n{% else %}U: {{ m.content }}\n{% endif %}{% endfor %}")
        let (text, spans) = try t.assistantSpans([message("user", "hi"), message("assistant", "yo")])
        XCTAssertEqual(text, "U: hi\nA: yo<end>")  // trim_blocks drops the newline after endgeneration
        XCTAssertEqual(spans.map { String(text[$0]) }, ["yo<end>"])
    }

    func testNoneValuedKeysAreDropped() throws {
        let t = try Template("{{ messages[0].tool_calls is defined }}")
        let m = Value.dict(OrderedDict([("role", .string("assistant")), ("content", .string("x")), ("tool_calls", .none)]))
        XCTAssertEqual(try t.renderChat([m]), "False")
    }
}

final class ChatContextTests: XCTestCase {
    func testToolsAndDocumentsAreAlwaysDefined() throws {
        let t = try Template("{{ tools is defined }} {{ tools is none }} {{ documents is defined }} {{ add_generation_prompt }}")
        XCTAssertEqual(try t.renderChat([]), "True True True False")
        var o = ChatRenderOptions()
        o.tools = .list([])
        o.addGenerationPrompt = true
        XCTAssertEqual(try t.renderChat([], o), "True False True True")
    }
}

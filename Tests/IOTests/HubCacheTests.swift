// Repo ids resolved offline in a Hugging Face cache laid out as huggingface_hub lays it out
// (refs/<revision> holding a commit hash, snapshots/<hash>/ with symlinks into blobs/), the cache
// root's precedence, revisions by branch, tag and hash, and the errors for what is absent.

@testable import IO
import XCTest

final class HubCacheTests: XCTestCase {
    private var root = ""
    private let main = String(repeating: "a1", count: 20), v1 = String(repeating: "b2", count: 20)

    override func setUpWithError() throws {
        root = NSTemporaryDirectory() + "hubcache-\(UUID().uuidString)"
        let repo = root + "/models--HuggingFaceTB--SmolLM2-135M-Instruct"
        let fm = FileManager.default
        for d in ["blobs", "refs", "snapshots/\(main)", "snapshots/\(v1)"] {
            try fm.createDirectory(atPath: repo + "/" + d, withIntermediateDirectories: true)
        }
        try "{\"model_type\": \"llama\"}".write(toFile: repo + "/blobs/0123abcd", atomically: true, encoding: .utf8)
        try fm.createSymbolicLink(atPath: repo + "/snapshots/\(main)/config.json", withDestinationPath: "../../blobs/0123abcd")
        try (main + "\n").write(toFile: repo + "/refs/main", atomically: true, encoding: .utf8)
        try v1.write(toFile: repo + "/refs/v1.0", atomically: true, encoding: .utf8)
    }

    override func tearDownWithError() throws { try? FileManager.default.removeItem(atPath: root) }

    func testRootPrecedence() {
        XCTAssertEqual(HubCache.root(["HF_HUB_CACHE": "/c", "HF_HOME": "/h", "HOME": "/u"]), "/c")
        XCTAssertEqual(HubCache.root(["HF_HOME": "/h", "HOME": "/u"]), "/h/hub")
        XCTAssertEqual(HubCache.root(["HOME": "/u"]), "/u/.cache/huggingface/hub")
    }

    func testRepoIdsAndPaths() {
        XCTAssertTrue(HubCache.isRepoId("HuggingFaceTB/SmolLM2-135M-Instruct"))
        XCTAssertTrue(HubCache.isRepoId("org/name@v1.0"))
        for s in ["/abs/path", "./rel/dir", "a/b/c", "../x", "org/..", "org/name@", "org/.hidden", "name", "org/na me"] {
            XCTAssertFalse(HubCache.isRepoId(s), s)
        }
    }

    func testResolvesBranchTagAndHash() throws {
        let env = ["HF_HUB_CACHE": root]
        let snap = root + "/models--HuggingFaceTB--SmolLM2-135M-Instruct/snapshots/"
        XCTAssertEqual(try HubCache.resolve("HuggingFaceTB/SmolLM2-135M-Instruct", env), snap + main)
        XCTAssertEqual(try HubCache.resolve("HuggingFaceTB/SmolLM2-135M-Instruct@v1.0", env), snap + v1)
        XCTAssertEqual(try HubCache.resolve("HuggingFaceTB/SmolLM2-135M-Instruct@\(v1)", env), snap + v1)
        let config = try String(contentsOfFile: snap + main + "/config.json", encoding: .utf8)
        XCTAssertTrue(config.contains("llama"), "the snapshot's symlink reaches its blob")
        XCTAssertEqual(try HubCache.resolve("/no/such/path", env), "/no/such/path", "paths pass through")
        XCTAssertThrowsError(try HubCache.resolve("HuggingFaceTB/SmolLM2-135M-Instruct", ["HF_HOME": root + "/x"]),
                             "another root does not hold it")
    }

    func testAbsentModelsSayWhereTheyWereLookedFor() {
        let env = ["HF_HUB_CACHE": root]
        for (id, why) in [("org/absent", "no such model folder"), ("HuggingFaceTB/SmolLM2-135M-Instruct@dev", "no refs/dev"),
                          ("HuggingFaceTB/SmolLM2-135M-Instruct@\(String(repeating: "c3", count: 20))", "no snapshots/")] {
            XCTAssertThrowsError(try HubCache.resolve(id, env), id) { e in
                let text = "\(e)"
                XCTAssertTrue(text.contains(why), text)
                XCTAssertTrue(text.contains(root), "names the folder it looked in: \(text)")
                XCTAssertTrue(text.contains("downloads nothing"), text)
            }
        }
    }
}
